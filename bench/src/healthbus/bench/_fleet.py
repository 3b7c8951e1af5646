"""Suite ``fleet``: N service instances, each with its own NATS connection, on one nats-server.

Each instance is a ``HealthClient`` with its own connection, as in a real fleet; they
are spread over up to 20 worker processes (the open-files limit is raised to its hard
limit for them and for nats-server). The suite plays the coordinator itself: it publishes
StateChanged events into the state stream exactly as the coordinator does (JetStream,
``Nats-Msg-Id``), so the figures are the subscribers' and the server's, not a decision's.

Measured for each design in the same run, on the same server:

- ``jetstream_consumers_peak``: the most consumers the account held (``$JS.API.INFO``,
  sampled every 0.25 s) while the fleet ran.
- ``nats_server_rss_mb`` / ``nats_server_cpu_s``: the server's resident memory, and the
  CPU seconds it used over ``steady_window_s`` seconds of an idle, connected fleet.
- ``flip_all_*``: for each published transition (the next one only once every following
  instance has the last, so none queues behind another), the time from its publish until every
  instance's ``on_change`` callback ran (over the transitions every instance saw; null
  when some instance never saw any). ``flip_seen_p99_ms``: the same until the last
  instance that saw it, for a design where some instances never follow.
- ``reconnect_caught_up_s``: nats-server is stopped and started again on the same port
  and store; one transition is published as soon as it accepts connections again (while
  the fleet is still reconnecting); the time until every instance has it. Like the
  coordinator, the suite publishes a StateDigest every 0.5 s, at once when its own
  connection comes back and every 0.1 s for 5 s after (``healthbus.bus.DigestPublisher``),
  with the last stored event of the targets that changed last, so instances that reconnect
  apply what they missed from it and read only what it does not carry. Each worker
  process freezes its objects out of the garbage collector once its instances are open
  (``gc.freeze()``, every design alike): a full collection over hundreds of instances in
  one process is a pause no real instance has.
- ``resync_requests`` / ``resync_timeouts`` / ``resync_reloads``: the requests the fleet
  sent to the state stream to catch up after the restart (``HealthClient.resync``, summed
  over every instance), how many of them nothing answered in time, and how many instances
  reloaded every state instead of reading what the digest showed changed.
- ``reconnect_cpu_ms_per_instance`` / ``reconnect_server_cpu_ms_per_instance``: the CPU
  the fleet's worker processes (from just before the restart) and nats-server (from its
  return) used until every instance had the transition, per instance. On a machine whose
  cores play the whole fleet, these bound ``reconnect_caught_up_s`` from below
  (instances × CPU per instance / cores), whatever the design's waits.
- ``baseline_reconnect_s``: the same number of plain nats-py core subscribers of
  ``<prefix>.state.*`` (each on its own connection, no catch-up at all), nats-server
  restarted the same way: the time from its return (``astart`` done: the moment the
  transition above is published) until the last of them is reconnected (its subscription
  sent again; 0 when all were back before the server said it was ready). What
  reconnecting alone costs on this machine, so ``reconnect_caught_up_s`` over it shows
  what catching up adds.
  ``baseline_reconnect_cpu_ms_per_instance`` / ``baseline_reconnect_server_cpu_ms_per_instance``:
  their processes' and nats-server's CPU until then, per instance.
- ``missed_transitions``: (instance, transition) pairs never seen within the time allowed.
- ``client_rss_kb_per_instance``: worker RSS growth per instance.

``baseline_*``: the design HealthClient replaced, one JetStream ordered consumer per
instance (plain nats-py: ``deliver_policy=last_per_subject``, 1 s idle heartbeat, each on
its own connection), so the cost of a consumer per instance is seen beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import machine_description, now_ns, percentile, rss_bytes
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._procs import Child, ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import target_names
from healthbus.bus import DigestPublisher, connect
from healthbus.protocol import (
    MAX_DIGEST_EVENTS,
    BusSettings,
    StateChanged,
    StreamSettings,
    Subjects,
    decode_state_changed,
    encode,
    utcnow,
)

__all__ = ["run"]

log = logging.getLogger("healthbus.bench.fleet")

PREFIX = "benchfleet"
MAX_PROCESSES = 20
CONNECT_CONCURRENCY = 20  # connections a worker opens at once
TARGETS = 10
DIGEST_INTERVAL = 0.5  # the coordinator's default [coordinator] digest_interval
Key = tuple[str, int]  # (target, seq)


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Seen:
    """Per transition: how many of this process's instances ran their callback, and the last time."""

    def __init__(self) -> None:
        self.count: dict[Key, int] = {}
        self.last_ns: dict[Key, int] = {}

    def note(self, target: str, seq: int) -> None:
        """An instance's callback ran for (target, seq) now."""
        at = now_ns()
        key = (target, seq)
        self.count[key] = self.count.get(key, 0) + 1
        if at > self.last_ns.get(key, 0):
            self.last_ns[key] = at

    def report(self) -> list[tuple[str, int, int, int]]:
        """``(target, seq, count, last_ns)`` for every transition seen."""
        return [(t, s, n, self.last_ns[(t, s)]) for (t, s), n in self.count.items()]


