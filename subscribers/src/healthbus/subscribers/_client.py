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
- Groups (``pick()``): ``<prefix>.group.*`` is subscribed next to the states and every
  group's last GroupChanged is loaded after each snapshot (batched direct gets); each
  message is a whole group, so the newest ``seq`` wins and nothing needs repairing. A
  credential that may not subscribe to them still follows the states (a warning is logged).
- A target's ``seq`` is contiguous: a live event more than one past the known one means
  something was missed, and that target's last message is read again by a direct get.
- Bus loss is tracked by a supervisor task (on its own connection the disconnected
  callback says the loss at once and the reconnect callbacks begin the catch-up, waking the
  supervisor where it has something due; it also polls ``nc.is_connected`` and the
  reconnect count, so a shared connection passed in as ``nc`` works too). After
  ``stale_after`` seconds without the bus the states are stale and the policy applies.
  After a reconnect the client first listens (its SUB in the reconnect's one write,
  ``PongSafeClient.handshake_cb``) for the coordinator's StateDigest on ``<prefix>.digest`` (every configured
  target's latest seq, sent every ``[coordinator] digest_interval`` and at once when the
  coordinator's own connection comes back) and reads only the targets it shows changed
  (see ``_catchup``), except those whose last event the digest itself carries: a fleet
  whose NATS restarted sends almost no requests. Without a
  digest within ``_DIGEST_WAIT`` seconds (an older coordinator), after a slow-consumer
  drop, or when the server refused something, every current state is loaded again. Any
  read waits a random delay of up to ``resync_jitter`` seconds first (so a fleet does not
  ask all at once), each request is bounded by ``_REQUEST_TIMEOUT`` and a failed one is
  retried with capped exponential backoff and jitter; duplicates are dropped by seq, and
  only once caught up are the states fresh again. ``resync`` counts what it cost.
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
from collections.abc import Generator
from types import TracebackType
from typing import Any, Final, Self, TypedDict, Unpack

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from healthbus import bus
from healthbus.bus import DEFAULT_BATCH, DirectGetError, StateStream
from healthbus.protocol import (
    BusSettings,
    DigestParts,
    FailureReport,
    ProtocolError,
    StateChanged,
    StateDigest,
    Subjects,
    decode_state_digest,
    encode,
    redact,
    redact_url,
)
from healthbus.protocol.clock import Clock, Nap
from healthbus.subscribers._catchup import ResyncStats, behind, pages
from healthbus.subscribers._report import FailureReporter
from healthbus.subscribers._state import BusLossPolicy, StateTable, validate_policy
from healthbus.subscribers._view import HealthViewBase

log = logging.getLogger("healthbus.subscribers")

_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 10.0
_ERROR_LOG_INTERVAL = 60.0
_RESYNC_JITTER = 0.5
_REPAIR_DELAY = 0.05
_IDLE_WAIT = 5.0
_DIGEST_WAIT = 5.0  # seconds to wait for a StateDigest after a reconnect before reloading everything
_REQUEST_TIMEOUT = 5.0  # the most a catch-up request waits for its answer
_FEW_TARGETS = 8  # up to this many changed targets are read one by one, more with one batched load


