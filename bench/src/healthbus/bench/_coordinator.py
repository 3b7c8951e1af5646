"""Suite ``coordinator``: ProbeResults decided per second, against a raw counting subscriber.

One publisher process sends N ProbeResults (``--targets`` targets × 3 vantage points,
mixed outcomes that cause real transitions) as fast as it can to an embedded
nats-server. The receiver is, in turn, (a) the baseline: a raw nats-py subscriber that
only counts, and (b) a healthbus coordinator in its own process, which decodes, decides
and publishes StateChanged to JetStream. Both see the same message set in the same run;
with ``--repeat`` the pair is repeated (order alternating, B C then C B) and the medians
are reported.

Rate = messages / (time of the last message counted or decided − time of the first
publish), both on the machine-wide monotonic clock. The coordinator's CPU seconds and
peak RSS are its own process's (getrusage).

Publish cost of durability (``durability`` in the result): the coordinator's own outbox
publishes StateChanged to a state stream on two more servers started in the same run,
one with JetStream's default lazy fsync and one with ``sync_interval: always`` (as
deploy/ configures it), alternating which goes first on each repeat: a burst of events
over many targets (pipelined, as after a fleet-wide change) until every one is acked,
and events of one target one at a time (each waits for its ack: what one transition
pays before the next of its target can go out).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import ProcessUsage, Profiler, machine_description, now_ns, rate
from healthbus.bench._natsutil import CountingSubscriber, bench_connect
from healthbus.bench._procs import ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import bench_config_text, probe_ids, probe_messages, target_names
from healthbus.protocol import State, StateChanged, StreamSettings, Subjects

__all__ = ["run"]

PROBES = 3
_IDLE_GIVE_UP_S = 10.0  # a receiver that hears nothing new for this long reports what it has


# ---------------------------------------------------------------- child roles


async def publisher_role(link: Link, url: str, targets: int, probes: int, total: int, seed: int) -> None:
    """Publishes the message set under the prefix named by each ``prepare``, on ``go``."""
    nc = await bench_connect(url, "bench-publisher")
    names = target_names(targets)
    link.send("connected")
    try:
        while True:
            message = await link.recv(3600)
            if message[0] == "stop":
                return
            prefix = message[1]
            subjects = Subjects(prefix)
            messages = probe_messages(names, probe_ids(probes), total, seed)
            batch = [(subjects.probe(target, probe), data) for target, probe, data in messages]
            link.send("prepared")
            await link.expect("go", 600)
            publish = nc.publish
            start = now_ns()
            for subject, data in batch:
                await publish(subject, data)
            end_publish = now_ns()
            await nc.flush(timeout=600)
            link.send("published", start, end_publish)
    finally:
        await nc.close()


async def _wait_counted(progress: Any, done: asyncio.Event, deadline_s: float) -> None:
    """Wait for ``done``; give up after ``deadline_s`` or once progress() stalls."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    last, last_change = progress(), loop.time()
    while not done.is_set() and loop.time() < end:
        try:
            await asyncio.wait_for(done.wait(), 0.25)
        except TimeoutError:
            now = progress()
            if now != last:
                last, last_change = now, loop.time()
            elif now > 0 and loop.time() - last_change > _IDLE_GIVE_UP_S:
                return


async def baseline_role(link: Link, url: str, prefix: str, total: int, deadline_s: float) -> None:
    """A raw nats-py subscriber that only counts the same messages."""
    nc = await bench_connect(url, "bench-baseline")
    counter = CountingSubscriber(total)
    await counter.subscribe(nc, Subjects(prefix).probe_all)
    before = ProcessUsage.now()
    link.send("ready")
    await _wait_counted(lambda: counter.count, counter.done, deadline_s)
    after = ProcessUsage.now()
    link.send(
        "done",
        {
            "count": counter.count,
            "first_ns": counter.first_ns,
            "last_ns": counter.last_ns or now_ns(),
            "cpu_s": after.cpu_s - before.cpu_s,
            "peak_rss_mb": after.peak_rss_mb,
        },
    )
    await link.expect("stop", 60)
    await nc.close()


