"""The probe worker: runs every assigned target's checks and publishes the results.

Invariants:

* Each target has its own task; a check runs under a hard timeout of the target's
  ``timeout`` and a slow or hanging dependency never delays another target.
* Checks of one target never overlap; the cadence is :class:`TargetSchedule`'s.
* A target whose last StateChanged has its breaker open (or forced open) with
  ``retry_at`` in the future is not checked before ``retry_at``, and is checked at once
  when it passes (the trial); while the breaker is open (past ``retry_at``) or
  half-open it is trial-checked every ``trial_interval``, whatever the outcome.
* Every published text went through redaction with the target's secrets; a log line
  names the target and the kind of failure, never a credential, and is written when a
  target's outcome changes, not on every check (no log spam while a dependency is down).
* Clients are built before the first connection to NATS (a missing driver fails at
  start-up), reused between checks, and closed on :meth:`ProbeWorker.stop`.
* With sharding, a target is checked by the ``replicas`` live workers chosen by
  rendezvous hashing (:mod:`._sharding`); without it, by every worker.
* A ConfirmRequest on ``<prefix>.confirm.<target>`` (sent by the coordinator after
  failure reports from services) makes a target this worker checks due at once, with its
  usual timeout, unless the breaker holds it until ``retry_at`` (then it is ignored and
  counted); other targets' requests are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from healthbus.bus import sync_subscriptions
from healthbus.probes._base import Checker, CheckResult, short, target_secrets
from healthbus.probes._checkers import build_checker
from healthbus.probes._classify import classify_generic
from healthbus.probes._schedule import TRIAL_BREAKERS, TargetSchedule, hold_until
from healthbus.probes._sharding import Membership, assigned
from healthbus.protocol import (
    Config,
    ProbeResult,
    ProtocolError,
    StateChanged,
    Subjects,
    TargetConfig,
    WorkerHeartbeat,
    decode_confirm_request,
    decode_worker_heartbeat,
    encode,
    format_duration,
    worker_token,
)
from healthbus.protocol.clock import Clock, SystemClock, sleep_until_set

log = logging.getLogger("healthbus.probes")

#: Histogram buckets for check latency, seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: With sharding, how long a new worker listens for the others before taking targets,
#: in heartbeats (so it does not check everything for a moment and then shed it).
LISTEN_BEFORE_ASSIGN: Final = 1.2

#: Retry period while the state stream cannot be read (e.g. no coordinator yet). Short,
#: because a verdict published before the worker follows the stream is only seen once it
#: does (the probe role may read state through JetStream only, not as core NATS).
STATE_RETRY_S: Final = 0.5

#: How long start-up waits for the current states before the first checks.
STATE_CATCH_UP_S: Final = 2.0

#: How long closing one client may take at shutdown.
CLOSE_TIMEOUT_S: Final = 2.0

CheckerFactory = Callable[[TargetConfig], Checker]


def default_worker_id() -> str:
    """Host name + pid: stable for the life of the process, distinct between processes."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def cancel_all(tasks: list[asyncio.Task[None]], *, rounds: int = 20, wait: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again while any is left.

    On Python 3.11 a cancellation that lands just as an ``asyncio.timeout`` expires can
    come out as a ``TimeoutError`` (fixed in 3.12), which a check loop handles and goes
    on: so one ``cancel()`` is not enough to be sure a task ends.
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
    if pending:
        log.warning("%d probe tasks did not stop", len(pending))


