"""The coordinator service: NATS in, the pure core in the middle, JetStream out.

Invariants this layer keeps (the decision rules themselves live in :mod:`._core`):

* Restore before deciding: on start every target's last StateChanged is read from the
  state stream and seeds the core, *then* the probe subscription starts. A restart
  therefore continues each target's ``seq`` and never re-announces a transition.
* Publish in order, never lose: events go to an outbox and are published with
  ``Nats-Msg-Id: <target>:<seq>``; an event leaves the outbox only once JetStream acked
  it. When NATS is down they wait (in order) and are retried with backoff; a repeat of an
  event that did land is dropped by the stream's duplicate window.
* Bad input is counted, logged at a bounded rate and dropped: oversized, malformed,
  subject/target mismatch, unknown target (checked on the subject, before decoding),
  absurd timestamps, out-of-order results, too many probe ids. Nothing from the wire
  creates state for an unconfigured target.
* One decider at a time: with a leader lease (:mod:`._leader`) only the holder
  subscribes, decides and publishes; a standby restores afresh when it takes over.
* Timers (staleness, ``retry_at``, the refresh of an unchanged state every
  ``[coordinator] refresh_after`` so the stream's retention never drops a target's
  current state) run from a clock, without any probe traffic.

This module holds the lifecycle (start, activate, step down, stop) and wires the parts,
one responsibility each: :mod:`._intake` (the hot path), :mod:`._timers`,
:mod:`._control` (operator requests), :mod:`._election` (the lease loop),
:mod:`._outbox` (publishing), :mod:`._counters` (counters, waiters, rate-limited logs)
and :mod:`._natsinternals` (the only use of nats-py internals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Final

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import SlowConsumerError
from prometheus_client import CollectorRegistry

from healthbus.bus import StateStream, ensure_stream, sync_subscriptions
from healthbus.coordinator._clock import Clock, SystemClock
from healthbus.coordinator._control import Control
from healthbus.coordinator._core import ConfirmPlanner, Decider, Now, catch_up
from healthbus.coordinator._counters import Counters, RateLimitedLog
from healthbus.coordinator._election import Election
from healthbus.coordinator._intake import BATCH_LIMIT, Intake
from healthbus.coordinator._leader import Lease, bucket_for, default_holder_id
from healthbus.coordinator._metrics import ServiceCollector
from healthbus.coordinator._natsinternals import QueueBatcher
from healthbus.coordinator._outbox import Outbox
from healthbus.coordinator._recent import RecentResults
from healthbus.coordinator._reports import REPORT_PENDING_MSGS, ReportIntake, ReportsCollector
from healthbus.coordinator._timers import Timers
from healthbus.protocol import (
    Config,
    ControlReply,
    StateChanged,
    StreamSettings,
    Subjects,
    redact,
)

log = logging.getLogger("healthbus.coordinator")

#: Pending-message limit of the probe subscription: beyond it nats-py drops (counted).
PENDING_MSGS_LIMIT: Final = 200_000
PENDING_BYTES_LIMIT: Final = 64 * 1024 * 1024
#: Readings of the clock closer together than this (seconds) share one ``Now``.
NOW_RESOLUTION: Final = 0.001
#: Seconds a published StateChanged waits for its ack before it is sent again. A healthy
#: ack takes milliseconds; a stream without a leader gives none, and once it has one again
#: the next attempt lands (a repeat is dropped by the duplicate window).
PUBLISH_TIMEOUT: Final = 1.0
#: A takeover's read of the stream's last events: each try waits this long for JetStream
#: (a stream electing its leader answers nothing), then tries again, up to restore_timeout.
RESTORE_TRY_TIMEOUT: Final = 1.0


class CoordinatorService:
    """Consumes ProbeResults, decides with the core, publishes StateChanged.

    ``async with CoordinatorService(config, nc) as service:`` restores, subscribes and
    runs the timers; leaving the block stops it (publishing what it can). With a leader
    lease (``[coordinator] lease``, default 5 s; ``lease_ttl=0`` turns it off) only the
    holder is ``active``; the others stand by and take over when it dies. Counters
    (``results``, ``dropped``, ``transitions``, ``published``, ``handled``) and
    :meth:`wait_handled` make it easy to drive from tests and benchmarks.
    """

    def __init__(
        self,
        config: Config,
        nc: Client,
        *,
        prefix: str | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        publish_timeout: float = PUBLISH_TIMEOUT,
        restore_timeout: float = 10.0,
        secrets: Iterable[str] = (),
        lease_ttl: float | None = None,
        holder: str | None = None,
    ) -> None:
        # The targets are not kept here: the core holds the compact part of them it needs
        # (settings shared by value), so the service does not pin every TargetConfig.
        self.config = msgspec.structs.replace(config, targets=[])
        """The configuration it was given, without its ``[[targets]]`` (see :attr:`decider`)."""
        self.nc = nc
        self.js = nc.jetstream()
        self.prefix = prefix or config.bus.prefix
        self.subjects = Subjects(self.prefix)
        settings = config.coordinator
        self.stream = StreamSettings.for_prefix(
            self.prefix,
            max_age_s=float(settings.stream_max_age),
            duplicate_window_s=float(settings.duplicate_window),
            replicas=settings.stream_replicas,
        )
        self.clock: Clock = clock or SystemClock()
        self.tick_interval = float(settings.tick)
        self.publish_timeout = publish_timeout
        self.restore_timeout = restore_timeout
        self._rng = rng or random.Random()
        self.decider = Decider(
            config.targets,
            rng=self._rng,
            now=Now(self.clock.monotonic(), self.clock.now()),
            refresh_after=settings.effective_refresh_after,
        )
        self.registry = registry or CollectorRegistry()
        self.registry.register(ServiceCollector(self))
        self.counters = Counters(self.clock.monotonic)
        self.reports = ReportIntake(
            ConfirmPlanner(window=float(settings.confirm_window)), self.counters, subjects=self.subjects, now=self._now
        )
        """Failure reports and confirmation rounds (:mod:`._reports`): they never decide a state."""
        self.registry.register(ReportsCollector(lambda: self.reports))
        self.restored = 0

        self.legacy_probe_subjects = settings.legacy_probe_subjects
        """Also take results on ``<prefix>.probe.<target>`` (no probe token): rolling upgrades only."""
        self._now_cache: Now | None = None
        self._probe_base = self.subjects.probe_legacy_all[:-1]  # "<prefix>.probe."
        self._ctl_base = self.subjects.ctl_all[:-1]  # "<prefix>.ctl."
        self._publish_log = RateLimitedLog("%s: %s%s", self.clock.monotonic)
        self._error_log = RateLimitedLog("NATS %s: %s%s", self.clock.monotonic)
        self.lease_ttl = float(settings.lease) if lease_ttl is None else lease_ttl
        self.holder = holder or default_holder_id()
        self.lease: Lease | None = None
        self.active = False
        """True while this coordinator leads (always, without election) and decides."""
        self.activated = asyncio.Event()
        """Set while active: ``await service.activated.wait()`` waits for a takeover."""
        self._published_before = 0
        self._active_tasks: list[asyncio.Task[None]] = []
        self.outbox = self._new_outbox()
        self.reload_hook: Callable[[], Awaitable[str | None]] | None = None
        """Set by the command: re-reads the configuration for ``ctl reload`` (None: ok, else why not)."""
        self._secrets = list(secrets)
        self._subs: list[Any] = []  # subscriptions of one term as leader (control)
        self._probe_sub: Any = None
        self._legacy_sub: Any = None
        self._batcher: QueueBatcher | None = None
        self.recent: RecentResults | None = None
        """The results heard lately (with election only): what a takeover catches up from."""
        self._tasks: list[asyncio.Task[None]] = []
        self._election: Election | None = None
        self._restored = False
        self._stopping = False
        self._bind()

    def _bind(self) -> None:
        """Give the parts of one term the current decider."""
        self._intake = Intake(
            self.decider,
            self.counters,
            probe_base=self._probe_base,
            legacy=self.legacy_probe_subjects,
            now=self._now,
            emit=self._emit,
            batcher=self._batcher,
            record=self.recent.add if self.recent is not None else None,
        )
        self._timers = Timers(
            self.decider, self.nc, self.clock, tick=self.tick_interval, now=self._now, emit=self._emit
        )
        self._control = Control(
            self.decider,
            self.counters,
            ctl_base=self._ctl_base,
            now=self._now,
            emit=self._emit,
            wait_published=self.wait_published,
            reload=self._reload,
        )
        self.reports.bind(self.decider, self.nc)

    # ------------------------------------------------------------------ counters

    @property
    def results(self) -> dict[str, int]:
        """ProbeResults accepted and decided, by outcome."""
        return self.counters.results

    @property
    def dropped(self) -> dict[str, int]:
        """Messages counted and dropped, by reason."""
        return self.counters.dropped

    @property
    def transitions(self) -> dict[tuple[str, str, str], int]:
        """StateChanged decided, by (target, previous, state)."""
        return self.counters.transitions

    @property
    def handled(self) -> int:
        """ProbeResult messages handled so far (decided or dropped)."""
        return self.counters.handled

    @property
    def decision_buckets(self) -> list[int]:
        """Sampled decision times per :data:`~._metrics.DECISION_BUCKETS` bucket (+Inf last)."""
        return self.counters.decision_buckets

    @property
    def decision_sum(self) -> float:
        """Sum of the sampled decision times (seconds)."""
        return self.counters.decision_sum

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Leading, connected to NATS and restored from the state stream."""
        return self.active and self._restored and self.nc.is_connected and not self._stopping

    @property
    def pending(self) -> int:
        """Events decided but not yet acked by JetStream."""
        return self.outbox.pending

    @property
    def published(self) -> int:
        """Events acked by JetStream so far (over every term as leader)."""
        return self._published_before + self.outbox.published

    async def start(self) -> None:
        """Ensure the stream; with election, take the lease or stand by; when leading,
        restore every target, then subscribe and run the timers."""
        await ensure_stream(self.js, self.stream)
        if self.lease_ttl > 0:
            self.recent = RecentResults()
        # One probe subscription for the whole life of the service: while standing by it
        # only keeps the results (see _recent), while leading they are decided.
        self._probe_sub = await self.nc.subscribe(
            self.subjects.probe_all,
            cb=self._on_probe,
            pending_msgs_limit=PENDING_MSGS_LIMIT,
            pending_bytes_limit=PENDING_BYTES_LIMIT,
        )
        self._batcher = QueueBatcher.attach(self._probe_sub)
        if self.legacy_probe_subjects:
            self._legacy_sub = await self.nc.subscribe(self.subjects.probe_legacy_all, cb=self._on_legacy_probe)
        if self.lease_ttl > 0:
            self.lease = Lease(
                self.js,
                bucket_for(self.stream.name),
                holder=self.holder,
                ttl=self.lease_ttl,
                replicas=self.stream.replicas,
                monotonic=self.clock.monotonic,
            )
            await self.lease.setup()
            election = Election(
                self.lease,
                self.nc,
                self.clock,
                is_active=lambda: self.active,
                activate=self._activate,
                deactivate=self._deactivate,
                warn=self._error_log,
            )
            self._election = election
            acquired = await election.first_acquire()
            if not acquired:
                log.warning(
                    "standing by: %s leads (lease %gs)", await self.lease.current_holder() or "another", self.lease_ttl
                )
            self._tasks.append(asyncio.create_task(election.run(), name="healthbus-coordinator-lease"))
            if acquired:
                await election.take_over()
        else:
            await self._activate()

    async def _activate(self) -> None:
        """Become the active coordinator: read the stream, catch up on what the results
        heard meanwhile prove, then decide live, run the timers and answer control requests."""
        self._published_before += self.outbox.published
        self.outbox = self._new_outbox()
        current = await self._read_last_events()
        await self.outbox.start()
        # From here to ``active`` nothing awaits: every result received before is in
        # ``recent`` (the standby kept it), every one after goes to the new decider.
        self._take_over(current.values())
        self._active_tasks.append(asyncio.create_task(self._timers.run(), name="healthbus-coordinator-timers"))
        self.active = True
        self._subs.append(await self.nc.subscribe(self.subjects.ctl_all, cb=self._control.on_ctl))
        self._subs.append(
            await self.nc.subscribe(
                self.subjects.report_all, cb=self.reports.on_report, pending_msgs_limit=REPORT_PENDING_MSGS
            )
        )
        # subscribe() only queues SUB: until nats-server has it, a result or a control
        # request published elsewhere reaches no one. Wait until it has them, so
        # "activated" means "receiving" (nc.flush() is no such barrier in nats-py). If the
        # connection drops meanwhile, nats-py sends the SUBs again on reconnect: carry on.
        try:
            await sync_subscriptions(self.nc)
        except Exception as exc:
            self._error_log("subscribing", str(exc) or type(exc).__name__)
        self.activated.set()
        log.warning(
            "coordinator active: %d targets, %d restored, prefix %s, stream %s%s",
            len(self.decider.names),
            self.restored,
            self.prefix,
            self.stream.name,
            f", leader lease {self.lease_ttl:g}s as {self.holder}" if self.lease else "",
        )

    async def _read_last_events(self) -> dict[str, StateChanged]:
        """The stream's last event per target, each try bounded by :data:`RESTORE_TRY_TIMEOUT`.

        Tried again until ``restore_timeout`` has passed: without the bound, a takeover
        during the stream's leader election waited out JetStream's 5 s default once before
        its next try, after the stream was back.
        """
        reader = StateStream(self.nc, self.prefix, stream=self.stream.name, api_timeout=RESTORE_TRY_TIMEOUT)
        deadline = self.clock.monotonic() + self.restore_timeout
        while True:
            try:
                return await reader.current(timeout=self.restore_timeout)
            except (TimeoutError, nats_errors.Error) as exc:
                if self.clock.monotonic() >= deadline or not self.nc.is_connected:
                    raise
                self._error_log("reading the state stream", f"{str(exc) or type(exc).__name__}; trying again")
                await self.clock.sleep(0.1)

    def _take_over(self, last: Iterable[StateChanged]) -> None:
        """A fresh core aligned to the stream's last events, caught up on the recent results."""
        now = self.clock_now()
        seen = self.recent.snapshot(now.mono) if self.recent is not None else []
        start = seen[0][0] if seen and seen[0][0].mono <= now.mono else now
        self.decider = self.decider.renew(start)
        last = list(last)
        self.restored, events = catch_up(self.decider, last, seen, now, start)
        for event in last:
            if event.target in self.decider:
                self.outbox.mark_acked(event.target, event.seq)
        ignored = len(last) - sum(1 for event in last if event.target in self.decider)
        if ignored:
            log.info("restore: %d targets in the stream are not configured; ignored", ignored)
        self._now_cache = None
        self._bind()
        if events:
            log.warning(
                "caught up: %d StateChanged decided from %d results heard before taking over", len(events), len(seen)
            )
            self._emit(events)
        self._restored = True

    async def _deactivate(self, *, flush_timeout: float = 0.0) -> None:
        """Stop consuming and deciding; publish what is pending for up to ``flush_timeout``."""
        self.active = False
        self.activated.clear()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        for task in self._active_tasks:
            task.cancel()
        for task in self._active_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._active_tasks.clear()
        if flush_timeout > 0 and self.outbox.pending and self.nc.is_connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    await self.outbox.drained()
        if self.outbox.pending:
            log.warning(
                "%d StateChanged not stored are dropped: the next leader records what the results it heard prove",
                self.outbox.pending,
            )
        await self.outbox.stop()
        # A new, empty outbox: a step-down holds nothing (and a later stop waits for nothing).
        self._published_before += self.outbox.published
        self.outbox = self._new_outbox()
        self._restored = False

    def _may_publish(self) -> bool:
        return self.lease is None or self.lease.valid()

    def _new_outbox(self) -> Outbox:
        return Outbox(
            self.nc,
            self.subjects,
            self.stream,
            timeout=self.publish_timeout,
            warn=self._publish_log,
            may_send=self._may_publish,
        )

    async def stop(self, *, flush_timeout: float = 2.0) -> None:
        """Stop consuming, publish what is pending (up to ``flush_timeout``), release the lease."""
        if self._stopping:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._election is not None:
            await self._election.stop()
        for sub in (self._probe_sub, self._legacy_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._probe_sub = self._legacy_sub = None
        await self._deactivate(flush_timeout=flush_timeout if self.active else 0.0)
        if self.lease is not None:
            await self.lease.release()
        self.counters.cancel_waiters()

    async def __aenter__(self) -> CoordinatorService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_handled(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` ProbeResult messages in total have been handled."""
        await self.counters.wait_handled(n, timeout)

    async def wait_published(self, target: str, seq: int, timeout: float = 10.0) -> None:
        """Wait until ``target``'s event ``seq`` has been acked by JetStream."""
        async with asyncio.timeout(timeout):
            await self.outbox.wait_acked(target, seq)

    # ------------------------------------------------------------------ deciding

    def clock_now(self) -> Now:
        """The current time on both clocks, read afresh."""
        self._now_cache = Now(self.clock.monotonic(), self.clock.now())
        return self._now_cache

    def _now(self) -> Now:
        # Reading the wall clock costs more than deciding; within one millisecond the
        # previous reading is as good (decisions and wire timestamps need no finer).
        mono = self.clock.monotonic()
        cached = self._now_cache
        if cached is not None and 0.0 <= mono - cached.mono < NOW_RESOLUTION:
            return cached
        cached = self._now_cache = Now(mono, self.clock.now())
        return cached

    def _emit(self, events: Iterable[StateChanged]) -> None:
        for event in events:
            self.counters.transition(event.target, event.previous, event.state)
            log.info(
                "%s #%d: %s → %s (%s): %s",
                event.target,
                event.seq,
                event.previous,
                event.state,
                event.breaker,
                event.reason,
            )
            self.outbox.put(event)

    async def _on_probe(self, msg: Msg) -> None:
        if self.active:
            self._intake.on_probe(msg)
            return
        recent = self.recent
        if recent is None:
            return
        now = self._now()
        base = len(self._probe_base)
        recent.add_raw(now, base, msg.subject, msg.data)
        if self._batcher is not None:
            self._batcher.take(BATCH_LIMIT, lambda subject, data: recent.add_raw(now, base, subject, data))

    async def _on_legacy_probe(self, msg: Msg) -> None:
        if self.active:
            await self._intake.on_legacy_probe(msg)
        elif self.recent is not None:
            self.recent.add_raw(self._now(), len(self._probe_base), msg.subject, msg.data)

    def handle_probe(self, subject: str, data: bytes) -> None:
        """Decode and decide one ProbeResult message (synchronous: the hot path)."""
        self._intake.handle_probe(subject, data)

    async def handle_control(self, command: str, data: bytes) -> ControlReply:
        """Apply one control request; the reply carries the resulting (or current) event."""
        return await self._control.handle_control(command, data)

    def _timer_wait(self) -> float:
        return self._timers.wait()

    # ------------------------------------------------------------------ reload

    async def _reload(self) -> str | None:
        if self.reload_hook is None:
            return "this coordinator was started without a configuration file"
        return await self.reload_hook()

    def reconfigure(self, config: Config) -> list[StateChanged]:
        """Decide from now on for ``config``'s targets (a live reload); the retired events.

        Only the active coordinator announces retirements; a standby takes the new targets
        silently (it restores from the stream when it takes over).
        """
        events = self.decider.reconfigure(config.targets, self._now())
        for gone in [name for name in self.reports.planner.reports if name not in self.decider.names]:
            self.reports.planner.forget(gone)
        if not self.active:
            return []
        self._emit(events)
        return events

    # ------------------------------------------------------------------ errors

    async def error_cb(self, exc: Exception) -> None:
        """Connection error callback: counts slow-consumer drops, logs the rest (rate-limited)."""
        if isinstance(exc, SlowConsumerError):
            self.counters.drop("slow_consumer", "the probe subscription is full: messages dropped by the client")
            return
        self._error_log(type(exc).__name__, redact(str(exc), self._secrets) or "error")
