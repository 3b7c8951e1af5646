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
  the fleet is still reconnecting); the time until every instance has it.
- ``missed_transitions``: (instance, transition) pairs never seen within the time allowed.
- ``client_rss_kb_per_instance``: worker RSS growth per instance.

``baseline_*``: the design HealthClient replaced, one JetStream ordered consumer per
instance (plain nats-py: ``deliver_policy=last_per_subject``, 1 s idle heartbeat, each on
its own connection), so the cost of a consumer per instance is seen beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import statistics
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import machine_description, now_ns, percentile, rss_bytes
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._procs import Child, ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import target_names
from healthbus.protocol import StateChanged, StreamSettings, Subjects, decode_state_changed, encode, utcnow

__all__ = ["run"]

log = logging.getLogger("healthbus.bench.fleet")

PREFIX = "benchfleet"
MAX_PROCESSES = 20
CONNECT_CONCURRENCY = 20  # connections a worker opens at once
TARGETS = 10
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


async def _open_health_client(url: str, seen: Seen) -> Callable[[], Any]:
    from healthbus.bench._harness import connect_health_client

    health = await connect_health_client(url, PREFIX, connect_timeout=120.0, stale_after=600.0)
    health.on_change(lambda event: seen.note(event.target, event.seq))
    return health.close


async def _open_ordered_consumer(url: str, seen: Seen) -> Callable[[], Any]:
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
    return nc.close


async def worker_role(link: Link, url: str, count: int, design: str) -> None:
    """``count`` instances of ``design`` (``healthbus`` or ``baseline``), each on its own connection."""
    raise_nofile()
    seen = Seen()
    opener = _open_health_client if design == "healthbus" else _open_ordered_consumer
    closers: list[Callable[[], Any]] = []
    failures: list[str] = []
    rss_before = rss_bytes()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one() -> None:
        async with gate:
            try:
                closers.append(await opener(url, seen))
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(open_one() for _ in range(count)))
    link.send("ready", (rss_bytes() - rss_before) / max(1, count), failures[:3], len(failures))
    try:
        while (message := await link.recv(7200))[0] != "stop":
            if message[0] == "report":
                link.send("seen", seen.report())
    finally:
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
        await nc.jetstream().publish(
            self.subjects.state(target), encode(event), headers={"Nats-Msg-Id": event.msg_id}, timeout=30
        )
        self.seqs[target] = seq
        self.state[target] = state
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
        await admin.close()
        await server.astop()
        await server.astart()
        admin = await bench_connect(server.url, "bench-fleet-admin")
        key, at = await publisher.publish(admin, publisher.names[0])
        log.info("fleet %s: nats-server restarted; waiting for the fleet to catch up", design)
        after = await _collect(children, [key], following, catch_up_timeout)
        got, last = after.get(key, (0, 0))
        caught_up_s = round((last - at) / 1e9, 3) if got >= instances else None
        missed += max(0, instances - got)
    finally:
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
        "missed_transitions": missed,
        "client_rss_kb_per_instance": round(statistics.mean(rss_per) / 1024, 1) if rss_per else None,
    }


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
    data: dict[str, Any] = {
        **new,
        "targets": TARGETS,
        "transitions": flips,
        "steady_window_s": steady_s,
        "open_files_limit": nofile,
    }
    for key, value in old.items():
        if key not in ("instances", "processes"):
            data[f"baseline_{key}"] = value
    goals = [
        Goal("no JetStream consumer for subscribers", new["jetstream_consumers_peak"] == 0,
             f"peak {new['jetstream_consumers_peak']} (baseline {old['jetstream_consumers_peak']})"),
        Goal("no missed transition", new["missed_transitions"] == 0,
             f"{new['missed_transitions']} missed (baseline {old['missed_transitions']})"),
    ]  # fmt: skip
    notes = [
        f"{instances} instances, each with its own NATS connection, in {processes} processes on "
        f"{machine['nproc']} cores; the suite publishes StateChanged itself (as the coordinator does)",
        "baseline: one plain nats-py JetStream ordered consumer per instance (last per subject, 1 s heartbeat)",
    ]
    return SuiteResult("fleet", opts.size, data, goals, notes, machine)