#: What a client that has never loaded the states answers, by bus-loss policy (logged once
#: at start when the first load failed; docs/subscribers.md, "Before the first load").
_BEFORE_FIRST_LOAD: Final[dict[BusLossPolicy, str]] = {
    "keep": (
        "no state loaded yet: until it is, is_available() answers False for every target and "
        "feature_available() True for every feature (on_bus_loss='keep' has nothing to keep)"
    ),
    "assume_available": "no state loaded yet: until it is, every target and feature answers available",
    "assume_unavailable": "no state loaded yet: until it is, every target and feature answers not available",
}


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
    clock: Clock | None
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
        clock: Clock | None = None,
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
        self._group_sub: Subscription | None = None
        self._live = False  # following: subscribed and the snapshot loaded since the last reconnect
        self._resync = True
        self._resync_at: float | None = None
        self._reconnects_seen = 0
        self._refused: str | None = None  # a server error that stops following (permission, limit)
        self._repairs: set[str] = set()
        self._repair_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._nap = Nap(self._time, self._wake)  # the supervisor's sleep between rounds
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._backoff_attempt = 0
        self._retry_after = 0.0
        self._error_logged_at: float | None = None
        self._tick = max(0.01, min(0.5, stale_after / 4 if stale_after > 0 else 0.5))
        self._notified: tuple[bool, bool, str | None] = (True, False, None)  # what on_bus_change last said
        self._subjects = Subjects(self.prefix)
        self.reporter = FailureReporter(name, enabled=report_failures, instance=instance, clock=self._time)
        self._table.instance = self.reporter.instance  # its place in re-admission ramps
        """Failure reports: the switch (``reporter.enabled``) and the counters."""
        self._report_tasks: set[asyncio.Task[None]] = set()
        self.resync = ResyncStats()
        """What catching up with the state stream cost so far (requests, timeouts, digests)."""
        self._request_timeout = min(_REQUEST_TIMEOUT, max(1.0, self.connect_timeout))
        self._full_resync = False  # the next catch-up reloads every state (no digest shortcut)
        self._digest_refused = False  # the server refused the digest subscription: never ask again
        self._digest_sub: Subscription | None = None
        self._digest_arrived: asyncio.Future[Msg] | None = None  # its one message (a digest in one part)
        self._digest: StateDigest | None = None  # the digest of the current catch-up round
        self._catchup_since: float | None = None  # when the current catch-up round began
        self._catchup_lag = 0.0  # how late this process woke the supervisor meanwhile (not counted)
        self._catchup_reconnects = -1  # the reconnect count that round began at
        self._catchup_round = 0  # rounds begun: a digest counts only for its own round
        self._digest_parts = DigestParts()  # a split digest's parts, merged as they come
        self._digest_budget = 0  # digest messages the current round's subscription may still get
        self._digest_resubscribe = False  # the subscription ran out before a split digest was whole
        self._loss_error: str | None = None  # the error that dropped the connection, for "lost the bus"
        self._round_due: float | None = None  # when the sleeping supervisor's next round is due

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
        ``resync_jitter``: the most seconds to wait before reading what changed (or reloading
        every current state) after a reconnect (spreads a fleet); ``batch``: targets per direct-get request;
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
            if not self._table.states:
                log.warning("healthbus: %s; %s", reason, _BEFORE_FIRST_LOAD[self._table.policy])
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
        subs = (self._sub, self._group_sub, self._digest_sub)
        self._sub = self._group_sub = self._digest_sub = None
        for sub in subs:
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
        nc = self._nc
        if nc is not None and self._own_nc and not self._closed:
            # Said here, in the reconnect task, before its first try (whose handshake then
            # begins the catch-up): the supervisor need not wake for it (one turn less per
            # instance of a fleet), unless staleness falls due before its next round.
            try:
                now = self._clock()
                self._lose(now, "disconnected from NATS")
                self._table.tick(now)
                self._notify_bus()
            except Exception:  # never into nats-py's reconnect task: the supervisor says it
                log.exception("healthbus: cannot say the bus was lost")
            else:
                lost_since, due = self._table.lost_since, self._round_due
                if due is not None and lost_since is not None and lost_since + self._table.stale_after >= due:
                    return
        self._wake.set()

    async def _on_reconnected(self) -> None:
        self._error_logged_at = None  # the next outage gets its first error logged again
        dropped, self._loss_error = self._loss_error, None
        if dropped is not None:  # back before the supervisor said it was lost: say why now
            log.warning("healthbus: NATS %s: %s", redact_url(bus.resolve_url(self._settings, self._url)), dropped)
        nc = self._nc
        if nc is not None and self._catching_up(nc) and nc.is_connected:
            if self._catchup_since is not None and self._catchup_reconnects == nc.stats["reconnects"]:
                # Begun during the handshake (_on_handshake): the wait for a digest counts from now,
                # and the supervisor's next round is due a tick from now (as its round would set it:
                # the digest's callback ends the catch-up, or that round sees it overdue).
                self._catchup_since = now = self._clock()
                if self._next_round_at(now + self._tick):
                    return
            else:
                # Begin the catch-up here, in the reconnect task: the digest SUB goes out right
                # behind the replayed subscriptions, without waiting for the supervisor's turn
                # on a busy event loop (the supervisor, woken below, continues the round).
                try:
                    await self._begin_round(nc, self._clock())
                except Exception:  # e.g. lost again: the supervisor begins the round anew
                    self._catchup_since = None
        self._wake.set()

    async def _on_handshake(self) -> None:
        """A reconnect try is under way (``PongSafeClient.handshake_cb``): begin the catch-up round
        for the connection it makes, so the digest's SUB goes out in the reconnect's one write."""
        nc = self._nc
        if nc is None or not self._catching_up(nc):
            return
        reconnects = nc.stats["reconnects"] + 1  # counted once the server has taken this try
        if self._catchup_since is not None and self._catchup_reconnects == reconnects and self._digest_sub is not None:
            return  # begun for an earlier try that was refused: the replay sends its SUB again
        try:
            await self._begin_round(nc, self._clock(), reconnects)
        except Exception:  # the reconnected callback (or the supervisor) begins it instead
            self._catchup_since = None

    def _catching_up(self, nc: Client) -> bool:
        """Whether a reconnect of ``nc`` begins a catch-up round by digest right away."""
        return self._resync and not self._live and not self._closed and self._by_digest(nc)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            # Live messages were dropped in this process: reload rather than miss a change.
            if self._sub is not None and exc.sid == self._sub._id:
                self._resync = True
                self._full_resync = True  # what was dropped is in no digest's past: read everything
                self._wake.set()
            return
        now = self._clock()
        # A failed reconnect try (several a second per client while NATS is away; a process
        # may hold hundreds): nothing to look at until it is logged again.
        logged = self._error_logged_at
        if isinstance(exc, OSError) and logged is not None and now - logged < _ERROR_LOG_INTERVAL:
            return
        text = redact(str(exc) or type(exc).__name__, bus.bus_secrets(self._settings))
        if "ermissions violation" in text and bus.STREAM_INFO_API in text:
            # Our own question why the stream gives no answers (_go_live), refused to a
            # role that may not read stream info: expected, not a lost bus.
            log.debug("healthbus: %s", text)
            return
        if "ermissions violation" in text and self._subjects.group_all in text:
            # Groups are an extension: a credential from before them may not follow them live.
            # They are still loaded at connect (direct gets); the states are followed as ever.
            log.warning("healthbus: this credential may not follow groups live (%s): loaded at connect only", text)
            return
        if "ermissions violation" in text and self._subjects.digest in text:
            # A deployment older than the digest: catch up by reloading, as before it.
            self._digest_refused = True
            self._full_resync = True
            self._wake.set()
        elif "ermissions violation" in text or "maximum subscriptions" in text:
            # The server refused what following needs (a permission, a limit): that is a
            # lost bus, not just a log line, until a reload succeeds.
            self._refused = text
            self._resync = True
            self._wake.set()
        # nats-py reports every failed reconnect attempt (several a second): a service's
        # log must not fill up during a bus outage, so log the first and then every minute.
        if self._error_logged_at is not None and now - self._error_logged_at < _ERROR_LOG_INTERVAL:
            return
        self._error_logged_at = now
        if self._live and isinstance(exc, nats_errors.StaleConnectionError | OSError):
            # The connection just dropped: the supervisor's "lost the bus" line says so, with
            # this reason (one line per outage, not two; a fleet's processes log it at once).
            self._loss_error = text
            return
        log.warning("healthbus: NATS %s: %s", redact_url(bus.resolve_url(self._settings, self._url)), text)

    async def _try_connect(self) -> bool:
        settings = msgspec.structs.replace(self._settings, connect_timeout=max(0.05, self.connect_timeout / 2))
        try:
            self._nc = await bus.connect(
                settings,
                url=self._url,
                name=self._name,
                connect_attempts=1,
                require_server=False,  # checked in _go_live, for a shared connection too
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                handshake_cb=self._on_handshake,
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
            self._sub = self._group_sub = None
        self._resync = False
        self._resync_at = None
        self._reconnects_seen = nc.stats["reconnects"]
        url = nc.connected_url
        problem = bus.server_problem(nc._server_info)
        if problem is not None:  # a server too old or without JetStream: nothing below would work
            self._fail(f"NATS at {redact_url(url.geturl()) if url else '?'}: {problem}", level=logging.ERROR)
            return
        refused, self._refused = self._refused, None
        try:
            if self._sub is None or refused is not None:
                old, self._sub = self._sub, None
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.unsubscribe()
                self._sub = await self._stream.live(self._handle_live)
            if self._group_sub is None:
                self._group_sub = await nc.subscribe(self._subjects.group_all, cb=self._on_group)
            # The snapshot request is queued behind the SUB, so the server has the
            # subscription before it answers: every later change arrives live.
            self.resync.requests += 1
            events = await self._stream.snapshot(batch=self.batch, timeout=max(0.1, timeout))
            self.resync.requests += pages(len(events), self.batch) - 1
        except (DirectGetError, OSError, TimeoutError, nats_errors.Error) as exc:
            self._count_failure(exc)
            if self._refused is not None:  # the server said why there was no answer
                self._fail(f"refused by the server: {self._refused}")
                return
            # No answer from the stream: say which of its two causes it is, where the
            # credential may read stream info (the subscriber role of deploy/ may not).
            problem = None
            if isinstance(exc, DirectGetError) and exc.kind == "no_responders":
                problem = await bus.direct_get_problem(nc, self._stream.stream)
            self._fail(f"cannot read the state stream: {problem or exc}")
            return
        for event in events:
            self._handle(event)
        await self._load_groups(nc, max(0.1, timeout))
        if self._refused is not None:  # refused while loading (the SUB, a direct get)
            self._fail(f"refused by the server: {self._refused}")
            return
        if self._resync:  # reconnected while loading: load again
            return
        self._caught_up()

    def _caught_up(self) -> None:
        """Following live again: subscribed, and every state missed meanwhile read."""
        self._resync = False
        self._resync_at = None
        self._full_resync = False
        self._catchup_since = None
        self._digest = None
        if self._digest_sub is not None:
            sub, self._digest_sub = self._digest_sub, None
            asyncio.get_running_loop().create_task(self._unsubscribe(sub))
        self._live = True
        self._backoff_attempt = 0
        if self._table.lost_since is not None or self._table.stale:
            log.info("healthbus: following the state stream live (%d targets)", len(self._table.states))
        self._table.mark_restored()

    async def _load_groups(self, nc: Client, timeout: float) -> None:
        """Every group's last GroupChanged (after the group subscription is in place).

        Groups are an extension: a stream or a credential without them leaves ``pick()``
        without groups (it says so when asked), never the states unfollowed.
        """
        assert self._stream is not None
        try:
            groups = await self._stream.groups(batch=self.batch, timeout=timeout)
        except (DirectGetError, OSError, TimeoutError, nats_errors.Error) as exc:
            log.warning("healthbus: cannot load the groups (pick() knows none yet): %s", exc)
            return
        for event in groups:
            self._handle_group(event)

    async def _on_group(self, msg: Msg) -> None:
        stream = self._stream
        event = stream.decode_group(msg.subject, msg.data) if stream is not None else None
        if event is not None:
            self._handle_group(event)

    @staticmethod
    async def _unsubscribe(sub: Subscription) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    def _count_failure(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError | nats_errors.TimeoutError) or (
            isinstance(exc, DirectGetError) and exc.kind == "timeout"
        ):
            self.resync.timeouts += 1

    # ------------------------------------------------------------ catching up by digest

    def _by_digest(self, nc: Client) -> bool:
        """Whether this catch-up may trust a StateDigest (else: reload every state)."""
        return (
            not self._full_resync
            and not self._digest_refused
            and self._refused is None
            and self._sub is not None
            and self._stream is not None
            and self._stream.nc is nc
            and bool(self._table.states)
        )

    def _take_digest(self, msg: Msg, round_: int) -> None:
        try:
            self._on_digest(msg, round_)
        except Exception:  # never from here into nats-py's read loop or the event loop's handler
            log.exception("healthbus: cannot take a state digest")

    def _on_digest(self, msg: Msg, round_: int) -> None:
        if round_ != self._catchup_round:
            return  # delivered late to the subscription of an earlier round
        self._digest_budget -= 1
        try:
            part = decode_state_digest(msg.data)
        except ProtocolError as exc:
            log.debug("healthbus: skipping a malformed state digest: %s", exc)
            part = None
        digest = self._digest_parts.add(part) if part is not None else None
        if digest is not None or self._digest_budget <= 0:
            # One digest is all a round needs; or the subscription's max_msgs ran out before a
            # split digest was whole (it has more parts than the last one): a new round
            # subscribes again for as many as the parts it now knows of.
            sub, self._digest_sub = self._digest_sub, None
            if digest is None:
                self._digest_resubscribe = True
                self._wake.set()
            if sub is not None and self._digest_budget > 0:
                asyncio.get_running_loop().create_task(self._unsubscribe(sub))
        if digest is not None:
            self.resync.digests += 1
            if self._digest is None:
                self._digest = digest
                self._finish_by_digest(digest)
                # Caught up and following live on its own connection: the supervisor's round would
                # only set its next one _IDLE_WAIT ahead, so do that; anything else is its to do.
                table = self._table
                live = not self._resync and self._own_nc and table.lost_since is None and not table.stale
                if not (live and self._next_round_at(self._clock() + _IDLE_WAIT)):
                    self._wake.set()

    async def _begin_round(self, nc: Client, now: float, reconnects: int | None = None) -> None:
        """A new catch-up round: only a digest that arrives on a subscription made now counts;
        its SUB follows the state SUB on this connection. ``reconnects``: the reconnect count of
        the connection the round is for (default: the current one)."""
        self._catchup_since = now
        self._catchup_lag = 0.0
        self._catchup_reconnects = self._reconnects_seen = nc.stats["reconnects"] if reconnects is None else reconnects
        self._digest = None
        self._resync_at = None
        old, self._digest_sub = self._digest_sub, None
        if old is not None:
            await self._unsubscribe(old)
        await self._subscribe_digest(nc)

    async def _catch_up(self, nc: Client, now: float) -> float:
        """One step of a catch-up by digest; returns how long until the next step is due."""
        if self._catchup_since is None or nc.stats["reconnects"] != self._catchup_reconnects:
            await self._begin_round(nc, now)  # a new round (or a reconnect during one)
        elif self._digest_resubscribe and self._digest is None:
            await self._subscribe_digest(nc)  # same round, same deadline: for all of a split digest
        since = self._catchup_since
        if not self._resync or since is None:
            return self._tick  # caught up meanwhile (by the digest's callback)
        digest = self._digest
        if digest is None:
            left = since + _DIGEST_WAIT + self._catchup_lag - now
            sub, arrived = self._digest_sub, self._digest_arrived
            if left > 0 or (sub is not None and (sub.pending_msgs > 0 or (arrived is not None and arrived.done()))):
                # Still due, or it came and this busy process has not handled it yet.
                return min(self._tick, max(left, 0.01))
            log.info("healthbus: no state digest within %gs after reconnecting; reloading every state", _DIGEST_WAIT)
            self._full_resync = True
            return 0.0
        if digest.events:
            self._apply_digest_events(digest)
        known = {name: state.seq for name, state in self._table.states.items()}
        missing = behind(known, digest.seqs)
        if not missing:
            self.resync.skipped += 1
            self._caught_up()
            return self._tick
        if self._resync_at is None:
            # Spread those that must read over resync_jitter seconds.
            self._resync_at = now + random.uniform(0, self.resync_jitter)
        due = max(self._resync_at, self._retry_after)
        if now < due:
            return due - now
        if not await self._read(missing):
            return self._tick
        known = {name: state.seq for name, state in self._table.states.items()}
        if behind(known, digest.seqs, absent=False):
            # Read less than the digest names (on its way, or a replica behind): a new
            # round reads again after the next digest, listening live meanwhile.
            self._catchup_since = None
            return self._tick
        self._caught_up()
        return self._tick

    def _finish_by_digest(self, digest: StateDigest) -> None:
        """Catch up right as the round's digest comes, when it leaves nothing to read (one
        turn of a busy event loop sooner than the supervisor); else the supervisor reads."""
        nc = self._nc
        if (
            nc is None
            or not self._resync
            or self._catchup_since is None
            or not nc.is_connected
            or nc.stats["reconnects"] != self._catchup_reconnects
            or not self._by_digest(nc)
        ):
            return
        if digest.events:
            self._apply_digest_events(digest)
        known = {name: state.seq for name, state in self._table.states.items()}
        if behind(known, digest.seqs):
            return
        self.resync.skipped += 1
        self._caught_up()
        self._table.tick(self._clock())
        self._notify_bus()

    def _apply_digest_events(self, digest: StateDigest) -> None:
        """Take the digest's events this client lacks (each stored in the stream): no read for them."""
        states = self._table.states
        for event in digest.events:
            known = states.get(event.target)
            if (known is None or known.seq < event.seq) and event.seq <= digest.seqs.get(event.target, 0):
                self.resync.applied += 1
                self._handle(event)

    async def _subscribe_digest(self, nc: Client) -> None:
        """Listen on ``<prefix>.digest`` for one whole digest; only its messages count from now on."""
        self._digest_resubscribe = False
        self._catchup_round += 1
        round_ = self._catchup_round

        # The server itself stops after one whole digest (``UNSUB <sid> <max>`` sent right
        # after the SUB), however late this busy process gets round to it: 1 message, or for
        # a digest split into N parts, 2N - 1 (N in a row from one digest, whatever part the
        # subscription starts at). N is the last digest's; a digest with more parts runs
        # the subscription out and a new one is made for them. nats-py's ``max_msgs`` alone
        # would not do: it only drops the extra messages locally (nats-py 2.16 sends no
        # UNSUB for it), so the server would go on sending this connection every digest,
        # each parsed and dropped, until the next reconnect.
        self._digest_budget = 2 * self._digest_parts.expected - 1
        if self._digest_budget == 1:
            # One message: nats-py hands it to a future from its read loop, and a callback of
            # that future takes it, without the task and queue a callback subscription has
            # (made and ended per instance and round, they were a good part of a catch-up's cost).
            arrived: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

            def take(done: asyncio.Future[Msg]) -> None:
                if not done.cancelled():
                    self._take_digest(done.result(), round_)

            arrived.add_done_callback(take)
            self._digest_arrived = arrived
            sub = await nc.subscribe(self._subjects.digest, future=arrived, max_msgs=1)
        else:

            async def on_digest(msg: Msg) -> None:
                self._take_digest(msg, round_)

            self._digest_arrived = None
            sub = await nc.subscribe(self._subjects.digest, cb=on_digest, max_msgs=self._digest_budget)
        self._digest_sub = sub
        with contextlib.suppress(nats_errors.BadSubscriptionError):  # already done: the digest came
            await sub.unsubscribe(limit=self._digest_budget)

    async def _read(self, targets: list[str]) -> bool:
        """Read ``targets``' last events (one by one if few, else one batched load); False on failure."""
        stream = self._stream
        assert stream is not None
        try:
            if len(targets) > _FEW_TARGETS:
                self.resync.requests += 1
                events = await stream.snapshot(batch=self.batch, timeout=self._request_timeout)
                self.resync.requests += pages(len(events), self.batch) - 1
            else:
                events = []
                for target in targets:
                    self.resync.requests += 1
                    event = await stream.last(target, timeout=self._request_timeout)
                    if event is not None:
                        events.append(event)
        except (DirectGetError, OSError, TimeoutError, nats_errors.Error) as exc:
            self._count_failure(exc)
            self._fail(f"cannot read the state stream: {exc}")
            return False
        for event in events:
            self._handle(event)
        return True

    def _fail(self, reason: str, level: int = logging.WARNING) -> None:
        """Following failed: lost (with ``reason``) until a retry after backoff succeeds."""
        self._live = False
        self._resync = True
        if self._table.reason != reason:
            log.log(level, "healthbus: %s; retrying", reason)
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
                self.resync.requests += 1
                event = await self._stream.last(target, timeout=self._request_timeout)
            except (DirectGetError, OSError, TimeoutError, nats_errors.Error) as exc:
                self._count_failure(exc)
                log.warning("healthbus: cannot repair a gap in %s (%s); reloading", target, exc)
                self._resync = True
                self._full_resync = True
                self._wake.set()
                return
            if event is not None:
                self._handle(event)

    def _notify_bus(self) -> None:
        table = self._table  # what self.bus would say, without building a BusStatus each round
        key = (table.lost_since is None, table.stale, table.reason)
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
            self._round_due = self._clock() + max(0.001, wait)
            woken = await self._nap.until(self._round_due)
            self._round_due = None
            if not woken and self._catchup_since is not None:
                # Woken late by its own timer: this process ran late (busy, or frozen). The
                # wait for a digest is about the bus, not this process: it does not count.
                self._catchup_lag += max(0.0, self._clock() - self._nap.deadline)

    def _next_round_at(self, moment: float) -> bool:
        """Have the sleeping supervisor's next round at ``moment`` (what that round would have set
        had it been woken now: one turn less); False if it is not asleep (then wake it)."""
        if self._round_due is None or not self._nap.move_to(moment):
            return False
        self._round_due = moment
        return True

    def _lose(self, now: float, reason: str) -> None:
        """Not following the bus (disconnected): said once per outage; the last states are kept."""
        if self._live or self._table.lost_since is None:
            dropped, self._loss_error = self._loss_error, None
            if dropped is not None:
                shown = redact_url(bus.resolve_url(self._settings, self._url))
                log.warning("healthbus: lost the bus (NATS %s: %s); keeping the last known states", shown, dropped)
            else:
                log.warning("healthbus: lost the bus; keeping the last known states")
        self._live = False
        self._resync = True
        self._table.mark_lost(now, reason=reason)

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
            reason = "disconnected from NATS" if nc is not None else (self._table.reason or "not connected to NATS")
            self._lose(now, reason)
            if nc is None and now >= self._retry_after and await self._try_connect():
                self._wake.set()  # go live without waiting for the next tick
            elif nc is not None and self._own_nc and nc.is_reconnecting:
                # nats-py reconnects on its own and its callback wakes us: until then only
                # staleness is due (hundreds of clients in one process need not poll).
                lost_since = self._table.lost_since
                if not self._table.stale and lost_since is not None:
                    wait = max(wait, min(_IDLE_WAIT, lost_since + self._table.stale_after - now))
                else:
                    wait = _IDLE_WAIT
        else:
            if nc.stats["reconnects"] != self._reconnects_seen:
                self._resync = True  # reconnected between two rounds: changes may be missed
            if self._resync:
                if self._live:
                    self._live = False
                    self._table.mark_lost(now, reason="reloading current states after a reconnect")
                if self._by_digest(nc):
                    wait = min(wait, await self._catch_up(nc, now))
                else:
                    if self._resync_at is None:
                        # Spread a fleet reconnecting together over resync_jitter seconds.
                        self._resync_at = now + random.uniform(0, self.resync_jitter)
                        self.resync.reloads += 1
                    due = max(self._resync_at, self._retry_after)
                    if now >= due:
                        await self._go_live(self._request_timeout)
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
