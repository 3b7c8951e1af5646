"""Suite ``scale``: 10,000 targets × 3 vantage points at a 1 s interval, sustained.

A generator process plays 3 probe workers: every interval (1 s, or ``--interval``) it
publishes one ProbeResult per (target, vantage point), spread evenly over the interval in
100 slots, each stamped with the time of its slot (the coordinator drops results older
than ``stale_after``). The coordinator, in its own process, must decide them as they come.

Whether it keeps up is measured two ways over the ``--duration`` window that follows a
warm-up: results decided per second against results published per second, and decision
lag on 20 *canary* targets that flip between pass and warn every interval (one vantage
point, thresholds of 1): lag = arrival of the StateChanged at an observer − publish of
the result that decided it. A coordinator that falls behind shows it at once as a lag
that grows past the interval.

Memory per target = (coordinator RSS at the end − RSS before the configuration was
loaded) / targets: everything the coordinator holds because of the targets (config,
decision state, last events, buffers). Both RSS figures are taken after a garbage
collection and ``malloc_trim(0)``, so heap the process freed (the parsed TOML text, a
start-up burst) but had not yet returned to the OS is not counted; the untrimmed figure
is reported too.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import (
    ProcessUsage,
    machine_description,
    now_ns,
    percentile,
    rss_bytes,
    trimmed_rss_bytes,
)
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._procs import ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import probe_ids, target_names
from healthbus.bus import sync_subscriptions
from healthbus.protocol import ProbeResult, Subjects, decode_state_changed, encode, format_timestamp, utcnow

__all__ = ["run"]

PREFIX = "benchscale"
PROBES = 3
CANARIES = 20
INTERVAL_S = 1.0  # the default; ``--interval`` sets another
SLOTS = 100  # per interval
GOAL_BYTES_PER_TARGET = 2048
_STARTUP_LIMIT_S = 180.0
_STAMP = "2000-01-01T00:00:00.000001Z"


def canary_names(count: int) -> list[str]:
    """``canary-000`` …"""
    return [f"canary-{i:03d}" for i in range(count)]


def config_text(targets: int, canaries: int, interval_s: float = INTERVAL_S) -> str:
    """Default settings for the fleet at ``interval_s``; canaries decide on one result."""
    lines = [
        f'[bus]\nprefix = "{PREFIX}"\n',
        f'[defaults]\ninterval = "{round(interval_s * 1000)}ms"\ntimeout = "500ms"\n',
    ]
    for name in target_names(targets):
        lines.append(f'[[targets]]\nname = "{name}"\nkind = "tcp"\nurl = "tcp://127.0.0.1:9"\n')
    for name in canary_names(canaries):
        lines.append(
            f'[[targets]]\nname = "{name}"\nkind = "tcp"\nurl = "tcp://127.0.0.1:9"\n'
            'failure_threshold = 1\nsuccess_threshold = 1\nquorum = "any"\nflap = { enabled = false }\n'
        )
    return "\n".join(lines)


def _template(target: str, probe: str, outcome: str) -> bytes:
    at = utcnow().replace(year=2000, month=1, day=1, hour=0, minute=0, second=0, microsecond=1)
    msg = ProbeResult(target=target, probe=probe, outcome=outcome, latency_ms=0.5, observed_at=at)  # type: ignore[arg-type]
    data = encode(msg)
    assert _STAMP.encode() in data, data  # the slot's time replaces it
    return data


# ---------------------------------------------------------------- child roles


async def generator_role(link: Link, url: str, targets: int, canaries: int, interval_s: float) -> None:
    """Three vantage points' worth of results every ``interval_s``, and the canary observer."""
    nc = await bench_connect(url, "bench-generator")
    stamp = _STAMP.encode()
    subjects = Subjects(PREFIX)
    fleet = [(subjects.probe(t, p), _template(t, p, "pass")) for t in target_names(targets) for p in probe_ids(PROBES)]
    slots = [fleet[i::SLOTS] for i in range(SLOTS)]
    canary = [
        (name, subjects.probe(name, "vp-0"), _template(name, "vp-0", "pass"), _template(name, "vp-0", "warn"))
        for name in canary_names(canaries)
    ]
    pending: dict[str, tuple[str, int]] = {}
    samples: list[tuple[int, int]] = []  # (publish time, lag ns)
    missed: list[int] = []  # publish times of flips not decided within an interval

    canary_subject = f"{PREFIX}.state.canary-"

    async def on_state(msg: Any) -> None:
        arrived = now_ns()
        if not msg.subject.startswith(canary_subject):
            return
        event = decode_state_changed(msg.data)
        want = pending.get(event.target)
        if want is not None and want[0] == event.state:
            samples.append((want[1], arrived - want[1]))
            del pending[event.target]

    await nc.subscribe(f"{PREFIX}.state.*", cb=on_state)
    await sync_subscriptions(nc)
    link.send("ready")
    await link.expect("go", 600)
    loop = asyncio.get_running_loop()
    published = 0
    stop = asyncio.Event()

    async def stopper() -> None:
        while (await link.recv(3600))[0] != "stop":
            link.send("count", published, now_ns())  # "mark": report progress
        stop.set()

    control = asyncio.create_task(stopper())
    start = loop.time()
    tick = 0
    slot_s = interval_s / SLOTS
    publish = nc.publish
    while not stop.is_set():
        due = start + tick * slot_s
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing: the load is a rate
        slot = tick % SLOTS
        ts = format_timestamp(utcnow()).encode()
        for subject, data in slots[slot]:
            await publish(subject, data.replace(stamp, ts))
        published += len(slots[slot])
        if slot == 0:
            flip = (tick // SLOTS) % 2 == 1
            for name, subject, ok, warn in canary:
                if name in pending:
                    missed.append(pending[name][1])
                state = "degraded" if flip else "healthy"
                data = (warn if flip else ok).replace(stamp, ts)
                pending[name] = (state, now_ns())
                await publish(subject, data)
            published += len(canary)
        tick += 1
    await control
    await nc.flush()
    link.send("done", published, samples, missed)
    await nc.close()


async def coordinator_role(link: Link, url: str, text: str, targets: int) -> None:
    """The coordinator; reports counters and memory on each ``mark``."""
    from healthbus.bench._harness import RunningCoordinator

    rss_before = trimmed_rss_bytes()
    coordinator = await RunningCoordinator.start(text, url)
    try:
        link.send("ready", rss_before)
        while (message := await link.recv(3600))[0] == "mark":
            final = len(message) > 1 and message[1] == "final"
            usage = ProcessUsage.now()
            link.send(
                "counters",
                {
                    "at_ns": now_ns(),
                    "decided": coordinator.decided(),
                    "accepted": coordinator.accepted(),
                    "transitions": coordinator.transitions(),
                    "rss": rss_bytes(),
                    "rss_trimmed": trimmed_rss_bytes() if final else None,
                    "cpu_s": usage.cpu_s,
                    "peak_rss_mb": usage.peak_rss_mb,
                    "counters": coordinator.counters(),
                },
            )
    finally:
        await coordinator.stop()


# ---------------------------------------------------------------- the suite


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    from healthbus.bench._harness import require_coordinator

    require_coordinator()
    targets: int = opts.pick("targets", smoke=50, full=10_000)
    duration: float = opts.pick("duration", smoke=2.0, full=30.0)
    interval_s: float = opts.pick("interval", smoke=INTERVAL_S, full=INTERVAL_S)
    canaries = min(CANARIES, max(2, targets // 10))
    warmup = 1.5 if opts.size == "smoke" else 5.0
    machine = machine_description()
    text = config_text(targets, canaries, interval_s)
    async with embedded_nats(opts.workdir) as server, ChildGroup() as group:
        coord = group.start("coordinator", coordinator_role, server.url, text, targets + canaries)
        (rss_before,) = await coord.link.expect("ready", 120)
        gen = group.start("generator", generator_role, server.url, targets, canaries, interval_s)
        await gen.link.expect("ready", 120)
        gen.link.send("go")
        started = now_ns()
        # The first results turn every target from unknown to healthy: a burst of
        # StateChanged to publish. The window starts once that burst is out (and after
        # at least ``warmup`` seconds), so it measures the steady state.
        await asyncio.sleep(warmup)
        startup_s = None
        for _ in range(int(_STARTUP_LIMIT_S / 0.5)):
            coord.link.send("mark")
            (peek,) = await coord.link.expect("counters", 30)
            if peek["counters"]["outbox_pending"] == 0 and peek["transitions"] >= targets:
                startup_s = round((peek["at_ns"] - started) / 1e9, 2)
                break
            await asyncio.sleep(0.5)
        coord.link.send("mark")
        gen.link.send("mark")
        (c0,) = await coord.link.expect("counters", 30)
        p0, g0 = await gen.link.expect("count", 30)
        await asyncio.sleep(duration)
        coord.link.send("mark", "final")
        gen.link.send("mark")
        (c1,) = await coord.link.expect("counters", 30)
        p1, g1 = await gen.link.expect("count", 30)
        gen.link.send("stop")
        _published, samples, missed = await gen.link.expect("done", 60)
    window = [lag for sent, lag in samples if g0 <= sent <= g1]
    missed_in_window = sum(1 for sent in missed if g0 <= sent <= g1)
    elapsed_pub = (g1 - g0) / 1e9
    elapsed_dec = (c1["at_ns"] - c0["at_ns"]) / 1e9
    published_rate = (p1 - p0) / elapsed_pub
    decided_rate = (c1["decided"] - c0["decided"]) / elapsed_dec
    lag_ms = [x / 1e6 for x in window]
    lag_p99 = round(percentile(lag_ms, 99), 3) if lag_ms else None
    total_targets = targets + canaries
    bytes_per_target = round((c1["rss_trimmed"] - rss_before) / total_targets)
    bytes_per_target_rss = round((c1["rss"] - rss_before) / total_targets)
    kept_up = (
        lag_p99 is not None
        and lag_p99 < interval_s * 1000
        and missed_in_window == 0
        and decided_rate >= 0.98 * published_rate
    )
    data: dict[str, Any] = {
        "targets": targets,
        "canaries": canaries,
        "probes": PROBES,
        "interval_s": interval_s,
        "duration_s": duration,
        "published_per_s": round(published_rate, 1),
        "results_per_s": round(decided_rate, 1),
        "kept_up": kept_up,
        "startup_s": startup_s,
        "lag_samples": len(window),
        "lag_p50_ms": round(statistics.median(lag_ms), 3) if lag_ms else None,
        "lag_p99_ms": lag_p99,
        "lag_max_ms": round(max(lag_ms), 3) if lag_ms else None,
        "lag_missed": missed_in_window,
        "bytes_per_target": bytes_per_target,
        "bytes_per_target_untrimmed": bytes_per_target_rss,
        "coordinator_rss_mb": round(c1["rss"] / (1024 * 1024), 1),
        "coordinator_cpu_share": round((c1["cpu_s"] - c0["cpu_s"]) / elapsed_dec, 3),
        "transitions_in_window": c1["transitions"] - c0["transitions"],
        "coordinator_counters": c1["counters"],
    }
    goals = [
        Goal("keeps up (decided ≥ 98% of published, lag p99 < interval)", kept_up,
             f"{data['results_per_s']}/s of {data['published_per_s']}/s, lag p99 {lag_p99} ms"),
        Goal(f"< {GOAL_BYTES_PER_TARGET} bytes per target", bytes_per_target < GOAL_BYTES_PER_TARGET,
             f"{bytes_per_target} bytes"),
    ]  # fmt: skip
    return SuiteResult("scale", opts.size, data, goals, [], machine)
