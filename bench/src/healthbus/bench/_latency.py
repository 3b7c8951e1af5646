"""Suite ``latency``: from the deciding ProbeResult's publish to 100 subscribers' callbacks.

A coordinator (its own process) watches ``--targets`` targets with one vantage point and
thresholds of 1, so one ``fail`` result decides ``healthy → unavailable``. ``--subscribers``
processes (default 100) each run one HealthClient. For each target in turn, the suite
publishes one failing ProbeResult and every subscriber's ``on_change`` callback notes
the machine-wide monotonic time at which the verdict reached it; a sample is
``callback time − publish time``. Failures are injected ``GAP_S`` apart (longer than a
fan-out takes even on a loaded machine; ``injections_overlapped`` counts the times it was
not), and subscribers keep their samples until the end, so measuring adds nothing to the
path being measured.

Baseline, same run, *paired*: as many processes again, each a plain nats-py core
subscription on the state subjects that only decodes, run at the same time as the
HealthClients (started interleaved, one of each in turn, so neither design subscribes
first). Every verdict reaches both designs in the same fan-out, so both see exactly the
same load and the same moments of the shared machine; the baseline is the floor of
fanning one message out to that many Python processes here. (Run one design after the
other instead and a drift of the machine's load between the phases moves the ratio by
more than the 5 % being judged.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import Profiler, machine_description, now_ns, summarize_ms
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._procs import Child, ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import bench_config_text, target_names
from healthbus.bus import sync_subscriptions
from healthbus.protocol import ProbeResult, Subjects, decode_state_changed, encode, utcnow

__all__ = ["run"]

PREFIX = "benchlatency"
GOAL_P99_MS = 10.0
GOAL_VS_BASELINE = 1.05  # HealthClient's p99 within 5% of plain core-NATS subscribers'
SETTLE_S = 1.0
GAP_S = 0.3  # between injected failures: longer than any fan-out seen on a loaded machine


async def subscriber_role(link: Link, url: str, prefix: str) -> None:
    """One service instance: a HealthClient whose callback notes when a verdict arrives."""
    from healthbus.bench._harness import open_health_client

    async with open_health_client(url, prefix) as health:
        seen: list[tuple[str, str, int]] = []

        def on_change(event: Any) -> None:
            # The sample ends here. It is kept locally and reported at the end, so
            # measuring adds no work (and no wake-up of the parent) to the fan-out.
            seen.append((event.target, event.state, now_ns()))

        health.on_change(on_change)
        profiler = Profiler("subscriber")
        profiler.start()
        link.send("ready")
        while (message := await link.recv(3600))[0] != "stop":
            if message[0] == "report":
                profiler.stop()
                link.send("samples", seen)


async def coordinator_role(link: Link, url: str, config_text: str) -> None:
    """The coordinator, in its own process."""
    from healthbus.bench._harness import RunningCoordinator

    coordinator = await RunningCoordinator.start(config_text, url)
    try:
        link.send("ready")
        while (await link.recv(3600))[0] != "stop":
            pass
    finally:
        await coordinator.stop()


def _result(target: str, outcome: str) -> bytes:
    if outcome == "fail":
        msg = ProbeResult(
            target=target, probe="vp-0", outcome="fail", latency_ms=1.0, observed_at=utcnow(),
            error_kind="refused", error="connection refused",
        )  # fmt: skip
    else:
        msg = ProbeResult(target=target, probe="vp-0", outcome="pass", latency_ms=1.0, observed_at=utcnow())
    return encode(msg)


async def _reports(children: list[Child], names: list[str], timeout: float) -> list[dict[str, int]]:
    """Each child's callback time per target reaching ``unavailable``.

    Asks again (bounded by ``timeout``) while some child has not seen every failure yet.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        arrivals: list[dict[str, int]] = []
        for child in children:
            child.link.send("report")
            (seen,) = await child.link.expect("samples", 30)
            first: dict[str, int] = {}
            for target, state, at in seen:
                if state == "unavailable" and target not in first:
                    first[target] = at
            arrivals.append(first)
        missing = sum(1 for a in arrivals for n in names if n not in a)
        if not missing:
            return arrivals
        if loop.time() > end:
            raise RuntimeError(f"{missing} of {len(names) * len(children)} verdicts never reached a subscriber")
        await asyncio.sleep(0.5)


async def raw_subscriber_role(link: Link, url: str, prefix: str) -> None:
    """The baseline: a plain nats-py subscription that decodes each StateChanged, nothing else."""
    nc = await bench_connect(url, "bench-raw-subscriber")
    seen: list[tuple[str, str, int]] = []

    async def on_msg(msg: Any) -> None:
        at = now_ns()
        event = decode_state_changed(msg.data)
        seen.append((event.target, event.state, at))

    try:
        await nc.subscribe(f"{prefix}.state.*", cb=on_msg)
        await sync_subscriptions(nc)
        link.send("ready")
        while (message := await link.recv(3600))[0] != "stop":
            if message[0] == "report":
                link.send("samples", seen)
    finally:
        await nc.close()


