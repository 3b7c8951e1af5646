"""HealthClient: every target's current state, live, inside a service (docs/subscribers.md).

Invariants:

- ``connect`` never blocks a service for long: it returns after about
  ``connect_timeout`` seconds whether NATS is up or not. When NATS is down, the client
  starts with no states (the bus-loss policy applies at once) and a background task
  keeps trying with capped exponential backoff and jitter.
- No JetStream consumer: live changes come over a plain subscription to
  ``<prefix>.state.*`` (the coordinator's JetStream publishes reach core subscribers
  too); current states are loaded with batched direct gets of the last message per
  subject (``StateStream.snapshot``), made after the subscription is in place so that
  nothing falls between the two. When ``connect`` returns after a successful connect,
  every target's current state is loaded (or the load failed or took longer than the
  timeout, which is logged and reported in ``bus.reason``, and is retried).
- A target's ``seq`` is contiguous: a live event more than one past the known one means
  something was missed, and that target's last message is read again by a direct get.
- Bus loss is tracked by a supervisor task (nats-py's disconnected/reconnected callbacks
  wake it; it also polls ``nc.is_connected`` and the reconnect count, so a shared
  connection passed in as ``nc`` works too). After ``stale_after`` seconds without the
  bus the states are stale and the policy applies. After a reconnect the snapshot is
  loaded again after a random delay of up to ``resync_jitter`` seconds (so a fleet whose
  NATS restarted does not ask all at once); duplicates are dropped by seq, and only then
  are the states fresh again.
- Anything that stops the client from following the state (NATS unreachable, the stream
  missing or without ``allow_direct``, a permission refused, a server limit) counts as
  losing the bus: ``bus.connected`` is False with a ``bus.reason``, the bus-loss policy
  applies after ``stale_after``, and ``on_bus_change`` is told of every change of
  ``bus`` (connected, stale, reason), the return included.
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
import ssl
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from healthbus import bus
from healthbus.bus import DEFAULT_BATCH, DirectGetError, StateStream
from healthbus.protocol import BusSettings, FailureReport, StateChanged, Subjects, encode, redact, redact_url
from healthbus.protocol.clock import Clock, sleep_until_set
from healthbus.subscribers._report import FailureReporter
from healthbus.subscribers._state import BusLossPolicy, StateTable, validate_policy
from healthbus.subscribers._view import HealthViewBase

log = logging.getLogger("healthbus.subscribers")

_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 10.0
_ERROR_LOG_INTERVAL = 60.0
_RESYNC_JITTER = 1.0
_REPAIR_DELAY = 0.05
_IDLE_WAIT = 5.0


class ClientOptions(TypedDict, total=False):
    """The keyword options of :class:`HealthClient` (and its ``connect``, which documents them)."""

    settings: BusSettings | None
    prefix: str | None
    stale_after: float
    on_bus_loss: BusLossPolicy
    connect_timeout: float | None
    nc: Client | None
    name: str
    tls: ssl.SSLContext | None
    clock: Clock | Callable[[], float] | None
    resync_jitter: float
    batch: int
    report_failures: bool
    instance: str | None


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
        tls: ssl.SSLContext | None = None,
        clock: Clock | Callable[[], float] | None = None,
        resync_jitter: float = _RESYNC_JITTER,
        batch: int = DEFAULT_BATCH,
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
        self._tls = tls
        self._nc = nc
        self._own_nc = nc is None
        if resync_jitter < 0:
            raise ValueError(f"invalid resync_jitter {resync_jitter!r}: expected seconds >= 0")
        if batch < 1:
            raise ValueError(f"invalid batch {batch!r}: expected at least 1")
        self.resync_jitter = float(resync_jitter)
        self.batch = int(batch)
        self._stream: StateStream | None = None
        self._sub: Subscription | None = None
        self._live = False  # following: subscribed and the snapshot loaded since the last reconnect
        self._resync = True
        self._resync_at: float | None = None
        self._reconnects_seen = 0
        self._refused: str | None = None  # a server error that stops following (permission, limit)
        self._repairs: set[str] = set()
        self._repair_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._backoff_attempt = 0
        self._retry_after = 0.0
        self._error_logged_at: float | None = None
        self._tick = max(0.01, min(0.5, stale_after / 4 if stale_after > 0 else 0.5))
        self._notified: tuple[bool, bool, str | None] = (True, False, None)  # what on_bus_change last said
        self._subjects = Subjects(self.prefix)
        self.reporter = FailureReporter(name, enabled=report_failures, instance=instance)
        """Failure reports: the switch (``reporter.enabled``) and the counters."""
        self._report_tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(cls, url: str | None = None, **options: Unpack[ClientOptions]) -> _Connecting:
        """Connect and load every target's current state; use with ``async with`` or ``await``.

        ``url`` (else ``settings.url``, ``NATS_URL``, ``nats://127.0.0.1:4222``);
        ``settings`` carries credentials/TLS and the subject ``prefix``; ``stale_after``:
        seconds without the bus before states are stale and ``on_bus_loss`` applies
        (``keep`` / ``assume_available`` / ``assume_unavailable``); ``connect_timeout``
        bounds how long connecting may take (default ``settings.connect_timeout``);
        ``nc``: an existing nats-py connection to share (not closed by the client; under
        ``deploy/``'s subscriber role it needs ``inbox_prefix=healthbus.bus.SUBSCRIBER_INBOX_PREFIX``);
        ``resync_jitter``: the most seconds to wait before reloading current states after
        a reconnect (spreads a fleet); ``batch``: targets per direct-get request;
        ``tls``: an ``ssl.SSLContext`` for TLS to NATS, instead of ``settings``' ``tls_ca`` /
        ``tls_cert`` / ``tls_key`` files. A TLS failure (an untrusted server, a missing or
        rejected client certificate) is logged as one line and retried in the background;
        ``report_failures``: send failure reports (default on; see :meth:`report_failure`);
        ``instance``: the id reports carry (default ``<name>@<host>:<pid>``).
        """
        return _Connecting(cls(url=url, **options))

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
            await self._go_live(max(0.1, deadline - loop.time()))
        if not self._live:
            # Not live yet: lost since now; with nothing known at all the policy applies at once.
            reason = self._table.reason or "not connected to NATS"
            self._table.mark_lost(self._clock(), immediately=not self._table.states, reason=reason)
        self._notify_bus()
        self._supervisor = loop.create_task(self._supervise(), name="healthbus-subscriber-supervisor")
        return self

    async def close(self) -> None:
        """Stop following the bus and close the connection if the client opened it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._supervisor, self._repair_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        sub, self._sub = self._sub, None
        if sub is not None and not self._own_nc:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
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
        if isinstance(exc, SlowConsumerError):
            # Live messages were dropped in this process: reload rather than miss a change.
            if self._sub is not None and exc.sid == self._sub._id:
                self._resync = True
                self._wake.set()
            return
        text = redact(str(exc) or type(exc).__name__, bus.bus_secrets(self._settings))
        if "ermissions violation" in text or "maximum subscriptions" in text:
            # The server refused what following needs (a permission, a limit): that is a
            # lost bus, not just a log line, until a reload succeeds.
            self._refused = text
            self._resync = True
            self._wake.set()
        # nats-py reports every failed reconnect attempt (several a second): a service's
        # log must not fill up during a bus outage, so log the first and then every minute.
        now = self._clock()
        if self._error_logged_at is not None and now - self._error_logged_at < _ERROR_LOG_INTERVAL:
            return
        self._error_logged_at = now
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
                # _INBOX.<user> (or [bus] inbox_prefix) like every role; without a user in
                # the settings, the subscriber role's (the user may be in the URL).
                inbox_prefix=(
                    self._settings.effective_inbox_prefix
                    if self._settings.user or self._settings.inbox_prefix
                    else bus.SUBSCRIBER_INBOX_PREFIX
                ),
                **({"tls": self._tls} if self._tls is not None else {}),
            )
        except bus.BusUnavailable as exc:
            if self._backoff_attempt == 0 or self._backoff_attempt % 10 == 0:
                log.warning("healthbus: %s; reconnecting in the background", exc)
            self._table.reason = str(exc)
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
        """Subscribe (once per connection), then load every target's last state; live on success.

        On failure the client stays (or becomes) lost with the reason, and retries later.
        """
        nc = self._nc
        assert nc is not None
        if self._stream is None or self._stream.nc is not nc:
            self._stream = StateStream(nc, self.prefix)
            self._sub = None
        self._resync = False
        self._resync_at = None
        self._reconnects_seen = nc.stats["reconnects"]
        refused, self._refused = self._refused, None
        try:
            if self._sub is None or refused is not None:
                old, self._sub = self._sub, None
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.unsubscribe()
                self._sub = await self._stream.live(self._handle_live)
            # The snapshot request is queued behind the SUB, so the server has the
            # subscription before it answers: every later change arrives live.
            events = await self._stream.snapshot(batch=self.batch, timeout=max(0.1, timeout))
        except (DirectGetError, OSError, TimeoutError, nats_errors.Error) as exc:
            if self._refused is not None:  # the server said why there was no answer
                self._fail(f"refused by the server: {self._refused}")
            else:
                self._fail(f"cannot read the state stream: {exc}")
            return
        for event in events:
            self._handle(event)
        if self._refused is not None:  # refused while loading (the SUB, a direct get)
            self._fail(f"refused by the server: {self._refused}")
            return
        if self._resync:  # reconnected while loading: load again
            return
        self._live = True
        self._backoff_attempt = 0
        if self._table.lost_since is not None or self._table.stale:
            log.info("healthbus: following the state stream live (%d targets)", len(self._table.states))
        self._table.mark_restored()

    def _fail(self, reason: str) -> None:
        """Following failed: lost (with ``reason``) until a retry after backoff succeeds."""
        self._live = False
        self._resync = True
        if self._table.reason != reason:
            log.warning("healthbus: %s; retrying", reason)
        self._table.mark_lost(self._clock(), reason=reason)
        self._note_failure()

    def _handle_live(self, event: StateChanged) -> None:
        known = self._table.states.get(event.target)
        if known is not None and event.seq > known.seq + 1 and self._live:
            # seq is contiguous per target: something in between was missed. This event
            # is newer than anything known, so it is applied; the stream is asked for the
            # target's last message as well, in case even newer ones were missed too.
            self._repairs.add(event.target)
            if self._repair_task is None or self._repair_task.done():
                self._repair_task = asyncio.get_running_loop().create_task(self._repair())
        self._handle(event)

    async def _repair(self) -> None:
        await self._time.sleep(_REPAIR_DELAY)  # gather the targets of one burst
        while self._repairs and self._stream is not None:
            target = self._repairs.pop()
            try:
                event = await self._stream.last(target)
            except (DirectGetError, OSError, TimeoutError, nats_errors.Error) as exc:
                log.warning("healthbus: cannot repair a gap in %s (%s); reloading", target, exc)
                self._resync = True
                self._wake.set()
                return
            if event is not None:
                self._handle(event)

    def _notify_bus(self) -> None:
        status = self.bus
        key = (status.connected, status.stale, status.reason)
        if key != self._notified:
            self._notified = key
            self._bus_changed()

    async def _supervise(self) -> None:
        """Reconnect, resync after a reconnect, and keep staleness up to date."""
        while not self._closed:
            self._wake.clear()
            wait = self._tick
            try:
                wait = await self._supervise_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the supervisor die
                log.exception("healthbus: subscriber supervisor error")
                self._note_failure()
            await sleep_until_set(self._time, self._wake, max(0.001, wait))

    async def _supervise_once(self) -> float:
        """One round; returns how long until the next one is due at the latest."""
        now = self._clock()
        nc = self._nc
        wait = self._tick
        if nc is not None and nc.is_closed and self._own_nc and not self._closed:
            # nats-py gives up on a connection after some server errors (e.g. a limit):
            # start a new one (after backoff) instead of staying disconnected forever.
            error = nc.last_error
            if error is not None:
                text = redact(str(error) or type(error).__name__, bus.bus_secrets(self._settings))
                self._table.reason = f"the connection was closed: {text}"
            self._nc = nc = None
            self._note_failure()
        if nc is None or not nc.is_connected:
            if self._live or self._table.lost_since is None:
                log.warning("healthbus: lost the bus; keeping the last known states")
            self._live = False
            self._resync = True
            reason = "disconnected from NATS" if nc is not None else (self._table.reason or "not connected to NATS")
            self._table.mark_lost(now, reason=reason)
            if nc is None and now >= self._retry_after and await self._try_connect():
                self._wake.set()  # go live without waiting for the next tick
        else:
            if nc.stats["reconnects"] != self._reconnects_seen:
                self._resync = True  # reconnected between two rounds: changes may be missed
            if self._resync:
                if self._live:
                    self._live = False
                    self._table.mark_lost(now, reason="reloading current states after a reconnect")
                if self._resync_at is None:
                    # Spread a fleet reconnecting together over resync_jitter seconds.
                    self._resync_at = now + random.uniform(0, self.resync_jitter)
                due = max(self._resync_at, self._retry_after)
                if now >= due:
                    await self._go_live(max(1.0, self.connect_timeout))
                else:
                    wait = min(wait, due - now)
        self._table.tick(self._clock())
        self._notify_bus()
        if self._live and self._own_nc and self._table.lost_since is None:
            # Following on its own connection: nats-py's callbacks wake the supervisor on
            # any change, so it need not poll (a fleet's processes stay asleep).
            wait = _IDLE_WAIT
        return wait


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
