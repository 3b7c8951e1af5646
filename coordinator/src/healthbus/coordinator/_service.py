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
  current state) run from a clock, without any probe traffic. While
  NATS is disconnected no result can arrive, so timers pause; on reconnect every target
  gets a fresh ``stale_after`` grace instead of being declared unknown for the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError, SlowConsumerError
from nats.js.errors import NoStreamResponseError
from prometheus_client import CollectorRegistry

from healthbus.bus import StateStream, ensure_stream, sync_subscriptions
from healthbus.coordinator._clock import Clock, SystemClock
from healthbus.coordinator._core import ControlError, Decider, Now, Rejected
from healthbus.coordinator._leader import Lease, bucket_for, default_holder_id
from healthbus.coordinator._metrics import DECISION_BUCKETS, ServiceCollector
from healthbus.coordinator._outbox import Outbox
from healthbus.protocol import (
    CONTROL_COMMANDS,
    MAX_MESSAGE_BYTES,
    Config,
    ControlReply,
    ProbeResult,
    ProtocolError,
    StateChanged,
    StreamSettings,
    Subjects,
    decode_control_request,
    encode,
    probe_token,
    redact,
)

log = logging.getLogger("healthbus.coordinator")

#: Probe ids whose subject token is remembered (the check runs once per result; workers are few).
TOKEN_CACHE: Final = 4096

#: Pending-message limit of the probe subscription: beyond it nats-py drops (counted).
PENDING_MSGS_LIMIT: Final = 200_000
PENDING_BYTES_LIMIT: Final = 64 * 1024 * 1024
#: One log line per drop reason per this many seconds, with the count in between.
DROP_LOG_INTERVAL: Final = 10.0
#: Most queued messages handled in one callback before yielding to the event loop.
BATCH_LIMIT: Final = 512
#: Readings of the clock closer together than this (seconds) share one ``Now``.
NOW_RESOLUTION: Final = 0.001
#: How long a control request waits for its event to be acked before replying anyway.
CONTROL_ACK_TIMEOUT: Final = 5.0


_NEVER: Final = 2**62

#: The hot path decodes with its own msgspec decoder rather than
#: :func:`healthbus.protocol.decode_probe_result`: ``handle_probe`` has already checked
#: the size and matched the subject's target, so only the decoding itself is left, and
#: two Python calls per result are a measurable share of the per-result cost. Same type,
#: so the same validation (the target-name pattern included) and the same error text.
_probe_decoder: Final = msgspec.json.Decoder(ProbeResult)