# ---------------------------------------------------------------- child roles


class Instances:
    """One worker's instances: how to close them, their catch-up counts, their reconnect times."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], Any]] = []
        self.clients: list[Any] = []  # HealthClients (their ``resync`` counts)
        self.reconnected_ns: list[int] = []  # plain subscribers: when each last reconnected

    def stats(self) -> tuple[int, int, int, int, int, float]:
        """``(requests, timeouts, reloads, reconnected, last reconnect ns, process CPU s)`` of this worker."""
        requests = sum(c.resync.requests for c in self.clients)
        timeouts = sum(c.resync.timeouts for c in self.clients)
        reloads = sum(c.resync.reloads for c in self.clients)
        done = [t for t in self.reconnected_ns if t]
        return requests, timeouts, reloads, len(done), max(done, default=0), time.process_time()


async def _open_health_client(url: str, seen: Seen, instances: Instances) -> None:
    from healthbus.bench._harness import connect_health_client

    health = await connect_health_client(url, PREFIX, connect_timeout=120.0, stale_after=600.0)
    health.on_change(lambda event: seen.note(event.target, event.seq))
    instances.closers.append(health.close)
    instances.clients.append(health)


async def _open_plain_subscriber(url: str, seen: Seen, instances: Instances) -> None:
    """A plain nats-py core subscriber of the state subjects: no stream, no catch-up."""
    index = len(instances.reconnected_ns)
    instances.reconnected_ns.append(0)

    async def reconnected() -> None:
        instances.reconnected_ns[index] = now_ns()

    nc = await bench_connect(
        url,
        "bench-fleet-plain",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        reconnected_cb=reconnected,
    )

    async def on_msg(msg: Msg) -> None:
        event = decode_state_changed(msg.data)
        seen.note(event.target, event.seq)

    try:
        await nc.subscribe(Subjects(PREFIX).state_all, cb=on_msg)
    except Exception:
        await nc.close()
        raise
    instances.closers.append(nc.close)


async def _open_ordered_consumer(url: str, seen: Seen, instances: Instances) -> None:
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await bench_connect(
        url, "bench-fleet-consumer", allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5
    )
    subjects = Subjects(PREFIX)
    known: dict[str, int] = {}

    async def on_msg(msg: Msg) -> None:
        event = decode_state_changed(msg.data)
        if event.seq > known.get(event.target, 0):  # what HealthClient's table did: drop old ones
            known[event.target] = event.seq
            seen.note(event.target, event.seq)

    try:
        await nc.jetstream().subscribe(
            subjects.state_all,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
            idle_heartbeat=1.0,
            cb=on_msg,
        )
    except Exception:
        await nc.close()
        raise
    instances.closers.append(nc.close)


OPENERS = {"healthbus": _open_health_client, "baseline": _open_ordered_consumer, "plain": _open_plain_subscriber}


async def worker_role(link: Link, url: str, count: int, design: str) -> None:
    """``count`` instances of ``design`` (``healthbus``, ``baseline`` or ``plain``), each on its own connection."""
    raise_nofile()
    seen = Seen()
    opener = OPENERS[design]
    instances = Instances()
    failures: list[str] = []
    rss_before = rss_bytes()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one() -> None:
        async with gate:
            try:
                await opener(url, seen, instances)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(open_one() for _ in range(count)))
    # A worker plays hundreds of instances in one Python process: a full garbage
    # collection there walks all their objects at once (about a second per 100
    # HealthClients on this machine under load, seen right after a nats-server restart),
    # a pause no real instance, alone in its process, has. Everything made so far lives
    # as long as the worker: keep it out of the collector's walks.
    gc.collect()
    gc.freeze()
    link.send("ready", (rss_bytes() - rss_before) / max(1, count), failures[:3], len(failures))
    try:
        while (message := await link.recv(7200))[0] != "stop":
            if message[0] == "report":
                link.send("seen", seen.report())
            elif message[0] == "stats":
                link.send("stats", *instances.stats())
    finally:
        closers = instances.closers
        for i in range(0, len(closers), 50):
            await asyncio.gather(*(close() for close in closers[i : i + 50]), return_exceptions=True)


# ---------------------------------------------------------------- the parent side


class ServerProbe:
    """The nats-server process as the kernel accounts for it, and its JetStream consumer count."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        """Resident set size, MiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return 0.0