async def coordinator_role(link: Link, url: str, prefix: str, total: int, deadline_s: float, config_text: str) -> None:
    """A healthbus coordinator deciding every message; reports when all were decided."""
    from healthbus.bench._harness import RunningCoordinator

    coordinator = await RunningCoordinator.start(config_text, url)
    profiler = Profiler()
    try:
        profiler.start()
        before = ProcessUsage.now()
        link.send("ready")
        done = asyncio.Event()
        last_ns = 0

        async def watch() -> None:
            nonlocal last_ns
            # The service wakes this waiter from its hot path once the count is reached
            # (one integer comparison per message while a waiter exists).
            await coordinator.service.wait_handled(total, timeout=deadline_s)
            last_ns = now_ns()
            done.set()

        watcher = asyncio.create_task(watch())
        await _wait_counted(coordinator.decided, done, deadline_s)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await watcher
        after = ProcessUsage.now()
        # Deciding is done; the StateChanged it produced still have to reach JetStream.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(coordinator.service.outbox.drained(), deadline_s)
        drained_ns = now_ns()
        drained = ProcessUsage.now()
        profiler.stop()
        link.send(
            "done",
            {
                "count": coordinator.decided(),
                "first_ns": 0,
                "last_ns": last_ns or now_ns(),
                "drained_ns": drained_ns,
                "unpublished": coordinator.service.pending,
                "transitions": coordinator.transitions(),
                "cpu_s": after.cpu_s - before.cpu_s,
                "drain_cpu_s": drained.cpu_s - after.cpu_s,
                "peak_rss_mb": drained.peak_rss_mb,
                "counters": coordinator.counters(),
            },
        )
        await link.expect("stop", 60)
    finally:
        await coordinator.stop()


# ---------------------------------------------------------------- the suite


async def _one_run(
    group: ChildGroup, publisher: Link, which: str, url: str, prefix: str, total: int, config_text: str
) -> dict[str, Any]:
    deadline = max(60.0, total / 2000)
    if which == "baseline":
        child = group.start(f"{which}-{prefix}", baseline_role, url, prefix, total, deadline)
    else:
        child = group.start(f"{which}-{prefix}", coordinator_role, url, prefix, total, deadline, config_text)
    try:
        await child.link.expect("ready", 120)
        publisher.send("prepare", prefix)
        await publisher.expect("prepared", 120)
        publisher.send("go")
        pub_start, pub_end = await publisher.expect("published", deadline + 60)
        (done,) = await child.link.expect("done", deadline + 60)
    finally:
        await group.stop(child)
    result: dict[str, Any] = dict(done)
    elapsed = (result["last_ns"] - pub_start) / 1e9
    result["msgs_per_s"] = rate(result["count"], elapsed)
    result["publish_msgs_per_s"] = rate(total, (pub_end - pub_start) / 1e9)
    if "drained_ns" in result:
        result["all_published_s"] = round((result["drained_ns"] - pub_start) / 1e9, 3)
    return result


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    from healthbus.bench._harness import require_coordinator

    require_coordinator()
    total: int = opts.pick("messages", smoke=3_000, full=200_000)
    targets: int = opts.pick("targets", smoke=20, full=1_000)
    repeat: int = opts.pick("repeat", smoke=1, full=3)
    machine = machine_description()
    rounds: list[dict[str, Any]] = []
    async with embedded_nats(opts.workdir) as server, ChildGroup() as group:
        pub = group.start("publisher", publisher_role, server.url, targets, PROBES, total, opts.seed)
        await pub.link.expect("connected", 60)
        for r in range(repeat):
            order = ("baseline", "coordinator") if r % 2 == 0 else ("coordinator", "baseline")
            results: dict[str, dict[str, Any]] = {}
            for which in order:
                prefix = f"bench{r}{which[0]}"
                config_text = bench_config_text(target_names(targets), prefix=prefix, interval="5s", stale_after="600s")
                results[which] = await _one_run(group, pub.link, which, server.url, prefix, total, config_text)
            rounds.append(results)

        durability = await _durability(
            opts.workdir,
            repeat,
            burst=400 if opts.size == "smoke" else 5_000,
            targets=min(targets, 1_000),
            serial=50 if opts.size == "smoke" else 500,
        )

    base = [r["baseline"] for r in rounds]
    coord = [r["coordinator"] for r in rounds]
    ratios = [c["msgs_per_s"] / b["msgs_per_s"] if b["msgs_per_s"] else 0.0 for b, c in zip(base, coord, strict=True)]
    mid = _median_index(ratios)
    ratio = round(statistics.median(ratios), 3)
    data: dict[str, Any] = {
        "messages": total,
        "targets": targets,
        "probes": PROBES,
        "repeat": repeat,
        "baseline_msgs_per_s": round(statistics.median(b["msgs_per_s"] for b in base), 1),
        "coordinator_msgs_per_s": round(statistics.median(c["msgs_per_s"] for c in coord), 1),
        "ratio": ratio,
        "ratios": [round(x, 3) for x in ratios],
        "publish_msgs_per_s": round(statistics.median(x["publish_msgs_per_s"] for x in base + coord), 1),
        "baseline_received": min(b["count"] for b in base),
        "coordinator_decided": min(c["count"] for c in coord),
        "transitions": coord[mid]["transitions"],
        "coordinator_cpu_s": round(coord[mid]["cpu_s"], 3),
        "coordinator_peak_rss_mb": max(c["peak_rss_mb"] for c in coord),
        "baseline_cpu_s": round(base[mid]["cpu_s"], 3),
        "coordinator_counters": coord[mid].get("counters", {}),
        "coordinator_all_published_s": coord[mid]["all_published_s"],
        "coordinator_publish_cpu_s": round(coord[mid]["drain_cpu_s"], 3),
        "unpublished": max(c["unpublished"] for c in coord),
        "durability": durability,
        "rounds": [
            {
                "baseline_msgs_per_s": b["msgs_per_s"],
                "coordinator_msgs_per_s": c["msgs_per_s"],
                "coordinator_all_published_s": c["all_published_s"],
            }
            for b, c in zip(base, coord, strict=True)
        ],
    }
    lost = total - data["coordinator_decided"]
    notes = []
    if lost or data["baseline_received"] != total:
        notes.append(
            f"incomplete: baseline received {data['baseline_received']}, coordinator decided "
            f"{data['coordinator_decided']} of {total}"
        )
    goals = [Goal("ratio >= 0.5 (coordinator / raw counting subscriber)", ratio >= 0.5, f"ratio {ratio}")]
    return SuiteResult("coordinator", opts.size, data, goals, notes, machine)


