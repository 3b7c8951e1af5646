"""Live reload of the coordinator and probe workers: SIGHUP, and ``healthbus reload``.

A :class:`Reloader` re-reads the process's configuration file and hands it to the
component (``apply``). An invalid file is refused with the same error as at start-up
(naming file and field) and the running configuration keeps working. Reloads run one at a
time.

``healthbus reload`` asks the active coordinator (request/reply on
``<prefix>.ctl.reload``); once it has reloaded, it publishes ``<prefix>.worker.reload``
(core NATS, a ReloadNotice naming the sender) so that standby coordinators and every probe worker re-read
their own files too. Only ``[[targets]]`` are reloaded: the other sections need a restart.
Anything else on the reload subject (a malformed notice, a JetStream delivery) is dropped,
counted in :attr:`Reloader.dropped` and logged once per reason per interval, never per
message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bus import RateLimitedLog
from healthbus.protocol import (
    Config,
    ConfigError,
    ProtocolError,
    ReloadNotice,
    Subjects,
    decode_reload_notice,
    encode,
    load_config,
)

__all__ = ["RELOAD_TOKEN", "Reloader"]

log = logging.getLogger("healthbus.reload")

#: ``<prefix>.worker.reload``: the broadcast that makes every process re-read its file.
RELOAD_TOKEN = "reload"

#: What a component does with a re-read configuration: a summary, or ValueError (nothing changed).
Apply = Callable[[Config], Awaitable[str]]


class Reloader:
    """Re-reads ``path`` and applies it; see the module docstring."""

    def __init__(self, path: str, apply: Apply, *, sender: str) -> None:
        self.path = path
        self.apply = apply
        self.sender = sender
        self.reloads = 0
        """Reloads applied so far (for tests and logs)."""
        self.dropped: dict[str, int] = {}
        """Messages on the reload subject that were no reload notice, by reason (``malformed``,
        ``jetstream_delivery``): dropped, counted here and logged once per reason per interval."""
        self._drop_log = RateLimitedLog("ignoring a message on the reload subject (%s): %s%s", logger=log)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[str | None]] = set()

    async def reload(self, why: str) -> str | None:
        """Re-read and apply the file: None when applied, else why not (nothing changed)."""
        async with self._lock:
            try:
                config = load_config(self.path)
                summary = await self.apply(config)
            except (ConfigError, ValueError) as exc:
                text = str(exc) if isinstance(exc, ConfigError) else f"{self.path}: {exc}"
                log.error("reload (%s) refused, the running configuration is kept: %s", why, text)
                return text
            self.reloads += 1
            log.warning("reloaded %s (%s): %s", self.path, why, summary)
            return None

    def _drop(self, reason: str, detail: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._drop_log(reason, detail)

    def _spawn(self, why: str) -> None:
        task = asyncio.create_task(self.reload(why), name="healthbus-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def broadcast(self, nc: Client, prefix: str) -> None:
        """Tell every other coordinator and probe worker on ``prefix`` to reload."""
        await nc.publish(Subjects(prefix).worker(RELOAD_TOKEN), encode(ReloadNotice(sender=self.sender)))

    @contextlib.asynccontextmanager
    async def installed(self, nc: Client, prefix: str) -> AsyncIterator[None]:
        """While the block runs: SIGHUP and the reload broadcast (from others) reload."""
        loop = asyncio.get_running_loop()

        async def on_broadcast(msg: Msg) -> None:
            if msg.reply.startswith("$JS."):
                # A push consumer pointed at the reload subject: stream data, not a notice.
                self._drop("jetstream_delivery", f"a JetStream delivery on {msg.subject}")
                return
            try:
                notice = decode_reload_notice(msg.data)
            except ProtocolError as exc:
                self._drop("malformed", f"on {msg.subject}: {exc}")
                return
            if notice.sender != self.sender:
                self._spawn(f"healthbus reload via {notice.sender}")

        sub = await nc.subscribe(Subjects(prefix).worker(RELOAD_TOKEN), cb=on_broadcast)
        loop.add_signal_handler(signal.SIGHUP, self._spawn, "SIGHUP")
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            for task in list(self._tasks):
                task.cancel()