async def consumers_now(nc: Client) -> int:
    """JetStream consumers in the account (``$JS.API.INFO``)."""
    msg = await nc.request("$JS.API.INFO", b"", timeout=10)
    return int(json.loads(msg.data).get("consumers", 0))


class Publisher:
    """Publishes StateChanged into the state stream as the coordinator does."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.seqs: dict[str, int] = {}
        self.state: dict[str, str] = {}
        self.subjects = Subjects(PREFIX)
        self.stored: dict[str, StateChanged] = {}  # the last acked event per target, in ack order

    def digests(self, nc: Client) -> DigestPublisher:
        """The coordinator's StateDigest of what this publisher sent, published on ``nc``
        (a connection that reconnects as the coordinator's does): ``await .run()``."""
        return DigestPublisher(nc, self.subjects, lambda: dict(self.seqs), interval=DIGEST_INTERVAL, events=self.recent)

    def recent(self) -> list[StateChanged]:
        """The last stored event of the targets stored most recently, oldest first (the
        digest's ``events``, as the coordinator's ``Outbox.recent``)."""
        return list(self.stored.values())[-MAX_DIGEST_EVENTS:]

    async def publish(self, nc: Client, target: str) -> tuple[Key, int]:
        """The next transition of ``target`` (healthy ↔ unavailable); its key and publish time."""
        seq = self.seqs.get(target, 0) + 1
        previous = self.state.get(target, "unknown")
        state = "unavailable" if previous == "healthy" else "healthy"
        event = StateChanged(
            target=target, seq=seq, at=utcnow(), previous=previous, state=state,  # type: ignore[arg-type]
            breaker="open" if state == "unavailable" else "closed", reason="bench fleet",
        )  # fmt: skip
        sent = now_ns()
        # Sent counts from before the ack, as the coordinator's StateDigest counts it
        # ("stored, or on its way"): a digest taken while the ack is awaited names this seq.
        self.seqs[target] = seq
        self.state[target] = state
        ack = await nc.jetstream().publish(
            self.subjects.state(target), encode(event), headers={"Nats-Msg-Id": event.msg_id}, timeout=30
        )
        self.stored.pop(target, None)
        if not ack.duplicate:
            self.stored[target] = event
        return (target, seq), sent


async def _collect(
    children: list[Child], keys: list[Key], instances: int, timeout: float
) -> dict[Key, tuple[int, int]]:
    """(count, last callback ns) per key over every worker; waits (bounded) for every instance."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        total: dict[Key, tuple[int, int]] = {}
        for child in children:
            child.link.send("report")
            (rows,) = await child.link.expect("seen", 120)
            for target, seq, n, last in rows:
                count, latest = total.get((target, seq), (0, 0))
                total[(target, seq)] = (count + n, max(latest, last))
        if all(total.get(k, (0, 0))[0] >= instances for k in keys) or loop.time() > end:
            return total
        await asyncio.sleep(0.25)


class Stats(NamedTuple):
    """:meth:`Instances.stats` summed over every worker (``last``: the latest)."""

    requests: int
    timeouts: int
    reloads: int
    reconnected: int
    last: int
    cpu_s: float


async def _stats(children: list[Child]) -> Stats:
    """:meth:`Instances.stats` summed over every worker (the time: the latest)."""
    requests = timeouts = reloads = reconnected = last = 0
    cpu_s = 0.0
    for child in children:
        child.link.send("stats")
        row = await child.link.expect("stats", 120)
        requests += row[0]
        timeouts += row[1]
        reloads += row[2]
        reconnected += row[3]
        last = max(last, row[4])
        cpu_s += row[5]
    return Stats(requests, timeouts, reloads, reconnected, last, cpu_s)


async def _phase(
    design: str,
    server: Any,
    group: ChildGroup,
    publisher: Publisher,
    instances: int,
    processes: int,
    flips: int,
    gap: float,
    steady_s: float,
    catch_up_timeout: float,
) -> dict[str, Any]:
    per = [instances // processes + (1 if i < instances % processes else 0) for i in range(processes)]
    admin = await bench_connect(server.url, "bench-fleet-admin")
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            with contextlib.suppress(Exception):
                peak = max(peak, await consumers_now(admin))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    children: list[Child] = []
    digests: asyncio.Task[None] | None = None
    coordinator: Client | None = None
    if design == "healthbus":
        # The coordinator's StateDigest, from a connection that reconnects as the coordinator's does.
        coordinator = await connect(BusSettings(url=server.url), name="bench-fleet-coordinator")
        digests = asyncio.create_task(publisher.digests(coordinator).run())
    try:
        children = [group.start(f"fleet-{design}-{i}", worker_role, server.url, n, design) for i, n in enumerate(per)]
        rss_per: list[float] = []
        failures = 0
        errors: list[str] = []
        for child in children:
            rss, sample_errors, failed = await child.link.expect("ready", 1800)
            rss_per.append(rss)
            failures += failed
            errors.extend(sample_errors)
        probe = ServerProbe(server.pid)
        cpu0 = probe.cpu_s()
        await asyncio.sleep(steady_s)  # the steady state: a connected, idle fleet
        cpu_s = probe.cpu_s() - cpu0
        rss_mb = probe.rss_mb()

        sent: dict[Key, int] = {}
        following = instances - failures
        for i in range(flips):
            key, at = await publisher.publish(admin, publisher.names[i % len(publisher.names)])
            sent[key] = at
            # The fan-out finishes before the next transition, so none queues behind another.
            await _collect(children, [key], following, catch_up_timeout)
            await asyncio.sleep(gap)
        log.info(
            "fleet %s: %d instances connected (%d failed); publishing %d transitions",
            design,
            instances - failures,
            failures,
            flips,
        )
        # Instances that could not even start following will never see anything: wait
        # for the others (the missed ones are counted against all of them).
        seen = await _collect(children, list(sent), following, catch_up_timeout)
        flip_ms = [(seen[k][1] - sent[k]) / 1e6 for k in sent if seen.get(k, (0, 0))[0] >= instances]
        seen_ms = [(seen[k][1] - sent[k]) / 1e6 for k in sent if seen.get(k, (0, 0))[0] > 0]
        missed = sum(max(0, instances - seen.get(k, (0, 0))[0]) for k in sent)

        # nats-server restarts on the same port and store; a transition is published as
        # soon as it is back, while the fleet is still reconnecting.
        before = await _stats(children)
        await admin.close()
        await server.astop()
        await server.astart()
        server_cpu0 = ServerProbe(server.pid).cpu_s()
        admin = await bench_connect(server.url, "bench-fleet-admin")
        key, at = await publisher.publish(admin, publisher.names[0])
        log.info("fleet %s: nats-server restarted; waiting for the fleet to catch up", design)
        after = await _collect(children, [key], following, catch_up_timeout)
        got, last = after.get(key, (0, 0))
        caught_up_s = round((last - at) / 1e9, 3) if got >= instances else None
        missed += max(0, instances - got)
        server_cpu_s = ServerProbe(server.pid).cpu_s() - server_cpu0
        done = await _stats(children)
    finally:
        if digests is not None:
            digests.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await digests
        if coordinator is not None:
            await coordinator.close()
        sampling = False
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sampler
        for child in children:
            await group.stop(child)
        await admin.close()
    return {
        "instances": instances,
        "processes": processes,
        "connect_failures": failures,
        "connect_errors": errors[:3],
        "jetstream_consumers_peak": peak,
        "nats_server_rss_mb": rss_mb,
        "nats_server_cpu_s": round(cpu_s, 3),
        "flip_all_p50_ms": round(statistics.median(flip_ms), 3) if flip_ms else None,
        "flip_all_p99_ms": round(percentile(flip_ms, 99), 3) if flip_ms else None,
        "flip_all_max_ms": round(max(flip_ms), 3) if flip_ms else None,
        # Over the instances that saw each transition (all of them, unless some never follow).
        "flip_seen_p99_ms": round(percentile(seen_ms, 99), 3) if seen_ms else None,
        "reconnect_caught_up_s": caught_up_s,
        "resync_requests": done.requests - before.requests,
        "resync_timeouts": done.timeouts - before.timeouts,
        "resync_reloads": done.reloads - before.reloads,
        # CPU of the fleet's processes and of nats-server from the restart until every
        # instance had the transition (the workers' also includes the disconnect), per instance.
        "reconnect_cpu_ms_per_instance": round(1000 * (done.cpu_s - before.cpu_s) / max(1, instances), 3),
        "reconnect_server_cpu_ms_per_instance": round(1000 * server_cpu_s / max(1, instances), 3),
        "missed_transitions": missed,
        "client_rss_kb_per_instance": round(statistics.mean(rss_per) / 1024, 1) if rss_per else None,
    }


async def _plain_reconnect(
    server: Any, group: ChildGroup, instances: int, processes: int, timeout: float
) -> tuple[float | None, float | None, float | None]:
    """Seconds from nats-server's return until the last of ``instances`` plain core subscribers
    reconnected, and the CPU milliseconds per instance their processes and nats-server used until then."""
    per = [instances // processes + (1 if i < instances % processes else 0) for i in range(processes)]
    children = [group.start(f"fleet-plain-{i}", worker_role, server.url, n, "plain") for i, n in enumerate(per)]
    try:
        failures = 0
        for child in children:
            _, _, failed = await child.link.expect("ready", 1800)
            failures += failed
        before = await _stats(children)
        await server.astop()
        await server.astart()
        back = now_ns()
        server_cpu0 = ServerProbe(server.pid).cpu_s()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            now = await _stats(children)
            if now.reconnected >= instances - failures:
                cpu_ms = round(1000 * (now.cpu_s - before.cpu_s) / max(1, instances), 3)
                server_ms = round(1000 * (ServerProbe(server.pid).cpu_s() - server_cpu0) / max(1, instances), 3)
                # 0: every one was back before the server even said it was ready.
                back_s = max(0.0, round((now.last - back) / 1e9, 3)) if failures == 0 else None
                return back_s, cpu_ms, server_ms
            if loop.time() > end:
                return None, None, None
            await asyncio.sleep(0.25)
    finally:
        for child in children:
            await group.stop(child)


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    from healthbus.bench._harness import require_health_client

    require_health_client()
    instances: int = opts.pick("instances", smoke=200, full=10_000)
    processes = max(1, min(MAX_PROCESSES, math.ceil(instances / 50)))
    flips: int = opts.pick("repeat", smoke=3, full=20)
    steady_s: float = opts.pick("duration", smoke=1.0, full=10.0)
    gap = 0.1 if opts.size == "smoke" else 0.5
    catch_up_timeout = 30.0 if opts.size == "smoke" else 120.0
    nofile = raise_nofile()  # nats-server inherits it
    machine = machine_description()
    names = target_names(TARGETS)
    publisher = Publisher(names)
    async with embedded_nats(opts.workdir) as server, ChildGroup(stop_timeout=60.0) as group:
        from healthbus.bus import ensure_stream

        nc = await bench_connect(server.url, "bench-fleet-setup")
        try:
            await ensure_stream(nc.jetstream(), StreamSettings.for_prefix(PREFIX))
            for name in names:
                await publisher.publish(nc, name)
        finally:
            await nc.close()
        args = (server, group, publisher, instances, processes, flips, gap, steady_s, catch_up_timeout)
        new = await _phase("healthbus", *args)
        old = await _phase("baseline", *args)
        plain_s, plain_cpu_ms, plain_server_ms = await _plain_reconnect(
            server, group, instances, processes, catch_up_timeout
        )
    data: dict[str, Any] = {
        **new,
        "targets": TARGETS,
        "transitions": flips,
        "steady_window_s": steady_s,
        "open_files_limit": nofile,
    }
    for key, value in old.items():
        if key not in (
            "instances", "processes", "resync_requests", "resync_timeouts", "resync_reloads",
            "reconnect_cpu_ms_per_instance", "reconnect_server_cpu_ms_per_instance",
        ):  # fmt: skip
            data[f"baseline_{key}"] = value
    data["baseline_reconnect_s"] = plain_s
    data["baseline_reconnect_cpu_ms_per_instance"] = plain_cpu_ms
    data["baseline_reconnect_server_cpu_ms_per_instance"] = plain_server_ms
    goals = [
        Goal("no JetStream consumer for subscribers", new["jetstream_consumers_peak"] == 0,
             f"peak {new['jetstream_consumers_peak']} (baseline {old['jetstream_consumers_peak']})"),
        Goal("no missed transition", new["missed_transitions"] == 0,
             f"{new['missed_transitions']} missed (baseline {old['missed_transitions']})"),
        Goal("caught up within 5 s of a nats-server restart",
             new["reconnect_caught_up_s"] is not None and new["reconnect_caught_up_s"] <= 5.0,
             f"{new['reconnect_caught_up_s']} s (plain core subscribers reconnected in {plain_s} s)"),
        Goal("no catch-up request timed out", new["resync_timeouts"] == 0,
             f"{new['resync_timeouts']} of {new['resync_requests']} requests"),
    ]  # fmt: skip
    notes = [
        f"{instances} instances, each with its own NATS connection, in {processes} processes on "
        f"{machine['nproc']} cores; the suite publishes StateChanged itself (as the coordinator does)",
        "baseline: one plain nats-py JetStream ordered consumer per instance (last per subject, 1 s heartbeat)",
        "baseline_reconnect_s: as many plain nats-py core subscribers (reconnect_time_wait 0.5 s), restarted "
        "the same way: until the last one reconnected",
    ]
    return SuiteResult("fleet", opts.size, data, goals, notes, machine)