async def _fan_out(
    group: ChildGroup, nc: Any, url: str, names: list[str], subscribers: int, gap: float, settle: float
) -> tuple[dict[str, tuple[list[int], list[int]]], int]:
    """Start ``subscribers`` processes of each design (interleaved), inject one failure per name.

    Returns, per design (``health`` and ``raw``), every sample and each injection's first
    sample, in ns; and the injections whose fan-out (to either design) had not ended
    when the next one was published.
    """
    roles = {"health": subscriber_role, "raw": raw_subscriber_role}
    children: dict[str, list[Child]] = {design: [] for design in roles}
    try:
        for i in range(subscribers):
            for design, role in roles.items():
                children[design].append(group.start(f"{design}-{i}", role, url, PREFIX))
        for design_children in children.values():
            for child in design_children:
                await child.link.expect("ready", 120)
        await asyncio.sleep(settle)  # let the processes finish starting before timing anything
        sent: dict[str, int] = {}
        for name in names:
            payload = _result(name, "fail")
            sent[name] = now_ns()
            await nc.publish(Subjects(PREFIX).probe(name, "vp-0"), payload)
            await nc.flush()
            # Let the fan-out finish before the next failure: samples must not queue
            # behind each other (overlaps are counted).
            await asyncio.sleep(gap)
        arrivals = {design: await _reports(kids, names, 60) for design, kids in children.items()}
    finally:
        for design_children in children.values():
            for child in design_children:
                await group.stop(child)
    figures: dict[str, tuple[list[int], list[int]]] = {}
    for design, design_arrivals in arrivals.items():
        samples: list[int] = []
        firsts: list[int] = []
        for name in names:
            times = [a[name] for a in design_arrivals]
            samples.extend(t - sent[name] for t in times)
            firsts.append(min(times) - sent[name])
        figures[design] = (samples, firsts)
    last = {name: max(a[name] for design_arrivals in arrivals.values() for a in design_arrivals) for name in names}
    overlapped = sum(1 for i, name in enumerate(names[:-1]) if last[name] > sent[names[i + 1]])
    return figures, overlapped


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    from healthbus.bench._harness import require_coordinator, require_health_client

    require_coordinator()
    require_health_client()
    subscribers: int = opts.pick("subscribers", smoke=3, full=100)
    rounds: int = opts.pick("targets", smoke=3, full=100)
    gap: float = 0.05 if opts.size == "smoke" else GAP_S
    settle = 0.1 if opts.size == "smoke" else SETTLE_S
    machine = machine_description()
    names = target_names(rounds)
    config_text = bench_config_text(
        names, prefix=PREFIX, interval="60s", stale_after="600s", failure_threshold=1, success_threshold=1,
        quorum="any", backoff_base="60s", backoff_max="60s", flap=False,
    )  # fmt: skip
    async with embedded_nats(opts.workdir) as server, ChildGroup() as group:
        coordinator = group.start("coordinator", coordinator_role, server.url, config_text)
        await coordinator.link.expect("ready", 60)
        nc = await bench_connect(server.url, "bench-injector")
        try:
            subjects = Subjects(PREFIX)
            # Every target healthy first, and seen so by an observer, before subscribers start.
            state_sub = await nc.subscribe(f"{PREFIX}.state.*")
            for name in names:
                await nc.publish(subjects.probe(name, "vp-0"), _result(name, "pass"))
            await nc.flush()
            healthy: set[str] = set()
            while len(healthy) < len(names):
                try:
                    msg = await state_sub.next_msg(timeout=30)
                except nats.errors.TimeoutError:
                    raise RuntimeError(
                        f"the coordinator announced {len(healthy)} of {len(names)} targets healthy within 30 s"
                    ) from None
                event = decode_state_changed(msg.data)
                if event.state == "healthy":
                    healthy.add(event.target)
            await state_sub.unsubscribe()
            figures, overlapped = await _fan_out(group, nc, server.url, names, subscribers, gap, settle)
        finally:
            await nc.close()
    samples, firsts = figures["health"]
    base_samples, base_firsts = figures["raw"]
    stats = summarize_ms(samples)
    first = summarize_ms(firsts)
    base = summarize_ms(base_samples)
    base_first = summarize_ms(base_firsts)
    data: dict[str, Any] = {
        "subscribers": subscribers,
        "samples": len(samples),
        "failures_injected": rounds,
        **stats,
        # The first subscriber to hear of a failure shows the pipeline itself; the gap
        # to the rest is the time the machine takes to wake and run every subscriber.
        "first_subscriber_p50_ms": first["p50_ms"],
        "first_subscriber_p99_ms": first["p99_ms"],
        "injections_overlapped": overlapped,
        # The same fan-out to plain nats-py subscribers (core NATS, decode only): the
        # floor for N Python processes on this machine.
        "baseline_p50_ms": base["p50_ms"],
        "baseline_p99_ms": base["p99_ms"],
        "baseline_max_ms": base["max_ms"],
        "baseline_first_subscriber_p50_ms": base_first["p50_ms"],
        "p99_vs_baseline": round(stats["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None,
    }
    ratio = data["p99_vs_baseline"]
    goals = [
        Goal(
            f"p99 < {GOAL_P99_MS:g} ms on loopback",
            stats["p99_ms"] < GOAL_P99_MS,
            f"p99 {stats['p99_ms']} ms; plain nats-py subscribers, same machine and run: p99 {base['p99_ms']} ms",
        ),
        Goal(
            f"p99 within {GOAL_VS_BASELINE:g}x of plain core-NATS subscribers",
            None if ratio is None else ratio <= GOAL_VS_BASELINE,
            f"{ratio}x",
        ),
    ]
    notes = [
        "publish → coordinator decides → JetStream stores → core NATS delivery to each HealthClient's plain "
        f"subscription → callback (no consumer); {subscribers} HealthClient and {subscribers} baseline "
        f"processes share {machine['nproc']} cores",
        "baseline, paired: the same failures, decided by the same coordinator and delivered in the same fan-out, "
        "received by plain nats-py core subscriptions that only decode (the floor for as many Python processes "
        "on this machine), running beside the HealthClients",
    ]
    return SuiteResult("latency", opts.size, data, goals, notes, machine)