class ProbeMetrics:
    """The worker's Prometheus metrics, in its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.checks = Counter(
            "healthbus_probe_checks", "Checks run, by target and outcome", ["target", "outcome"], registry=registry
        )
        self.check_seconds = Histogram(
            "healthbus_probe_check_seconds",
            "Time a check took",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.skipped = Counter(
            "healthbus_probe_skipped",
            "Checks not run, by target and reason (breaker_open: the coordinator's backoff)",
            ["target", "reason"],
            registry=registry,
        )
        self.publish_errors = Counter(
            "healthbus_probe_publish_errors", "Results that could not be published", registry=registry
        )
        self.dropped = Counter(
            "healthbus_probe_dropped_messages",
            "Messages received and dropped, by reason (malformed: not a valid worker heartbeat; "
            "subject_mismatch: a heartbeat not on its own worker's subject)",
            ["reason"],
            registry=registry,
        )
        self.confirms = Counter(
            "healthbus_probe_confirms",
            "Confirmation requests, by target and result (checked: answered by a check now; "
            "held: ignored while the breaker holds the target until retry_at)",
            ["target", "result"],
            registry=registry,
        )
        self.assigned = Gauge("healthbus_probe_assigned_targets", "Targets this worker checks now", registry=registry)
        self.live_workers = Gauge(
            "healthbus_probe_live_workers", "Probe workers heard from (this one included)", registry=registry
        )
        self.connected = Gauge("healthbus_probe_connected", "1 while connected to NATS", registry=registry)
        self.following_state = Gauge(
            "healthbus_probe_following_state",
            "1 once the coordinator's verdicts are followed (open breakers honoured)",
            registry=registry,
        )


class ProbeWorker:
    """One vantage point: checks its targets on schedule and publishes ProbeResults.

    Build it (checkers are created here, without I/O), ``await start(nc)``, and
    ``await stop()`` to finish: in-flight checks are cancelled and every client closed.
    """

    def __init__(
        self,
        config: Config,
        *,
        worker_id: str | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        checker_factory: CheckerFactory = build_checker,
        follow_state: bool = True,
    ) -> None:
        self.config = config
        self.worker_id = worker_id or default_worker_id()
        if not 1 <= len(self.worker_id) <= 128:
            raise ValueError(f"worker id must be 1-128 characters, got {len(self.worker_id)}")
        self.subjects = Subjects(config.bus.prefix)
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.metrics = ProbeMetrics(registry or CollectorRegistry())
        self.targets: dict[str, TargetConfig] = {t.name: t for t in config.targets}
        # Every checker is built now: a missing driver or a bad option fails before any I/O.
        self._checker_factory = checker_factory
        self.checkers: dict[str, Checker] = {name: checker_factory(t) for name, t in self.targets.items()}
        self._secrets = {name: target_secrets(t) for name, t in self.targets.items()}
        self.sharding = config.probes.sharding
        self.replicas = config.probes.workers_per_target
        self.heartbeat = float(config.probes.heartbeat)
        self.membership = Membership(self.worker_id, heartbeat=self.heartbeat)
        self.follow_state = follow_state
        self.schedules: dict[str, TargetSchedule] = {}
        self.last_state: dict[str, StateChanged] = {}
        self.last_results: dict[str, ProbeResult] = {}
        self._nc: Client | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._background: list[asyncio.Task[None]] = []
        self._heartbeat_sub: Subscription | None = None
        self._confirm_sub: Subscription | None = None
        self.confirm_checks = 0
        """Checks run to answer a confirmation request (also ``healthbus_probe_confirms``)."""
        self._follower: object | None = None
        self._assigned_once = asyncio.Event()
        self._assignment_changed = asyncio.Event()
        self._state_seen = asyncio.Event()
        self._started = False
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def nc(self) -> Client:
        """The NATS connection (after :meth:`start`)."""
        if self._nc is None:
            raise RuntimeError("the worker is not started")
        return self._nc

    @property
    def ready(self) -> bool:
        """Started, targets assigned, and connected to NATS."""
        return self._started and self._assigned_once.is_set() and self._nc is not None and self._nc.is_connected

    @property
    def assigned_targets(self) -> set[str]:
        """The targets this worker checks now."""
        return set(self._tasks)

    async def start(self, nc: Client) -> None:
        """Begin: heartbeats, following the coordinator's verdicts, and the checks."""
        self._nc = nc
        self.metrics.connected.set_function(lambda: 1.0 if nc.is_connected else 0.0)
        self._heartbeat_sub = await nc.subscribe(self.subjects.worker("heartbeat", "*"), cb=self._on_heartbeat)
        self._confirm_sub = await nc.subscribe(self.subjects.confirm_all, cb=self._on_confirm)
        # subscribe() only queues SUB: make sure nats-server has it before start() returns,
        # so a peer's heartbeat sent right after is not missed (nc.flush() is no such
        # barrier in nats-py). A dropped connection re-sends its SUBs on reconnect: carry on.
        with contextlib.suppress(Exception):
            await sync_subscriptions(nc)
        if self.follow_state and not await self._try_follow(announce=True):
            # No state stream yet (no coordinator so far): check on schedule, keep trying.
            self._background.append(asyncio.create_task(self._follow_states(), name="healthbus-probe-state"))
        self._background.append(asyncio.create_task(self._heartbeat_loop(), name="healthbus-probe-heartbeat"))
        if not self.sharding:
            self._reassign()
        self._started = True

    async def wait_assigned(self, timeout: float | None = None) -> None:
        """Wait until targets have been assigned (at once without sharding)."""
        await asyncio.wait_for(self._assigned_once.wait(), timeout)

    async def wait_assignment(self, predicate: Callable[[set[str]], bool], timeout: float | None = None) -> set[str]:
        """Wait until the assigned targets satisfy ``predicate`` (for tests and tools)."""
        async with asyncio.timeout(timeout):
            while True:
                self._assignment_changed.clear()
                if self._assigned_once.is_set() and predicate(self.assigned_targets):
                    return self.assigned_targets
                await self._assignment_changed.wait()

    async def wait_state(self, target: str, seq: int, timeout: float | None = None) -> StateChanged:
        """Wait until the verdict ``seq`` (or a later one) of ``target`` has been applied."""
        async with asyncio.timeout(timeout):
            while True:
                self._state_seen.clear()
                event = self.last_state.get(target)
                if event is not None and event.seq >= seq:
                    return event
                await self._state_seen.wait()

    async def stop(self) -> None:
        """Stop: announce leaving, cancel checks, close every client. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        nc = self._nc
        if nc is not None and nc.is_connected and self._started:
            with contextlib.suppress(Exception):
                await self._publish_heartbeat(stopping=True)
        await cancel_all([*self._background, *self._tasks.values()])
        self._background.clear()
        self._tasks.clear()
        stop = getattr(self._follower, "stop", None)
        if stop is not None:
            with contextlib.suppress(Exception):
                await stop()
        for sub in (self._heartbeat_sub, self._confirm_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        await asyncio.gather(*(self._close_checker(name) for name in self.checkers))
        if nc is not None and nc.is_connected:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=1)

    async def _close_checker(self, name: str, checker: Checker | None = None, secrets: list[str] | None = None) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await (checker or self.checkers[name]).close()
        except Exception as exc:  # a client that fails to close must not stop the others
            hidden = self._secrets[name] if secrets is None else secrets
            log.warning("target %s: closing its client failed: %s", name, short(str(exc), hidden))

    async def reload(self, config: Config) -> str:
        """Check ``config``'s targets from now on (a live reload); a one-line summary.

        Added targets are checked at once, changed ones restart with their new settings
        (a new client), removed ones stop and close their client. The new checkers are
        built first: a missing driver or a bad option raises and changes nothing. Only
        ``[[targets]]`` are reloaded; the other sections need a restart.
        """
        new = {t.name: t for t in config.targets}
        added = sorted(n for n in new if n not in self.targets)
        removed = sorted(n for n in self.targets if n not in new)
        changed = sorted(n for n in new if n in self.targets and self.targets[n] != new[n])
        checkers = {n: self._checker_factory(new[n]) for n in (*added, *changed)}  # may raise: nothing changed yet
        going = [*removed, *changed]
        tasks = [self._tasks.pop(n) for n in going if n in self._tasks]
        for name in going:
            self.schedules.pop(name, None)
            self._wake.pop(name, None)
        await cancel_all(tasks)
        old = [(n, self.checkers.pop(n), self._secrets.pop(n)) for n in going]
        for name in removed:
            del self.targets[name]
            self.last_state.pop(name, None)
            self.last_results.pop(name, None)
        for name, checker in checkers.items():
            self.targets[name] = new[name]
            self.checkers[name] = checker
            self._secrets[name] = target_secrets(new[name])
        self.config = msgspec.structs.replace(self.config, targets=list(self.targets.values()))
        await asyncio.gather(*(self._close_checker(n, c, secrets) for n, c, secrets in old))
        self._reassign()
        return f"{len(self.targets)} targets ({len(added)} added, {len(changed)} changed, {len(removed)} removed)"

    # ------------------------------------------------------------------ assignment
    def _wanted(self) -> set[str]:
        if not self.sharding:
            return set(self.targets)
        return assigned(self.targets, self.membership.live(), self.replicas, self.worker_id)

    def _reassign(self) -> None:
        """Start tasks for targets newly ours, stop (and close) the ones no longer ours."""
        if self._stopping:
            return
        self._background = [t for t in self._background if not t.done()]
        wanted = self._wanted()
        current = set(self._tasks)
        for name in sorted(wanted - current):
            self._start_target(name)
        for name in sorted(current - wanted):
            task = self._tasks.pop(name)
            self.schedules.pop(name, None)
            self._wake.pop(name, None)
            task.cancel()
            self._background.append(asyncio.create_task(self._after_cancel(task, name)))
        if wanted != current:
            log.info(
                "worker %s checks %d of %d targets (%d live workers)",
                self.worker_id,
                len(wanted),
                len(self.targets),
                len(self.membership.live()),
            )
        self.metrics.assigned.set(len(self._tasks))
        self.metrics.live_workers.set(len(self.membership.live()))
        self._assigned_once.set()
        self._assignment_changed.set()

    async def _after_cancel(self, task: asyncio.Task[None], name: str) -> None:
        await cancel_all([task])
        if name not in self._tasks:  # not re-assigned meanwhile: free its connection
            await self._close_checker(name)

    def _start_target(self, name: str) -> None:
        target = self.targets[name]
        now = self.clock.monotonic()
        schedule = TargetSchedule(
            interval=float(target.interval),
            retry_interval=target.effective_retry_interval,
            jitter=self.config.probes.spread,
            rng=self.rng,
            now=now,
            trial_interval=float(target.trial_interval),
        )
        event = self.last_state.get(name)
        if event is not None:
            schedule.hold(hold_until(event, wall_now=self.clock.now(), mono_now=now), now)
            schedule.trial(event.breaker in TRIAL_BREAKERS, now)
        self.schedules[name] = schedule
        self._wake[name] = asyncio.Event()
        self._tasks[name] = asyncio.create_task(self._target_loop(name, schedule), name=f"healthbus-probe-{name}")

    # ------------------------------------------------------------------ checking
    async def _target_loop(self, name: str, schedule: TargetSchedule) -> None:
        wake = self._wake[name]
        me = asyncio.current_task()
        # The loop also ends when the target is no longer ours or the worker stops, even
        # if a cancellation was lost (see cancel_all).
        while not self._stopping and self._tasks.get(name) is me:
            wake.clear()
            now = self.clock.monotonic()
            action = schedule.poll(now)
            if action == "check":
                confirming = schedule.take_confirm()
                result = await self.check_once(name)
                schedule.record(result.outcome, now, self.clock.monotonic())
                if confirming:
                    self.confirm_checks += 1
                    self.metrics.confirms.labels(name, "checked").inc()
            elif action == "skip":
                self.metrics.skipped.labels(name, "breaker_open").inc()
            else:
                await sleep_until_set(self.clock, wake, schedule.wake_at() - now)

    async def check_once(self, name: str) -> ProbeResult:
        """Check ``name`` now under its hard timeout, publish the result and return it."""
        target = self.targets[name]
        checker = self.checkers[name]
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(float(target.timeout)):
                result = await checker.check()
        except TimeoutError:
            result = CheckResult(
                outcome="fail",
                error_kind="timeout",
                error=f"no answer within {format_duration(float(target.timeout))}",
            )
        except Exception as exc:  # a checker bug: report it like any failure, never crash the loop
            kind, text = classify_generic(exc)
            result = CheckResult(outcome="fail", error_kind=kind, error=short(text, self._secrets[name]))
        elapsed = max(0.0, self.clock.monotonic() - started)
        if result.outcome == "pass" and target.warn_latency is not None and elapsed > float(target.warn_latency):
            result = CheckResult(
                outcome="warn",
                error=f"slow: {elapsed * 1000:.0f}ms, above warn_latency {format_duration(float(target.warn_latency))}",
                details=result.details,
            )
        probe = ProbeResult(
            target=name,
            probe=self.worker_id,
            outcome=result.outcome,
            latency_ms=round(elapsed * 1000, 3),
            observed_at=self.clock.now(),
            error_kind=result.error_kind if result.outcome != "pass" else None,
            error=result.error,
            details=result.details,
        )
        self.metrics.checks.labels(name, probe.outcome).inc()
        self.metrics.check_seconds.labels(name).observe(elapsed)
        self._log_change(probe)
        self.last_results[name] = probe
        await self._publish(self.subjects.probe(name, self.worker_id), encode(probe))
        return probe

    def _log_change(self, probe: ProbeResult) -> None:
        previous = self.last_results.get(probe.target)
        if previous is not None and previous.outcome == probe.outcome and previous.error_kind == probe.error_kind:
            return
        if probe.outcome == "fail":
            log.warning("target %s: fail (%s): %s", probe.target, probe.error_kind, probe.error)
        elif probe.outcome == "warn" and probe.error_kind is not None:
            log.warning("target %s: warn (%s): %s", probe.target, probe.error_kind, probe.error)
        elif probe.outcome == "warn":
            log.warning("target %s: warn: %s", probe.target, probe.error)
        elif previous is not None:
            log.info("target %s: pass again", probe.target)
        else:
            log.info("target %s: pass", probe.target)

    async def _publish(self, subject: str, data: bytes) -> None:
        try:
            await self.nc.publish(subject, data)
        except Exception as exc:  # closed or overfull connection: count it, keep checking
            self.metrics.publish_errors.inc()
            log.debug("publish to %s failed: %s", subject, type(exc).__name__)

    # ------------------------------------------------------------------ coordinator's verdicts
    async def _try_follow(self, *, announce: bool) -> bool:
        """Follow the state stream; True once the current states have been read.

        Waiting for the current states before the first check means a target already
        open when the worker starts is not checked before its retry_at either.
        """
        from healthbus.bus import Follower, StateStream

        stream = StateStream(self.nc, self.config.bus.prefix)
        try:
            follower: Follower = await stream.follow(self.on_state, start="last_per_subject")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if announce:
                log.info(
                    "state stream %s not readable yet (%s); checking on schedule until it is",
                    stream.stream,
                    type(exc).__name__,
                )
            return False
        self._follower = follower
        self.metrics.following_state.set(1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follower.caught_up.wait(), STATE_CATCH_UP_S)
        return True

    async def _follow_states(self) -> None:
        while not self._stopping:
            await self.clock.sleep(STATE_RETRY_S)
            if await self._try_follow(announce=False):
                log.info("following the state stream: open breakers are now honoured")
                return

    def on_state(self, event: StateChanged) -> None:
        """Apply a coordinator verdict: hold a target with an open breaker until retry_at."""
        if event.target not in self.targets:
            return
        old = self.last_state.get(event.target)
        if old is not None and old.seq > event.seq:
            return
        self.last_state[event.target] = event
        self._state_seen.set()
        schedule = self.schedules.get(event.target)
        if schedule is None:
            return
        now = self.clock.monotonic()
        until = hold_until(event, wall_now=self.clock.now(), mono_now=now)
        schedule.hold(until, now)
        schedule.trial(event.breaker in TRIAL_BREAKERS, now)
        if until is not None:
            log.info("target %s: breaker %s, next check at retry_at %s", event.target, event.breaker, event.retry_at)
        wake = self._wake.get(event.target)
        if wake is not None:
            wake.set()

    async def _on_confirm(self, msg: Msg) -> None:
        """A confirmation request: check the target now if it is ours and not held."""
        name = self.subjects.confirm_target(msg.subject)
        try:
            decode_confirm_request(msg.data, subject_target=name)
        except ProtocolError:
            self.metrics.dropped.labels("malformed_confirm").inc()
            return
        schedule = self.schedules.get(name) if name is not None else None
        if name is None or schedule is None:
            return  # not a target this worker checks (sharding, or not configured here)
        if not schedule.confirm(self.clock.monotonic()):
            self.metrics.confirms.labels(name, "held").inc()
            return
        wake = self._wake.get(name)
        if wake is not None:
            wake.set()

    # ------------------------------------------------------------------ membership
    async def _publish_heartbeat(self, *, stopping: bool = False) -> None:
        beat = WorkerHeartbeat(
            worker=self.worker_id,
            at=self.clock.now(),
            heartbeat_s=self.heartbeat,
            sharding=self.sharding,
            targets=len(self._tasks),
            stopping=stopping,
        )
        await self._publish(self.subjects.worker("heartbeat", worker_token(self.worker_id)), encode(beat))

    async def _heartbeat_loop(self) -> None:
        await self._publish_heartbeat()
        if self.sharding:
            await self.clock.sleep(self.heartbeat * LISTEN_BEFORE_ASSIGN)  # hear the others first
            self.membership.expire(self.clock.monotonic())
            self._reassign()
        while True:
            await self.clock.sleep(self.heartbeat)
            await self._publish_heartbeat()
            if self.membership.expire(self.clock.monotonic()) and self.sharding:
                self._reassign()
            self.metrics.live_workers.set(len(self.membership.live()))

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode_worker_heartbeat(msg.data)
        except (ProtocolError, msgspec.DecodeError):
            # Not ours to crash on: a stray or malformed message on the worker subject.
            self.metrics.dropped.labels("malformed").inc()
            return
        if msg.subject.rpartition(".")[2] != worker_token(beat.worker):
            # A credential heartbeats only as its own worker (deploy/ allows each worker
            # only its own subject): a heartbeat naming another worker claims nothing.
            self.metrics.dropped.labels("subject_mismatch").inc()
            return
        if self.sharding and not beat.sharding and not beat.stopping:
            return  # a worker that checks everything takes no share of ours
        changed = self.membership.heard(
            beat.worker, self.clock.monotonic(), stopping=beat.stopping, heartbeat=beat.heartbeat_s
        )
        if changed:
            self.metrics.live_workers.set(len(self.membership.live()))
            if self.sharding and self._assigned_once.is_set():
                self._reassign()
