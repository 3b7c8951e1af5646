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

from healthbus.bus import DigestPublisher, Follower, RateLimitedLog, StateStream, ensure_stream, sync_subscriptions
from healthbus.coordinator._control import Control
from healthbus.coordinator._core import ConfirmPlanner, Decider, Now, Standby
from healthbus.coordinator._counters import Counters
from healthbus.coordinator._election import Election
from healthbus.coordinator._groups import Groups
from healthbus.coordinator._intake import Intake
from healthbus.coordinator._leader import Lease, bucket_for, default_holder_id, lease_key
from healthbus.coordinator._metrics import ServiceCollector
from healthbus.coordinator._natsinternals import QueueBatcher
from healthbus.coordinator._outbox import Outbox
from healthbus.coordinator._reports import REPORT_PENDING_MSGS, ReportIntake, ReportsCollector
from healthbus.coordinator._timers import Timers
from healthbus.protocol import (
    Config,
    ControlReply,
    ProtocolError,
    StateChanged,
    StreamSettings,
    Subjects,
    TargetConfig,
    decode_control_request,
    partition_of,
    redact,
)
from healthbus.protocol.clock import Clock, SystemClock

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
    lease (``[coordinator] lease_ttl``, default 5 s; ``lease_ttl=0`` turns it off) only the
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
        partition: int | None = None,
    ) -> None:
        settings = config.coordinator
        self.partitions = settings.partitions
        """``[coordinator] partitions``: 1 decides every target; more, only ``partition``'s."""
        if self.partitions > 1 and (partition is None or not 0 <= partition < self.partitions):
            raise ValueError(
                f"[coordinator] partitions = {self.partitions}: a service decides one partition,"
                f" 0 to {self.partitions - 1} (got {partition!r}); see PartitionedCoordinator"
            )
        self.partition = partition if self.partitions > 1 and partition is not None else 0
        """The partition this service decides (0 with one partition)."""
        self._partition_cache: dict[str, int] = {}
        # The targets are not kept here: the core holds the compact part of them it needs
        # (settings shared by value), so the service does not pin every TargetConfig.
        self.config = msgspec.structs.replace(config, targets=[])
        """The configuration it was given, without its ``[[targets]]`` (see :attr:`decider`)."""
        self.nc = nc
        self.js = nc.jetstream()
        self.prefix = prefix or config.bus.prefix
        self.subjects = Subjects(self.prefix)
        self.stream = StreamSettings.for_prefix(
            self.prefix,
            max_age_s=float(settings.stream_max_age),
            duplicate_window_s=float(settings.duplicate_window),
            replicas=settings.stream_replicas,
        )
        self.clock: Clock = clock or SystemClock()
        self.tick_interval = float(settings.tick)
        # A digest names every target of the prefix: one partition's leader knows only its
        # own, and subscribers read a target a digest leaves out again; so none with partitions.
        self.digest_interval = float(settings.digest_interval) if self.partitions == 1 else 0.0
        """Seconds between StateDigests on ``<prefix>.digest`` while active (0: none; none with partitions)."""
        self.publish_timeout = publish_timeout
        self.restore_timeout = restore_timeout
        self._rng = rng or random.Random()
        self.decider = Decider(
            self._mine(config.targets),
            rng=self._rng,
            now=Now(self.clock.monotonic(), self.clock.now()),
            refresh_after=settings.effective_refresh_after,
        )
        self.registry = registry or CollectorRegistry()
        self.registry.register(ServiceCollector(self))
        self.counters = Counters(self.clock)
        self.reports = ReportIntake(
            ConfirmPlanner(window=float(settings.confirm_window)), self.counters, subjects=self.subjects, now=self._now
        )
        """Failure reports and confirmation rounds (:mod:`._reports`): they never decide a state."""
        self.registry.register(ReportsCollector(lambda: self.reports))
        self.restored = 0

        self._now_cache: Now | None = None
        self._server_routing = self.partitions > 1 and settings.partition_routing == "server"
        # "<prefix>.probe.", or with server routing "<prefix>.part.<p>.probe."
        self._probe_all = (
            self.subjects.partition_probe_all(self.partition) if self._server_routing else self.subjects.probe_all
        )
        self._probe_base = self._probe_all[:-3]
        self._ctl_base = self.subjects.ctl_all[:-1]  # "<prefix>.ctl."
        self._publish_log = RateLimitedLog("%s: %s%s", self.clock, logger=log)
        self._error_log = RateLimitedLog("NATS %s: %s%s", self.clock, logger=log)
        self.lease_ttl = float(settings.lease_ttl) if lease_ttl is None else lease_ttl
        self.holder = holder or default_holder_id()
        self.lease: Lease | None = None
        self.active = False
        """True while this coordinator leads (always, without election) and decides."""
        self.activated = asyncio.Event()
        """Set while active: ``await service.activated.wait()`` waits for a takeover."""
        self._published_before = 0
        self._active_tasks: list[asyncio.Task[None]] = []
        self.outbox = self._new_outbox()
        self.groups = Groups(
            config.groups,
            nc,
            self.subjects,
            self.stream.name,
            self.clock,
            timeout=publish_timeout,
            may_send=self._may_publish,
        )
        """``[[groups]]``: member states and latencies in, GroupChanged out (:mod:`._groups`)."""
        self.reload_hook: Callable[[], Awaitable[str | None]] | None = None
        """Set by the command: re-reads the configuration for ``ctl reload`` (None: ok, else why not)."""
        self._secrets = list(secrets)
        self._subs: list[Any] = []  # subscriptions of one term as leader (control)
        self._probe_sub: Any = None
        self._batcher: QueueBatcher | None = None
        self.standby: Standby | None = None
        """With election only: what this coordinator decided while not leading, and the
        stored events it followed (:mod:`._core._standby`): what a takeover catches up from."""
        self._following: Follower | None = None
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
            now=self._now,
            emit=self._emit,
            batcher=self._batcher,
            observe=self.groups.observe,
            # With server routing only this partition's targets arrive: another's is the
            # sign of a mapping with another N, counted (unknown_target), not ignored.
            foreign=self._foreign if self.partitions > 1 and not self._server_routing else None,
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
        self.reports.bind(self.decider, self.nc, self._emit)

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
            self.standby = Standby()
            # Every event stored from here on is followed; then the stream's last ones.
            await self._follow()
            now = self.clock_now()
            for event in (await self._read_last_events()).values():
                self.standby.stored(self.decider, event, now)
            self._restored = True
        # One probe subscription for the whole life of the service: every result is
        # decided; while standing by the events are only kept (see _core._standby).
        self._probe_sub = await self.nc.subscribe(
            self._probe_all,
            cb=self._on_probe,
            pending_msgs_limit=PENDING_MSGS_LIMIT,
            pending_bytes_limit=PENDING_BYTES_LIMIT,
        )
        self._batcher = QueueBatcher.attach(self._probe_sub)
        if self.lease_ttl > 0:
            self.lease = Lease(
                self.js,
                bucket_for(self.stream.name),
                holder=self.holder,
                ttl=self.lease_ttl,
                replicas=self.stream.replicas,
                clock=self.clock,
                key=lease_key(self.partition, self.partitions),
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
                    "standing by: %s leads (lease %gs%s)",
                    await self.lease.current_holder() or "another",
                    self.lease_ttl,
                    f", {self.lease.key}" if self.partitions > 1 else "",
                )
            self._start_timers()
            self._tasks.append(asyncio.create_task(election.run(), name="healthbus-coordinator-lease"))
            if acquired:
                await election.take_over()
        else:
            await self._activate()
            self._start_timers()

    def _start_timers(self) -> None:
        # One timer loop for the whole life of the service, leading or standing by.
        self._tasks.append(asyncio.create_task(self._timers.run(), name="healthbus-coordinator-timers"))

    async def _follow(self) -> None:
        """Follow the events the stream stores from now on (while standing by)."""
        reader = StateStream(self.nc, self.prefix, stream=self.stream.name, api_timeout=RESTORE_TRY_TIMEOUT)
        self._following = await reader.follow(self._on_stored, start="new")

    async def _unfollow(self) -> None:
        following, self._following = self._following, None
        if following is not None:
            with contextlib.suppress(Exception):
                await following.stop()

    def _on_stored(self, event: StateChanged) -> None:
        if not self.active and self.standby is not None:
            self.standby.stored(self.decider, event, self._now())

    async def _activate(self) -> None:
        """Become the active coordinator: read the stream, catch up on what the results
        heard meanwhile prove, then decide live, run the timers and answer control requests."""
        self._published_before += self.outbox.published
        self.outbox = self._new_outbox()
        current = await self._read_last_events()
        await self.groups.restore(self.restore_timeout)
        self.groups.restore_states(current.values())
        await self.outbox.start()
        # From here to ``active`` nothing awaits: every event decided before is kept by
        # ``standby``, every one after goes to the outbox.
        self._take_over(current.values())
        self.groups.evaluate_all()
        self.groups.start()
        if self.digest_interval > 0:
            self._active_tasks.append(asyncio.create_task(self._digest().run(), name="healthbus-coordinator-digest"))
        self.active = True
        await self._unfollow()
        self._subs.append(await self.nc.subscribe(self.subjects.ctl_all, cb=self._on_ctl))
        self._subs.append(
            await self.nc.subscribe(
                self.subjects.report_all, cb=self._on_report, pending_msgs_limit=REPORT_PENDING_MSGS
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
            "coordinator active: %d targets, %d restored, prefix %s, stream %s%s%s",
            len(self.decider.names),
            self.restored,
            self.prefix,
            self.stream.name,
            f", leader lease {self.lease_ttl:g}s as {self.holder}" if self.lease else "",
            f", partition {self.partition} of {self.partitions}" if self.partitions > 1 else "",
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
        """Lead from the stream's last events: publish what was decided after them."""
        now = self.clock_now()
        last = [event for event in last if event.target in self.decider]
        standby = self.standby if self.standby is not None else Standby()
        aligned, events = standby.take_over(self.decider, last, now)
        self.restored = len(last)
        for event in last:
            self.outbox.mark_acked(event.target, event.seq)
        self._now_cache = None
        if events:
            log.warning(
                "caught up: %d StateChanged decided after the stream's last events (%d targets aligned on taking over)",
                len(events),
                aligned,
            )
            self._publish(events)
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
        await self.groups.stop()
        if flush_timeout > 0 and self.outbox.pending and self.nc.is_connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    await self.outbox.drained()
        if self.outbox.pending:
            log.warning(
                "%d StateChanged not stored: kept as decided after the last stored ones, for a takeover",
                self.outbox.pending,
            )
        await self.outbox.stop()
        if self.standby is not None:
            self.standby.step_down(self.decider, self.outbox.unacked())
            if not self._stopping:
                try:
                    await self._follow()
                except Exception as exc:  # the next takeover aligns to the stream instead
                    self._error_log("following the state stream", str(exc) or type(exc).__name__)
        # A new, empty outbox: a step-down holds nothing (and a later stop waits for nothing).
        self._published_before += self.outbox.published
        self.outbox = self._new_outbox()

    def _digest(self) -> DigestPublisher:
        """The StateDigest of this term: every configured target's highest sent seq, and the
        last stored events of the targets that changed last."""
        return DigestPublisher(
            self.nc,
            self.subjects,
            lambda: self.outbox.announced(self.decider.names),
            interval=self.digest_interval,
            clock=self.clock,
            events=lambda: self.outbox.recent(),
        )

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
            clock=self.clock,
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
        if self._probe_sub is not None:
            with contextlib.suppress(Exception):
                await self._probe_sub.unsubscribe()
        self._probe_sub = None
        await self._unfollow()
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

    # ------------------------------------------------------------------ partitions

    def _mine(self, targets: Iterable[TargetConfig]) -> list[TargetConfig]:
        """The targets of this service's partition (all of them with one partition)."""
        if self.partitions == 1:
            return list(targets)
        return [t for t in targets if partition_of(t.name, self.partitions) == self.partition]

    def _foreign(self, name: str) -> bool:
        """True when ``name`` belongs to another partition: its leader decides (and counts) it."""
        cache = self._partition_cache
        p = cache.get(name)
        if p is None:
            p = partition_of(name, self.partitions)
            if len(cache) < 2 * PENDING_MSGS_LIMIT:  # bounded whatever names arrive
                cache[name] = p
        return p != self.partition

    async def _on_ctl(self, msg: Msg) -> None:
        # With partitions every leader hears <prefix>.ctl.<command>: the target's answers;
        # a request naming no (valid) target, and reload, are answered by partition 0's.
        if self.partitions > 1 and self._not_mine_ctl(msg):
            return
        await self._control.on_ctl(msg)

    def _not_mine_ctl(self, msg: Msg) -> bool:
        if msg.subject.endswith(".reload"):
            return self.partition != 0
        try:
            target = decode_control_request(msg.data).target
        except ProtocolError:
            return self.partition != 0
        return self._foreign(target)

    async def _on_report(self, msg: Msg) -> None:
        if self.partitions > 1:
            name = msg.subject[len(self.subjects.prefix) + len(".report.") :]
            if self._foreign(name):
                return
        await self.reports.on_report(msg)

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
        """Publish what was decided while leading; keep it for a takeover while standing by."""
        if self.active:
            self._publish(events)
        elif self.standby is not None:
            self.standby.keep(events)

    def _publish(self, events: Iterable[StateChanged]) -> None:
        events = list(events)
        # Who decided, under which lease: stamped when it goes to the outbox, the one place
        # every published event passes (the core's events do not know the lease).
        holder = self.holder
        term = self.lease.term if self.lease is not None else 0
        replace = msgspec.structs.replace
        published = self.decider.published
        for decided in events:
            event = replace(decided, coordinator=holder, term=term)
            published(event)  # what control replies answer: the event as stored
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
        if self.groups.of_member:
            self.groups.on_events(events)

    async def _on_probe(self, msg: Msg) -> None:
        # Decided leading or standing by: a standby's decisions are what a takeover publishes.
        if self.active or self.standby is not None:
            self._intake.on_probe(msg)

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
        events = self.decider.reconfigure(self._mine(config.targets), self._now())
        self.groups.configure(config.groups)
        decider = self.decider
        # Members newly in a group: their current states, as the core holds them.
        self.groups.states.update(
            {m: decider.state(m)[0] for m in self.groups.of_member if m in decider and m not in self.groups.states}
        )
        for gone in [name for name in self.reports.planner.reports if name not in self.decider.names]:
            self.reports.planner.forget(gone)
        if not self.active:
            return []
        self._emit(events)
        self.groups.evaluate_all()
        return events

    # ------------------------------------------------------------------ errors

    async def error_cb(self, exc: Exception) -> None:
        """Connection error callback: counts slow-consumer drops, logs the rest (rate-limited)."""
        if isinstance(exc, SlowConsumerError):
            self.counters.drop("slow_consumer", "the probe subscription is full: messages dropped by the client")
            return
        self._error_log(type(exc).__name__, redact(str(exc), self._secrets) or "error")