class _RateLimitedLog:
    """Logs at most once per key per interval, saying how many were suppressed."""

    def __init__(self, template: str, interval: float = DROP_LOG_INTERVAL) -> None:
        self.template = template
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        extra = f" ({more} more since the last such message)" if more else ""
        log.warning(self.template, reason, detail, extra)


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
        publish_timeout: float = 2.0,
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

        self.results: dict[str, int] = {"pass": 0, "warn": 0, "fail": 0}
        self.dropped: dict[str, int] = {}
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.handled = 0
        """ProbeResult messages handled so far (decided or dropped)."""
        self.restored = 0
        self.decision_buckets = [0] * (len(DECISION_BUCKETS) + 1)
        self.decision_sum = 0.0

        self._probe_base = self.subjects.probe_legacy_all[:-1]  # "<prefix>.probe."
        self._probe_base_len = len(self._probe_base)
        self.legacy_probe_subjects = settings.legacy_probe_subjects
        """Also take results on ``<prefix>.probe.<target>`` (no probe token): rolling upgrades only."""
        self._tokens: dict[str, str] = {}  # probe id -> its subject token (a few workers: a small cache)
        self._known = self.decider.names
        self._now_cache: Now | None = None
        self._probe_sub: Any = None
        self._probe_queue: asyncio.Queue[Msg] | None = None
        self._ctl_base = self.subjects.ctl_all[:-1]  # "<prefix>.ctl."
        self._publish_log = _RateLimitedLog("%s: %s%s")
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
        self._handled_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._next_wake = _NEVER  # smallest count a waiter waits for
        self._drop_log = _RateLimitedLog("dropped a message (%s): %s%s")
        self._error_log = _RateLimitedLog("NATS %s: %s%s")
        self._secrets = list(secrets)
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._restored = False
        self._stopping = False

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
            self.lease = Lease(
                self.js,
                bucket_for(self.stream.name),
                holder=self.holder,
                ttl=self.lease_ttl,
                replicas=self.stream.replicas,
            )
            await self.lease.setup()
            if await self._first_acquire():
                await self._activate()
            else:
                log.warning(
                    "standing by: %s leads (lease %gs)", await self.lease.current_holder() or "another", self.lease_ttl
                )
            self._tasks.append(asyncio.create_task(self._lease_loop(), name="healthbus-coordinator-lease"))
        else:
            await self._activate()

    async def _first_acquire(self) -> bool:
        """Try to take the lease at start; False means stand by (the lease loop tries again).

        A replicated lease bucket created a moment ago may not have elected its leader yet
        (JetStream answers "no response from stream" or nobody answers): such errors are
        retried for a few seconds instead of failing the start.
        """
        assert self.lease is not None
        deadline = time.monotonic() + max(2.0, self.lease_ttl)
        while True:
            try:
                return await self.lease.acquire()
            except (NoStreamResponseError, NoRespondersError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    self._error_log("lease", f"not acquired at start, standing by: {exc or type(exc).__name__}")
                    return False
                await asyncio.sleep(0.1)

    async def _activate(self) -> None:
        """Become the active coordinator: fresh core, restore, subscribe, timers, outbox."""
        self.decider = self.decider.renew(self._now())
        self._known = self.decider.names
        self._now_cache = None
        self._published_before += self.outbox.published
        self.outbox = self._new_outbox()
        self.restored = 0
        await self.restore()
        sub = await self.nc.subscribe(
            self.subjects.probe_all,
            cb=self._on_probe,
            pending_msgs_limit=PENDING_MSGS_LIMIT,
            pending_bytes_limit=PENDING_BYTES_LIMIT,
        )
        self._subs.append(sub)
        queue = getattr(sub, "_pending_queue", None)
        if isinstance(queue, asyncio.Queue) and isinstance(getattr(sub, "_pending_size", None), int):
            self._probe_sub, self._probe_queue = sub, queue
        if self.legacy_probe_subjects:
            self._subs.append(await self.nc.subscribe(self.subjects.probe_legacy_all, cb=self._on_legacy_probe))
        self._subs.append(await self.nc.subscribe(self.subjects.ctl_all, cb=self._on_ctl))
        await self.outbox.start()
        # subscribe() only queues SUB: until nats-server has it, a result or a control
        # request published elsewhere reaches no one. Wait until it has them, so "active"
        # means "receiving" (nc.flush() is no such barrier in nats-py). If the connection
        # drops meanwhile, nats-py sends the SUBs again on reconnect: carry on.
        try:
            await sync_subscriptions(self.nc)
        except Exception as exc:
            self._error_log("subscribing", str(exc) or type(exc).__name__)
        self._active_tasks.append(asyncio.create_task(self._timers(), name="healthbus-coordinator-timers"))
        self.active = True
        self.activated.set()
        log.warning(
            "coordinator active: %d targets, %d restored, prefix %s, stream %s%s",
            len(self.decider.targets),
            self.restored,
            self.prefix,
            self.stream.name,
            f", leader lease {self.lease_ttl:g}s as {self.holder}" if self.lease else "",
        )

    async def _deactivate(self, *, flush_timeout: float = 0.0) -> None:
        """Stop consuming and deciding; publish what is pending for up to ``flush_timeout``."""
        self.active = False
        self.activated.clear()
        self._probe_queue = None
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
            log.warning("stopping with %d StateChanged unpublished; they will be decided again", self.outbox.pending)
        await self.outbox.stop()
        self._restored = False

    async def _lease_loop(self) -> None:
        assert self.lease is not None
        lease = self.lease
        while True:
            await asyncio.sleep(lease.ttl / 4)
            try:
                if self.active:
                    renewed = await lease.renew()
                    if renewed is False:
                        if lease.interrupted:
                            log.warning("the leader lease lapsed and another coordinator led meanwhile: restoring")
                        else:
                            holder = await lease.current_holder()
                            log.warning("lost the leader lease to %s: stepping down", holder or "another coordinator")
                        await self._deactivate()
                elif self.nc.is_connected and await lease.acquire():
                    log.warning("took the leader lease: taking over")
                    await self._activate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: the next round tries again
                self._error_log("lease", str(exc) or type(exc).__name__)

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

    async def restore(self) -> None:
        """Seed the core with every target's last StateChanged from the stream."""
        reader = StateStream(self.nc, self.prefix, stream=self.stream.name)
        current = await reader.current(timeout=self.restore_timeout)
        now = self._now()
        for event in current.values():
            if self.decider.restore(event, now):
                self.restored += 1
                self.outbox.mark_acked(event.target, event.seq)
        ignored = len(current) - self.restored
        if ignored:
            log.info("restore: %d targets in the stream are not configured; ignored", ignored)
        self._restored = True

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
        await self._deactivate(flush_timeout=flush_timeout)
        if self.lease is not None:
            await self.lease.release()
        for _, fut in self._handled_waiters:
            if not fut.done():
                fut.cancel()

    async def __aenter__(self) -> CoordinatorService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_handled(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` ProbeResult messages in total have been handled."""
        if self.handled >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handled_waiters.append((n, fut))
        self._next_wake = min(self._next_wake, n)
        async with asyncio.timeout(timeout):
            await fut

    async def wait_published(self, target: str, seq: int, timeout: float = 10.0) -> None:
        """Wait until ``target``'s event ``seq`` has been acked by JetStream."""
        async with asyncio.timeout(timeout):
            await self.outbox.wait_acked(target, seq)

    # ------------------------------------------------------------------ hot path

    def _now(self) -> Now:
        # Reading the wall clock costs more than deciding; within one millisecond the
        # previous reading is as good (decisions and wire timestamps need no finer).
        mono = self.clock.monotonic()
        cached = self._now_cache
        if cached is not None and 0.0 <= mono - cached.mono < NOW_RESOLUTION:
            return cached
        cached = self._now_cache = Now(mono, self.clock.now())
        return cached

    def _drop(self, reason: str, detail: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._drop_log(reason, detail)

    async def _on_probe(self, msg: Msg) -> None:
        self.handle_probe(msg.subject, msg.data)
        # Batch: take whatever else is already queued without a task switch and a
        # coroutine per message (that overhead is as large as decoding and deciding).
        # It uses nats-py's per-subscription queue, exactly as its own dispatcher does
        # (size accounting and task_done included); without one, one message per call.
        queue = self._probe_queue
        if queue is None:
            return
        sub = self._probe_sub
        for _ in range(BATCH_LIMIT):
            try:
                more = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                sub._pending_size -= len(more.data)
                self.handle_probe(more.subject, more.data)
            finally:
                queue.task_done()

    async def _on_legacy_probe(self, msg: Msg) -> None:
        self.handle_probe(msg.subject, msg.data)

    def handle_probe(self, subject: str, data: bytes) -> None:
        """Decode and decide one ProbeResult message (synchronous: the hot path).

        The subject names the target and the probe (``<prefix>.probe.<target>.<probe>``);
        the payload must agree with both, so a credential allowed to publish only its own
        probe's subjects speaks only for its own vantage point."""
        self.handled += 1
        try:
            name, dot, token = subject[self._probe_base_len :].partition(".")
            if name not in self._known:
                self._drop("unknown_target", f"no target {name[:80]!r} in the configuration (subject {subject[:120]})")
                return
            if not dot and not self.legacy_probe_subjects:
                self._drop(
                    "legacy_subject",
                    f"{subject[:120]} names no probe (accepted only with [coordinator] legacy_probe_subjects)",
                )
                return
            if len(data) > MAX_MESSAGE_BYTES:
                self._drop("oversized", f"{len(data)} bytes on {subject}")
                return
            try:
                result = _probe_decoder.decode(data)
            except msgspec.DecodeError as exc:
                # The text decode_probe_result's ProtocolError would carry.
                self._drop("malformed", f"on {subject}: {f'invalid ProbeResult: {exc}'[:300]}")
                return
            if result.target != name:
                self._drop("subject_mismatch", f"target {result.target!r} published on {subject}")
                return
            if dot:
                expected = self._tokens.get(result.probe)
                if expected is None:
                    if len(self._tokens) >= TOKEN_CACHE:
                        self._tokens.clear()  # bounded whatever ids arrive
                    expected = self._tokens[result.probe] = probe_token(result.probe)
                if expected != token:
                    self._drop("probe_mismatch", f"probe {result.probe[:80]!r} published on {subject[:160]}")
                    return
                if result.probe != token:
                    # One vantage point per subject token: ids that differ only in characters
                    # a token cannot hold ("web.1", "web 1") are the same vantage point.
                    result = msgspec.structs.replace(result, probe=token)
            sample = (self.handled & 63) == 0
            started = time.perf_counter() if sample else 0.0
            try:
                events = self.decider.on_result(result, self._now())
            except Rejected as exc:
                self._drop(exc.reason, f"{name} from probe {result.probe[:80]!r}: {exc}")
                return
            self.results[result.outcome] += 1
            if events:
                self._enqueue(events)
            if sample:
                self._observe(time.perf_counter() - started)
        finally:
            if self.handled >= self._next_wake:
                self._wake_waiters()

    def _observe(self, seconds: float) -> None:
        self.decision_sum += seconds
        for i, bound in enumerate(DECISION_BUCKETS):
            if seconds <= bound:
                self.decision_buckets[i] += 1
                return
        self.decision_buckets[-1] += 1

    def _wake_waiters(self) -> None:
        keep = []
        for n, fut in self._handled_waiters:
            if fut.done():
                continue
            if self.handled >= n:
                fut.set_result(None)
            else:
                keep.append((n, fut))
        self._handled_waiters = keep
        self._next_wake = min((n for n, _ in keep), default=_NEVER)

    def _enqueue(self, events: Iterable[StateChanged]) -> None:
        for event in events:
            key = (event.target, event.previous, event.state)
            self.transitions[key] = self.transitions.get(key, 0) + 1
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

    # ------------------------------------------------------------------ timers

    async def _timers(self) -> None:
        connected = self.nc.is_connected
        while True:
            now = self._now()
            if self.nc.is_connected:
                if not connected:
                    log.info("NATS reconnected: every target gets a fresh stale_after before it can turn unknown")
                    self.decider.restart_grace(now)
                    connected = True
                events = self.decider.tick(now)
                if events:
                    self._enqueue(events)
            else:
                connected = False
            await asyncio.sleep(self._timer_wait())

    def _timer_wait(self) -> float:
        """Seconds the timer loop sleeps: until the next deadline, at most ``tick``.

        While NATS is disconnected the timers do not run, so a deadline already due stays
        due: it must not shorten the sleep, or the loop would spin every millisecond for
        the whole outage.
        """
        wait = self.tick_interval
        deadline = self.decider.next_deadline()
        if deadline is not None and self.nc.is_connected:
            wait = min(wait, max(0.001, deadline - self.clock.monotonic()))
        return wait

    # ------------------------------------------------------------------ control

    async def _on_ctl(self, msg: Msg) -> None:
        reply = await self.handle_control(msg.subject[len(self._ctl_base) :], msg.data)
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(encode(reply))

    async def handle_control(self, command: str, data: bytes) -> ControlReply:
        """Apply one control request; the reply carries the resulting (or current) event."""
        if command not in CONTROL_COMMANDS:
            self._drop("bad_control", f"unknown command {command[:40]!r}")
            return ControlReply(ok=False, error=f"unknown command {command!r}; expected one of {CONTROL_COMMANDS}")
        try:
            request = decode_control_request(data)
        except ProtocolError as exc:
            self._drop("bad_control", str(exc)[:300])
            return ControlReply(ok=False, error=str(exc))
        try:
            events = self.decider.control(command, request.target, request.reason, self._now())
        except ControlError as exc:
            return ControlReply(ok=False, error=str(exc))
        log.warning("operator %s on %s: %s", command, request.target, request.reason or "no reason given")
        if events:
            self._enqueue(events)
            try:
                await self.wait_published(events[-1].target, events[-1].seq, CONTROL_ACK_TIMEOUT)
            except TimeoutError:
                return ControlReply(
                    ok=True, error="applied, but not yet published: the state stream is unreachable", event=events[-1]
                )
        return ControlReply(ok=True, event=self.decider.current(request.target))

    # ------------------------------------------------------------------ errors

    async def error_cb(self, exc: Exception) -> None:
        """Connection error callback: counts slow-consumer drops, logs the rest (rate-limited)."""
        if isinstance(exc, SlowConsumerError):
            self._drop("slow_consumer", "the probe subscription is full: messages dropped by the client")
            return
        self._error_log(type(exc).__name__, redact(str(exc), self._secrets) or "error")