# ---------------------------------------------------------------- durability


def _events(targets: list[str], per_target: int) -> list[StateChanged]:
    """``per_target`` alternating transitions of every target, in seq order per target."""
    at = datetime.now(UTC)
    out: list[StateChanged] = []
    for seq in range(1, per_target + 1):
        state: State = "unavailable" if seq % 2 else "healthy"
        previous: State = "unknown" if seq == 1 else ("healthy" if seq % 2 else "unavailable")
        for name in targets:
            out.append(
                StateChanged(
                    target=name,
                    seq=seq,
                    at=at,
                    previous=previous,
                    state=state,
                    breaker="open" if seq % 2 else "closed",
                    reason="2/3 probes failing (refused); breaker open, trial in 1.0s (attempt 1)",
                    failures=3,
                    attempt=1 if seq % 2 else 0,
                    features=["cache"],
                )
            )
    return out


async def _publish_cost(workdir: Path, sync_always: bool, burst: int, targets: int, serial: int) -> dict[str, Any]:
    """Acked StateChanged per second through the coordinator's outbox, on a fresh server."""
    from healthbus.bus import ensure_stream
    from healthbus.coordinator import Outbox

    async with embedded_nats(workdir, sync_always=sync_always) as server:
        nc = await bench_connect(server.url, "bench-durability")
        try:
            prefix = "benchdur"
            stream = StreamSettings.for_prefix(prefix)
            await ensure_stream(nc.jetstream(), stream)
            outbox = Outbox(nc, Subjects(prefix), stream, timeout=30.0)
            await outbox.start()
            try:
                names = [f"t{i}" for i in range(targets)]
                events = _events(names, max(1, burst // targets))
                start = now_ns()
                for event in events:
                    outbox.put(event)
                await asyncio.wait_for(outbox.drained(), 600)
                burst_s = (now_ns() - start) / 1e9
                # One target, one event at a time: each publish waits for its ack.
                one = _events(["serial"], serial)
                latencies: list[float] = []
                for event in one:
                    t0 = now_ns()
                    outbox.put(event)
                    await asyncio.wait_for(outbox.wait_acked(event.target, event.seq), 60)
                    latencies.append((now_ns() - t0) / 1e6)
            finally:
                await outbox.stop()
        finally:
            await nc.close()
    latencies.sort()
    return {
        "burst_events": len(events),
        "burst_acked_per_s": rate(len(events), burst_s),
        "serial_events": len(one),
        "serial_p50_ms": round(latencies[len(latencies) // 2], 3),
        "serial_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
    }


async def _durability(workdir: Path, repeat: int, burst: int, targets: int, serial: int) -> dict[str, Any]:
    """The publish cost of lazy fsync (the default) and of ``sync_interval: always``."""
    runs: dict[str, list[dict[str, Any]]] = {"default": [], "always": []}
    for r in range(repeat):
        order = ("default", "always") if r % 2 == 0 else ("always", "default")
        for which in order:
            runs[which].append(
                await _publish_cost(workdir / f"dur{r}{which}", which == "always", burst, targets, serial)
            )
    out: dict[str, Any] = {"store_filesystem": _filesystem(workdir), "repeat": repeat}
    for which, results in runs.items():
        out[which] = {
            key: (results[0][key] if key.endswith("_events") else round(statistics.median(x[key] for x in results), 3))
            for key in results[0]
        }
    default, always = out["default"], out["always"]
    out["burst_slowdown"] = round(default["burst_acked_per_s"] / always["burst_acked_per_s"], 2)
    out["serial_p50_added_ms"] = round(always["serial_p50_ms"] - default["serial_p50_ms"], 3)
    return out


def _filesystem(path: Path) -> str:
    """The file system type holding ``path`` (fsync costs depend on it), from /proc/mounts."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and target.startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def _median_index(values: list[float]) -> int:
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[(len(order) - 1) // 2]
