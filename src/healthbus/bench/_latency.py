"""Suite ``latency``: from the deciding ProbeResult's publish to 100 subscribers' callbacks.

A coordinator (its own process) watches ``--targets`` targets with one vantage point and
thresholds of 1, so one ``fail`` result decides ``healthy → unavailable``. ``--subscribers``
processes (default 100) each run one HealthClient. For each target in turn, the suite
publishes one failing ProbeResult and every subscriber's ``on_change`` callback notes
the machine-wide monotonic time at which the verdict reached it; a sample is
``callback time − publish time``. The next failure is injected only once every
subscriber has seen the previous one, so samples never queue behind each other.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from typing import Any

import nats.errors

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import ProcessUsage, Profiler, machine_description, now_ns, summarize_ms
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._procs import Child, ChildGroup, Link
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import bench_config_text, target_names
from healthbus.protocol import ProbeResult, decode_state_changed, encode, utcnow

__all__ = ["run"]

PREFIX = "benchlatency"
GOAL_P99_MS = 10.0


async def subscriber_role(link: Link, url: str, prefix: str) -> None:
    """One service instance: a HealthClient whose callback notes when a verdict arrives."""
    from healthbus.bench._harness import open_health_client

    async with open_health_client(url, prefix) as health:

        def on_change(event: Any) -> None:
            at = now_ns()  # first thing: the sample ends here
            link.send("event", event.target, event.state, at)

        health.on_change(on_change)
        profiler = Profiler("subscriber")
        profiler.start()
        before = ProcessUsage.now().cpu_s
        link.send("ready")
        while (message := await link.recv(3600))[0] != "stop":
            if message[0] == "report":
                link.send("cpu", ProcessUsage.now().cpu_s - before)
                profiler.stop()


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


async def _collect(children: list[Child], target: str, state: str, timeout: float) -> list[int]:
    """Each child's callback time for ``target`` reaching ``state``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout

    async def one(child: Child) -> int:
        while True:
            kind, *rest = await child.link.recv(max(end - loop.time(), 0.001))
            if kind == "event" and rest[0] == target and rest[1] == state:
                return int(rest[2])

    return list(await asyncio.gather(*(one(c) for c in children)))


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    from healthbus.bench._harness import require_coordinator, require_health_client

    require_coordinator()
    require_health_client()
    subscribers: int = opts.pick("subscribers", smoke=3, full=100)
    rounds: int = opts.pick("targets", smoke=3, full=50)
    machine = machine_description()
    names = target_names(rounds)
    config_text = bench_config_text(
        names, prefix=PREFIX, interval="60s", stale_after="600s", failure_threshold=1, success_threshold=1,
        quorum="any", backoff_base="60s", backoff_max="60s", flap=False,
    )  # fmt: skip
    samples: list[int] = []
    firsts: list[int] = []  # per injection: the first subscriber's sample
    async with embedded_nats(opts.workdir) as server, ChildGroup() as group:
        coordinator = group.start("coordinator", coordinator_role, server.url, config_text)
        await coordinator.link.expect("ready", 60)
        nc = await bench_connect(server.url, "bench-injector")
        try:
            probe = f"{PREFIX}.probe."
            # Every target healthy first, and seen so by an observer, before subscribers start.
            state_sub = await nc.subscribe(f"{PREFIX}.state.*")
            for name in names:
                await nc.publish(probe + name, _result(name, "pass"))
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
            children = [group.start(f"subscriber-{i}", subscriber_role, server.url, PREFIX) for i in range(subscribers)]
            for child in children:
                await child.link.expect("ready", 120)
            for name in names:
                payload = _result(name, "fail")
                sent = now_ns()
                await nc.publish(probe + name, payload)
                await nc.flush()
                arrived = await _collect(children, name, "unavailable", 30)
                samples.extend(t - sent for t in arrived)
                firsts.append(min(arrived) - sent)
            cpu: list[float] = []
            for child in children:
                child.link.send("report")
                (cpu_s,) = await child.link.expect("cpu", 30)
                cpu.append(cpu_s)
        finally:
            await nc.close()
    stats = summarize_ms(samples)
    first = summarize_ms(firsts)
    # CPU one subscriber process spends per StateChanged (receive, decode, update, callback,
    # and this benchmark's report over a pipe): all of them must run once per verdict, on
    # nproc cores, which bounds how soon the last one can have it.
    per_event_us = statistics.mean(cpu) / rounds * 1e6
    nproc = os.cpu_count() or 1
    data: dict[str, Any] = {
        "subscribers": subscribers,
        "samples": len(samples),
        "failures_injected": rounds,
        **stats,
        # The first subscriber to hear of a failure shows the pipeline itself; the gap
        # to the rest is the time the machine takes to wake and run every subscriber.
        "first_subscriber_p50_ms": first["p50_ms"],
        "first_subscriber_p99_ms": first["p99_ms"],
        "subscriber_cpu_per_event_us": round(per_event_us, 1),
        "cpu_bound_all_subscribers_ms": round(subscribers * per_event_us / nproc / 1000, 2),
    }
    goals = [Goal(f"p99 < {GOAL_P99_MS:g} ms on loopback", stats["p99_ms"] < GOAL_P99_MS, f"p99 {stats['p99_ms']} ms")]
    notes = [
        "publish → coordinator decides → JetStream stores → 1 ordered consumer per subscriber → callback; "
        f"{subscribers} subscriber processes share {machine['nproc']} cores",
    ]
    return SuiteResult("latency", opts.size, data, goals, notes, machine)
