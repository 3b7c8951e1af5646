"""Suite ``partitions``: deciding with one leader vs. one leader per partition, and a kill.

One JetStream nats-server; every coordinator is a child process (its own core, if the
machine has one free). Two parts, one run:

1. **Throughput.** The same deterministic message set (``bench coordinator``'s workload:
   ``--targets`` targets × 3 vantage points, ``--messages`` results) is published by a
   publisher child as fast as it can, first to one coordinator (``partitions = 1``), then
   to :data:`PARTITIONS` coordinator processes (``partitions = 3``), each leading one
   partition (``--only-partitions p``): once filtering every result themselves
   (``partition_routing = "filter"``, the default: a note gives its rate), once behind
   nats-server's ``{{partition(3,1)}}`` mapping (``partition_routing = "server"``: this
   is ``decided_per_s_partitioned``). ``decided_per_s_*``: results decided (counted by
   the coordinators) per second, from the first publish to the last decision.
   ``kept_up``: both partitioned runs decided every result (none dropped, none missing)
   *and*, in part 2, the surviving partitions decided every round sent to them.
2. **A leader killed.** :data:`PARTITIONS` leaders (one partition each) and one standby
   process (all partitions) under a 1 s lease; :data:`KILL_TARGETS` targets report every
   :data:`ROUND_S` seconds, alternating ``pass``/``warn`` so every round is a transition
   of every target. The leader of partition 0 is SIGKILLed; the standby takes it over.
   Gaps are measured on a subscriber's clock (when each StateChanged arrived on the state
   stream), from the kill until partition 0 decides again plus one second:
   ``other_partitions_gap_s`` the longest wait between two decisions of the other
   partitions (≈ :data:`ROUND_S` when they did not notice), ``killed_partition_gap_s``
   the longest wait between two decisions of partition 0 (the lease ttl and the takeover).

The JSON keys are exactly the issue's: ``partitions``, ``targets``,
``decided_per_s_one_partition``, ``decided_per_s_partitioned``, ``kept_up``,
``other_partitions_gap_s``, ``killed_partition_gap_s`` (and the framework's ``suite``,
``size``, ``goals``, ``notes``, ``machine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections import Counter
from typing import Any

from healthbus.bench._coordinator import PROBES, publisher_role
from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._harness import require_coordinator
from healthbus.bench._measure import machine_description, now_ns, rate
from healthbus.bench._procs import ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import bench_config_text, probe_ids, probe_messages, target_names
from healthbus.protocol import Outcome, ProbeResult, StateChanged, Subjects, encode, partition_of, utcnow

__all__ = ["run"]

PARTITIONS = 3
KILL_TARGETS = 60
ROUND_S = 0.1
LEASE = "1s"


#: The prefix of the run whose results nats-server routes by partition (a subject mapping).
SERVER_ROUTED = "bpartsrv"
_MAPPING = (
    f'mappings = {{ "{SERVER_ROUTED}.probe.*.*": '
    f'"{SERVER_ROUTED}.part.{{{{partition({PARTITIONS},1)}}}}.probe.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}" }}\n'
)


def _with_partitions(config_text: str, partitions: int, lease: str = "5s", routing: str = "filter") -> str:
    coordinator = f'[coordinator]\npartitions = {partitions}\nlease_ttl = "{lease}"\n'
    if routing != "filter":
        coordinator += f'partition_routing = "{routing}"\n'
    return config_text.replace("[defaults]", coordinator + "\n[defaults]", 1)


# ---------------------------------------------------------------- child role


async def coordinator_role(link: Link, url: str, config_text: str, holder: str, only: list[int] | None) -> None:
    """One coordinator process: all partitions or ``only`` these; reports its counts on request."""
    from healthbus.bus import connect
    from healthbus.coordinator import CoordinatorService, PartitionedCoordinator
    from healthbus.protocol import load_config_text

    nc = await connect(url=url, name=f"bench-{holder}")
    config = load_config_text(config_text, source="bench")
    runner: CoordinatorService | PartitionedCoordinator
    if config.coordinator.partitions > 1:
        runner = PartitionedCoordinator(config, nc, holder=holder, only=only)
        services = runner.services
    else:
        runner = CoordinatorService(config, nc, holder=holder)
        services = [runner]
    del config
    await runner.start()
    link.send("ready", [s.partition for s in services if s.active])
    try:
        while True:
            message = await link.recv(3600)
            if message[0] == "stop":
                return
            if message[0] == "wait":  # ("wait", n, deadline): until n results were handled
                want, deadline = message[1], message[2]
                end = time.monotonic() + deadline
                count, changed = sum(s.handled for s in services), now_ns()
                while count < want and time.monotonic() < end:
                    await asyncio.sleep(0.005)
                    now = sum(s.handled for s in services)
                    if now != count:
                        count, changed = now, now_ns()
                dropped: Counter[str] = Counter()
                for s in services:
                    dropped.update(s.dropped)
                link.send(
                    "counted",
                    sum(s.handled for s in services),
                    sum(sum(s.results.values()) for s in services),
                    dict(dropped),
                    changed,  # when the last result was handled (5 ms resolution)
                )
            elif message[0] == "leading":
                link.send("leading", [s.partition for s in services if s.active])
    finally:
        with contextlib.suppress(Exception):
            await runner.stop()
        with contextlib.suppress(Exception):
            await nc.close()


# ---------------------------------------------------------------- part 1: throughput


async def _throughput(
    group: ChildGroup,
    url: str,
    publisher: Link,
    names: list[str],
    total: int,
    partitions: int,
    seed: int,
    *,
    routing: str = "filter",
) -> dict[str, Any]:
    prefix = SERVER_ROUTED if routing == "server" else f"bpart{partitions}"
    config = _with_partitions(
        bench_config_text(names, prefix=prefix, interval="5s", stale_after="600s"), partitions, routing=routing
    )
    shares = Counter(partition_of(t, partitions) for t, _, _ in probe_messages(names, probe_ids(PROBES), total, seed))
    which = [[p] for p in range(partitions)] if partitions > 1 else [None]
    children = [
        group.start(f"coord-{prefix}-{i}", coordinator_role, url, config, f"{prefix}-{i}", only)
        for i, only in enumerate(which)
    ]
    try:
        for child in children:
            await child.link.expect("ready", 120)
        publisher.send("prepare", prefix)
        await publisher.expect("prepared", 120)
        publisher.send("go")
        deadline = max(60.0, total / 1000)
        pub_start, _ = await publisher.expect("published", deadline + 60)
        for child, only in zip(children, which, strict=True):
            want = total if only is None else shares[only[0]]
            child.link.send("wait", want, deadline)
        counted = [await child.link.expect("counted", deadline + 60) for child in children]
    finally:
        for child in children:
            await group.stop(child)
    decided = sum(c[1] for c in counted)
    dropped: Counter[str] = Counter()
    for c in counted:
        dropped.update(c[2])
    last = max(c[3] for c in counted)
    return {
        "decided": decided,
        "handled": sum(c[0] for c in counted),
        "dropped": dict(dropped),
        "decided_per_s": round(rate(decided, (last - pub_start) / 1e9), 1),
    }


# ---------------------------------------------------------------- part 2: a kill


def _result(target: str, outcome: Outcome) -> bytes:
    return encode(ProbeResult(target=target, probe="p1", outcome=outcome, latency_ms=1.0, observed_at=utcnow()))


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest wait between ``start``, the times inside ``[start, end]`` and ``end``."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


async def _kill(group: ChildGroup, url: str) -> dict[str, Any]:
    from healthbus.bus import StateStream, connect

    prefix = "bpartkill"
    names = target_names(KILL_TARGETS)
    config = _with_partitions(
        bench_config_text(
            names,
            prefix=prefix,
            interval="5s",
            stale_after="600s",
            failure_threshold=1,
            success_threshold=1,
            flap=False,
        ),
        PARTITIONS,
        LEASE,
    )
    part = {name: partition_of(name, PARTITIONS) for name in names}
    leaders = [group.start(f"leader-{p}", coordinator_role, url, config, f"leader-{p}", [p]) for p in range(PARTITIONS)]
    for child in leaders:
        await child.link.expect("ready", 120)
    standby = group.start("standby", coordinator_role, url, config, "standby", None)
    (leading,) = await standby.link.expect("ready", 120)
    assert not leading, f"the standby leads {leading}"
    nc = await connect(url=url, name="bench-partitions-driver")
    arrived: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
    per_round: Counter[int] = Counter()

    def on_event(event: StateChanged) -> None:
        arrived[part[event.target]].append(time.monotonic())

    follower = await StateStream(nc, prefix).follow(on_event, start="new")
    subjects = Subjects(prefix)
    rounds = 0
    killed_at = 0.0
    resumed_at: float | None = None
    try:
        victim = leaders[0]
        loop_start = time.monotonic()
        while True:
            outcome: Outcome = "warn" if rounds % 2 == 0 else "pass"
            for name in names:
                await nc.publish(subjects.probe(name, "p1"), _result(name, outcome))
            for name in names:
                per_round[part[name]] += 1
            await nc.flush(timeout=5)
            rounds += 1
            now = time.monotonic()
            if not killed_at and now - loop_start >= 2.0:
                assert victim.pid is not None
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
            if killed_at and resumed_at is None and any(t > killed_at for t in arrived[0]):
                # The first partition-0 decision after the kill may be a round sent before it.
                later = [t for t in arrived[0] if t > killed_at + 0.5]
                if later:
                    resumed_at = later[0]
            if resumed_at is not None and now > resumed_at + 1.0:
                break
            if now - loop_start > 60:
                break
            await asyncio.sleep(max(0.0, ROUND_S - (time.monotonic() - now)))
        await asyncio.sleep(1.0)  # the last rounds' events
    finally:
        with contextlib.suppress(Exception):
            await follower.stop()
        await nc.close()
        for child in [*leaders[1:], standby]:
            await group.stop(child)
        with contextlib.suppress(Exception):
            await group.stop(leaders[0])
    end = (resumed_at or time.monotonic()) + 1.0
    others = [t for p in range(1, PARTITIONS) for t in arrived[p]]
    expected_others = sum(per_round[p] for p in range(1, PARTITIONS))
    return {
        "rounds": rounds,
        "other_partitions_gap_s": round(_longest_gap(others, killed_at, end), 3),
        "killed_partition_gap_s": round(_longest_gap(arrived[0], killed_at - ROUND_S, end), 3),
        "others_kept_up": len(others) >= expected_others,
        "others_events": len(others),
        "others_expected": expected_others,
        "resumed": resumed_at is not None,
    }


# ---------------------------------------------------------------- the suite


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    require_coordinator()
    total: int = opts.pick("messages", smoke=20_000, full=150_000)
    targets: int = opts.pick("targets", smoke=300, full=3_000)
    names = target_names(targets)
    machine = machine_description()
    async with embedded_nats(opts.workdir, extra=_MAPPING) as server, ChildGroup() as group:
        pub = group.start("publisher", publisher_role, server.url, targets, PROBES, total, opts.seed)
        await pub.link.expect("connected", 60)
        one = await _throughput(group, server.url, pub.link, names, total, 1, opts.seed)
        filtered = await _throughput(group, server.url, pub.link, names, total, PARTITIONS, opts.seed)
        many = await _throughput(group, server.url, pub.link, names, total, PARTITIONS, opts.seed, routing="server")
        await group.stop(pub)
        kill = await _kill(group, server.url)
    kept_up = (
        many["decided"] == total
        and filtered["decided"] == total
        and not many["dropped"]
        and not filtered["dropped"]
        and kill["others_kept_up"]
    )
    data: dict[str, Any] = {
        "partitions": PARTITIONS,
        "targets": targets,
        "decided_per_s_one_partition": one["decided_per_s"],
        "decided_per_s_partitioned": many["decided_per_s"],
        "kept_up": kept_up,
        "other_partitions_gap_s": kill["other_partitions_gap_s"],
        "killed_partition_gap_s": kill["killed_partition_gap_s"],
    }
    notes = [
        f"throughput: {total:,} results ({targets:,} targets x {PROBES} vantage points); one partition decided"
        f" {one['decided']:,} (dropped {one['dropped'] or 'none'}); {PARTITIONS} partitions routed by the server"
        f" (partition_routing = server, the figure above) decided {many['decided']:,}"
        f" (dropped {many['dropped'] or 'none'}); {PARTITIONS} partitions filtering every result themselves"
        f" (partition_routing = filter, the default) decided {filtered['decided']:,} at"
        f" {filtered['decided_per_s']:,.1f}/s (dropped {filtered['dropped'] or 'none'})",
        f"kill: {KILL_TARGETS} targets, a round every {ROUND_S:g}s, lease {LEASE}; {kill['rounds']} rounds;"
        f" the other partitions stored {kill['others_events']:,} of the {kill['others_expected']:,} decisions sent"
        f" their way; partition 0 {'resumed' if kill['resumed'] else 'did NOT resume'} under the standby",
        f"os.cpu_count() = {os.cpu_count()}: partitions scale the deciding with free cores, not beyond them",
    ]
    ratio = many["decided_per_s"] / one["decided_per_s"] if one["decided_per_s"] else 0.0
    goals = [
        Goal(
            "other_partitions_gap_s ~ 0 (no longer than 2 rounds)",
            kill["other_partitions_gap_s"] <= 2 * ROUND_S + 0.05,
            f"{kill['other_partitions_gap_s']}s with a round every {ROUND_S:g}s",
        ),
        Goal("kept_up", kept_up, ""),
        Goal(
            "decided_per_s_partitioned > decided_per_s_one_partition",
            ratio > 1.0,
            f"x{ratio:.2f} on {os.cpu_count()} cores shared with the publisher and nats-server",
        ),
    ]
    return SuiteResult("partitions", opts.size, data, goals, notes, machine)
