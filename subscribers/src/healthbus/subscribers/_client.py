"""HealthClient: every target's current state, live, inside a service (DESIGN section 6).

Invariants:

- ``connect`` never blocks a service for long: it returns after about
  ``connect_timeout`` seconds whether NATS is up or not. When NATS is down, the client
  starts with no states (the bus-loss policy applies at once) and a background task
  keeps trying with capped exponential backoff and jitter.
- The state stream is read with ``deliver_policy=last_per_subject`` and then followed
  live (``StateStream.follow``); when ``connect`` returns after a successful connect,
  every target's current state is loaded (or the load took longer than the timeout,
  which is logged, and states keep arriving).
- Bus loss is tracked by a supervisor task (nats-py's disconnected/reconnected callbacks
  wake it; it also polls ``nc.is_connected``, so a shared connection passed in as ``nc``
  works too). After ``stale_after`` seconds without the bus the states are stale and the
  policy applies. When the connection is back, the stream is re-read from the last
  message per subject (catching up on everything that changed meanwhile; duplicates are
  dropped by seq) and only then are the states fresh again.
- Nothing the bus sends can crash the client: malformed messages are skipped by
  StateStream, callbacks are isolated (see ``_view``).
- ``report_failure`` never blocks or raises for the caller's failure: the report is
  published from its own task, at most one per target per second (see ``_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Self

import msgspec
from nats.aio.client import Client

from healthbus import bus
from healthbus.bus import Follower, StateStream
from healthbus.protocol import BusSettings, FailureReport, StateChanged, Subjects, encode, redact, redact_url
from healthbus.protocol.clock import Clock, sleep_until_set
from healthbus.subscribers._report import FailureReporter
from healthbus.subscribers._state import BusLossPolicy, StateTable, validate_policy
from healthbus.subscribers._view import HealthViewBase

log = logging.getLogger("healthbus.subscribers")

_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 10.0
_ERROR_LOG_INTERVAL = 60.0


class HealthClient(HealthViewBase):
    """Live health of every target, for one service instance.

    Create it with :meth:`connect`::

        async with HealthClient.connect("nats://127.0.0.1:4222") as health:
            if health.is_available("redis-main"): ...

    or ``health = await HealthClient.connect(...)`` and later ``await health.close()``.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        settings: BusSettings | None = None,
        prefix: str | None = None,
        stale_after: float = 30.0,
        on_bus_loss: BusLossPolicy = "keep",
        connect_timeout: float | None = None,
        nc: Client | None = None,
        name: str = "healthbus-subscriber",
        clock: Clock | Callable[[], float] | None = None,
        report_failures: bool = True,
        instance: str | None = None,
    ) -> None:
        super().__init__(StateTable(stale_after=stale_after, policy=validate_policy(on_bus_loss)), clock)
        self._settings = settings or BusSettings()
        self._url = url
        self.prefix = prefix or self._settings.prefix
        Subjects(self.prefix)  # a bad prefix is a usage error now, not a retry loop later
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else self._settings.connect_timeout)
        self._name = name
        self._nc = nc
        self._own_nc = nc is None
        self._stream: StateStream | None = None
        self._follower: Follower | None = None
        self._resync = True
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._backoff_attempt = 0
        self._retry_after = 0.0
        self._error_logged_at: float | None = None
        self._tick = max(0.01, min(0.5, stale_after / 4 if stale_after > 0 else 0.5))
        self._subjects = Subjects(self.prefix)
        self.reporter = FailureReporter(name, enabled=report_failures, instance=instance)
        """Failure reports: the switch (``reporter.enabled``) and the counters."""
        self._report_tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        settings: BusSettings | None = None,
        prefix: str | None = None,
        stale_after: float = 30.0,
        on_bus_loss: BusLossPolicy = "keep",
        connect_timeout: float | None = None,
        nc: Client | None = None,
        name: str = "healthbus-subscriber",
        report_failures: bool = True,
        instance: str | None = None,
    ) -> _Connecting:
        """Connect and load every target's current state; use with ``async with`` or ``await``.

        ``url`` (else ``settings.url``, ``NATS_URL``, ``nats://127.0.0.1:4222``);
        ``settings`` carries credentials/TLS and the subject ``prefix``; ``stale_after``:
        seconds without the bus before states are stale and ``on_bus_loss`` applies
        (``keep`` / ``assume_available`` / ``assume_unavailable``); ``connect_timeout``
        bounds how long connecting may take (default ``settings.connect_timeout``);
        ``nc``: an existing nats-py connection to share (not closed by the client);
        ``report_failures``: send failure reports (default on; see :meth:`report_failure`);
        ``instance``: the id reports carry (default ``<name>@<host>:<pid>``).
        """
        client = cls(
            url=url,
            settings=settings,
            prefix=prefix,
            stale_after=stale_after,
            on_bus_loss=on_bus_loss,
            connect_timeout=connect_timeout,
            nc=nc,
            name=name,
            report_failures=report_failures,
            instance=instance,
        )
        return _Connecting(client)

    # ------------------------------------------------------------ life cycle

    @property
    def nc(self) -> Client | None:
        """The NATS connection (None until the first successful connect)."""
        return self._nc

    async def start(self) -> Self:
        """Connect (bounded by ``connect_timeout``), load current states, start the supervisor."""
        if self._supervisor is not None or self._closed:
            return self  # already started (or closed): starting twice must not connect twice
        try:
            return await self._start()
        except BaseException:
            # Cancelled (a caller's timeout) or failed half-way: nobody gets this client, so
            # nobody could close it: close the connection it opened before passing it on.
            await asyncio.shield(self.close())
            raise

    async def _start(self) -> Self:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        if self._nc is None:
            await self._try_connect()
        if self._nc is not None:
            try:
                await self._go_live(max(0.1, deadline - loop.time()))
            except Exception as exc:
                log.warning("healthbus: cannot read the state stream yet (%s); retrying in the background", exc)
                self._note_failure()
        not_live = self._follower is None or not self._follower.caught_up.is_set()
        # Not live yet: lost since now; with nothing known at all the policy applies at once.
        if not_live and self._table.mark_lost(self._clock(), immediately=not self._table.states):
            self._bus_changed()
        self._supervisor = loop.create_task(self._supervise(), name="healthbus-subscriber-supervisor")
        return self

    async def close(self) -> None:
        """Stop following the bus and close the connection if the client opened it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        follower, self._follower = self._follower, None
        if follower is not None:
            await follower.stop()
        if self._own_nc and self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5.0)
        await super().close()

    # ------------------------------------------------------------ failure reports

    def report_failure(self, target: str, kind: str = "other", error: BaseException | str | None = None) -> bool:
        """Tell the coordinator this instance saw ``target`` fail; True if a report goes out.

        A hint, never a verdict: the coordinator asks the probe workers to check
        ``target`` now, and only their results decide. ``kind`` is an error kind
        (``timeout``, ``refused``, ``dns``, ``auth``, ``tls``, ``protocol``,
        ``unhealthy``, ``other``; an adapter's own kinds map onto them); ``error`` is
        redacted before it leaves. At most one report per target per second; never
        blocks (the publish runs in its own task) and never raises for a failure to
        send (counted in ``reporter.unsent``). Raises ValueError for an invalid target
        name. Call it from the event loop's thread (use SyncHealthClient elsewhere).
        """
        report = self.reporter.build(target, kind, error)
        if report is None:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: nothing can send it
            self.reporter.unsent += 1
            return False
        return self._dispatch_report(report)

    def _dispatch_report(self, report: FailureReport) -> bool:
        """Publish ``report`` from its own task (on the client's event-loop thread)."""
        nc = self._nc
        if nc is None or not nc.is_connected or self._closed:
            self.reporter.unsent += 1
            return False
        task = asyncio.get_running_loop().create_task(self._send_report(nc, report))
        self._report_tasks.add(task)
        task.add_done_callback(self._report_tasks.discard)
        return True

    async def _send_report(self, nc: Client, report: FailureReport) -> None:
        try:
            await nc.publish(self._subjects.report(report.target), encode(report))
        except Exception as exc:  # closed or overfull connection: count it, never raise
            self.reporter.unsent += 1
            log.debug("healthbus: failure report for %s not sent: %s", report.target, type(exc).__name__)

    # ------------------------------------------------------------ internals

    async def _on_disconnected(self) -> None:
        self._wake.set()

    async def _on_reconnected(self) -> None:
        self._error_logged_at = None  # the next outage gets its first error logged again
        self._wake.set()

    async def _on_error(self, exc: Exception) -> None:
        # nats-py reports every failed reconnect attempt (several a second): a service's
        # log must not fill up during a bus outage, so log the first and then every minute.
        now = self._clock()
        if self._error_logged_at is not None and now - self._error_logged_at < _ERROR_LOG_INTERVAL:
            return
        self._error_logged_at = now
        text = redact(str(exc) or type(exc).__name__, bus.bus_secrets(self._settings))
        log.warning("healthbus: NATS %s: %s", redact_url(bus.resolve_url(self._settings, self._url)), text)

    async def _try_connect(self) -> bool:
        settings = msgspec.structs.replace(self._settings, connect_timeout=max(0.05, self.connect_timeout / 2))
        try:
            self._nc = await bus.connect(
                settings,
                url=self._url,
                name=self._name,
                connect_attempts=1,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            )
        except bus.BusUnavailable as exc:
            if self._backoff_attempt == 0 or self._backoff_attempt % 10 == 0:
                log.warning("healthbus: %s; reconnecting in the background", exc)
            self._note_failure()
            return False
        self._own_nc = True
        self._backoff_attempt = 0
        log.info("healthbus: connected to %s", redact_url(bus.resolve_url(self._settings, self._url)))
        return True

    def _note_failure(self) -> None:
        delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2**self._backoff_attempt)
        self._backoff_attempt += 1
        # Equal jitter: spread many instances restarting together, never wait nearly 0.
        self._retry_after = self._clock() + delay / 2 + random.uniform(0, delay / 2)

    async def _go_live(self, timeout: float) -> None:
        """(Re)start following from the last message per subject and wait to be caught up."""
        assert self._nc is not None
        if self._stream is None or self._stream.nc is not self._nc:
            self._stream = StateStream(self._nc, self.prefix)
        follower = await self._stream.follow(self._handle_event, start="last_per_subject")
        old, self._follower = self._follower, follower
        self._resync = False
        if old is not None:
            await old.stop()
        try:
            await asyncio.wait_for(follower.caught_up.wait(), timeout)
        except TimeoutError:
            log.warning("healthbus: loading current states took longer than %.1fs; continuing live", timeout)
            return
        self._backoff_attempt = 0
        if self._table.mark_restored():
            log.info("healthbus: following the state stream live (%d targets)", len(self._table.states))
            self._bus_changed()

    def _handle_event(self, event: StateChanged) -> None:
        self._handle(event)

    async def _supervise(self) -> None:
        """Reconnect, resync after a reconnect, and keep staleness up to date."""
        while not self._closed:
            self._wake.clear()
            try:
                await self._supervise_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the supervisor die
                log.exception("healthbus: subscriber supervisor error")
                self._note_failure()
            await sleep_until_set(self._time, self._wake, self._tick)

    async def _supervise_once(self) -> None:
        now = self._clock()
        flipped = False
        nc = self._nc
        if nc is None or not nc.is_connected:
            if self._table.lost_since is None:
                log.warning("healthbus: lost the bus; keeping the last known states")
                flipped = True
            flipped = self._table.mark_lost(now) or flipped
            if self._follower is not None:
                self._resync = True
            if nc is None and now >= self._retry_after and await self._try_connect():
                self._resync = True
                self._wake.set()  # go live without waiting for the next tick
        elif (self._resync or self._follower is None) and now >= self._retry_after:
            try:
                await self._go_live(max(1.0, self.connect_timeout))
            except Exception as exc:
                log.warning("healthbus: cannot follow the state stream (%s); retrying", exc)
                self._note_failure()
        elif self._follower is not None and self._follower.caught_up.is_set() and self._table.lost_since is not None:
            flipped = self._table.mark_restored()
        flipped = self._table.tick(self._clock()) or flipped
        if flipped:
            self._bus_changed()


class _Connecting:
    """What :meth:`HealthClient.connect` returns: ``async with`` it, or ``await`` it."""

    def __init__(self, client: HealthClient) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, HealthClient]:
        return self._client.start().__await__()

    async def __aenter__(self) -> HealthClient:
        return await self._client.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.close()
