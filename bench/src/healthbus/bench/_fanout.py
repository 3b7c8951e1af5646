"""Suite ``fanout``: load on a dependency and time to degrade, with and without healthbus.

50 service instances (``--instances``), each in its own process, all needing one Redis
(a redis-server this suite starts on a free loopback port):

(a) baseline: each instance runs its own health manager (:mod:`._manager`): a PING every
    second with redis-py retries and a breaker;
(b) healthbus: 2 probe workers (1 s interval) + a coordinator, each in its own process,
    and one HealthClient per instance, using Redis through the Redis adapter
    (``HealthyRedis``), which reports connection failures (failure reports on, the
    default): the coordinator has the workers check at once instead of at their next
    scheduled check;
(c) the same without failure reports (``report_failures=False``): the workers only see
    the outage at their next scheduled check.

For each, after every instance sees Redis healthy, the suite samples ``INFO all`` twice
``--duration`` seconds apart (PING calls → checks per second; all calls → commands per
second; ``connected_clients``; ``total_connections_received`` → connections opened per
second). Only then do the healthbus instances start their own
traffic (a GET every 50 ms each, as a service serving requests), so the steady-state
figures count health checks alone. Then it stops redis-server and times how long until
the last instance has flipped to degraded (by its health verdict: the baseline's manager,
healthbus's ``is_available``), starts redis-server again on the same port and times how
long until the last instance is back. Our own sampling connection and our own INFO calls
are subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import redis.asyncio as aioredis

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult, settings_not_default
from healthbus.bench._manager import RedisHealthManager
from healthbus.bench._measure import machine_description, now_ns
from healthbus.bench._procs import Child, ChildError, ChildGroup, Link
from healthbus.bench._servers import BenchRedis, embedded_nats, restart_stamped

__all__ = ["run"]

TARGET = "redis-main"
WORKERS = 2
INTERVAL_S = 1.0
#: healthbus re-checks a failing target this often (``retry_interval``): the cost is
#: WORKERS / RETRY_INTERVAL_S checks per second while it fails, none in steady state.
RETRY_INTERVAL_S = 0.05
#: How often each healthbus instance calls Redis once its traffic starts (seconds).
TRAFFIC_PERIOD_S = 0.05
_SETTLE_TIMEOUT_S = 60.0
#: Checks per second on Redis in steady state with healthbus: one per worker per interval.
STEADY_CHECKS_PER_S = WORKERS / INTERVAL_S


# ---------------------------------------------------------------- child roles


async def _until_stop(link: Link) -> None:
    while True:
        message = await link.recv(3600)
        if message[0] == "stop":
            return


async def baseline_instance_role(link: Link, port: int, interval: float) -> None:
    """One service instance with its own Redis health manager."""
    stop = asyncio.Event()
    manager = RedisHealthManager(
        "127.0.0.1", port, interval=interval, on_change=lambda healthy: link.send("state", healthy, now_ns())
    )

    async def start_later() -> None:
        # Real instances start at unrelated moments: spread the first check over one
        # interval instead of having all of them check in lock-step.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(0, interval))
        await manager.run(stop)

    task = asyncio.create_task(start_later())
    try:
        await _until_stop(link)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await manager.close()


async def healthbus_instance_role(link: Link, url: str, prefix: str, redis_url: str, reports: bool) -> None:
    """One service instance with a HealthClient, calling Redis through the adapter once told to."""
    from healthbus.bench._harness import open_health_client, redis_adapter

    async with open_health_client(url, prefix, report_failures=reports) as health:
        last: list[bool | None] = [None]

        def report(_event: object = None) -> None:
            available = health.is_available(TARGET)
            if available != last[0]:
                last[0] = available
                link.send("state", available, now_ns())

        health.on_change(report)
        report()

        def poll_ramp() -> None:
            # During a re-admission ramp this instance is admitted at its own moment, with no
            # event: look again every 5 ms while its state is up but it is not admitted yet.
            state = health.state(TARGET)
            if state is not None and state.available and not health.is_available(TARGET):
                asyncio.get_running_loop().call_later(0.005, poll_ramp)
            report()

        health.on_change(lambda _event: poll_ramp())
        async with redis_adapter(health, redis_url, TARGET, fast=True) as cache:

            async def traffic() -> None:
                while True:
                    with contextlib.suppress(Exception):
                        await cache.get("bench-key")
                    await asyncio.sleep(TRAFFIC_PERIOD_S)

            task: asyncio.Task[None] | None = None
            try:
                while True:
                    message = await link.recv(3600)
                    if message[0] == "stop":
                        return
                    if message[0] == "describe":
                        link.send("describe", f"bus {health.bus}; {TARGET}: {health.state(TARGET)}")
                    if message[0] == "traffic" and task is None:
                        task = asyncio.create_task(traffic())
                        link.send("traffic")
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


async def probe_worker_role(link: Link, url: str, config_text: str, worker_id: str) -> None:
    """A probe worker (one vantage point)."""
    from healthbus.bench._harness import RunningProbeWorker

    worker = await RunningProbeWorker.start(config_text, url, worker_id)
    try:
        link.send("ready")
        await _until_stop(link)
    finally:
        await worker.stop()


async def coordinator_service_role(link: Link, url: str, config_text: str) -> None:
    """The coordinator."""
    from healthbus.bench._harness import RunningCoordinator

    coordinator = await RunningCoordinator.start(config_text, url)
    try:
        link.send("ready")
        await _until_stop(link)
    finally:
        await coordinator.stop()


# ---------------------------------------------------------------- measuring


async def _info(client: aioredis.Redis) -> dict[str, Any]:
    info: dict[str, Any] = await client.info("all")
    return info


def _calls(info: dict[str, Any]) -> tuple[int, int]:
    """(PING calls, all calls) from INFO commandstats."""
    ping = 0
    total = 0
    for key, value in info.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            calls = int(value.get("calls", 0))
            total += calls
            if key == "cmdstat_ping":
                ping = calls
    return ping, total


async def _describe(child: Child) -> str:
    """What a healthbus instance says about its client (for an error message)."""
    child.link.send("describe")
    try:
        while (message := await child.link.recv(5))[0] != "describe":
            pass
    except (TimeoutError, ChildError) as exc:
        return f"no description: {exc}"
    return str(message[1])


async def _await_state(children: list[Child], want: bool, timeout: float) -> list[int]:
    """For each child, the time of its first report of ``want`` (waiting up to ``timeout``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout

    async def one(child: Child) -> int:
        last: tuple[Any, ...] | None = None
        while True:
            remaining = end - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await child.link.recv(remaining)
            except TimeoutError:
                raise TimeoutError(
                    f"{child.name} did not report {'healthy' if want else 'degraded'} in {timeout:g}s "
                    f"(its last message: {last!r}; {await _describe(child)})"
                ) from None
            kind, *rest = last = message
            if kind == "state" and rest[0] is want:
                return int(rest[1])

    return list(await asyncio.gather(*(one(c) for c in children)))


async def _measure(
    redis: BenchRedis, instances: list[Child], duration: float, *, traffic: bool = False
) -> dict[str, Any]:
    await _await_state(instances, True, _SETTLE_TIMEOUT_S)
    # One full interval more, so every checker is in its steady rhythm.
    await asyncio.sleep(INTERVAL_S)
    # One sampling connection for both samples, so the only commands of ours between
    # them are the first INFO itself.
    sampler = aioredis.Redis(host="127.0.0.1", port=redis.port, socket_timeout=5, socket_connect_timeout=5)
    try:
        before = await _info(sampler)
        t0 = now_ns()
        await asyncio.sleep(duration)
        after = await _info(sampler)
        t1 = now_ns()
    finally:
        await sampler.aclose()
    ping0, all0 = _calls(before)
    ping1, all1 = _calls(after)
    elapsed = (t1 - t0) / 1e9
    if traffic:  # the instances' own calls start only now: the figures above are health checks alone
        for child in instances:
            child.link.send("traffic")
        for child in instances:
            await child.link.expect("traffic", 30)
        await asyncio.sleep(INTERVAL_S)  # traffic flowing, as before an outage in production
    stopped = now_ns()
    await asyncio.to_thread(redis.stop)
    degraded = await _await_state(instances, False, _SETTLE_TIMEOUT_S)
    # When redis-server began to accept connections (its own readiness wait, and this loop
    # getting control back, can come seconds later on a loaded machine).
    restarted = await restart_stamped(redis.start, redis.host, redis.port)
    recovered = await _await_state(instances, True, _SETTLE_TIMEOUT_S)
    return {
        "checks_per_s": round((ping1 - ping0) / elapsed, 2),
        # our own INFO at t0 is counted in the delta; the one at t1 is not yet.
        "commands_per_s": round((all1 - all0 - 1) / elapsed, 2),
        "connections": int(after.get("connected_clients", 0)) - 1,
        # Our sampling connection was opened before the first sample: not in the delta.
        "connections_opened_per_s": round(
            (int(after.get("total_connections_received", 0)) - int(before.get("total_connections_received", 0)))
            / elapsed,
            2,
        ),
        "degrade_all_ms": round((max(degraded) - stopped) / 1e6, 1),
        "degrade_p50_ms": round(sorted(d - stopped for d in degraded)[len(degraded) // 2] / 1e6, 1),
        # From the first instance to notice to the last: how far apart their views were.
        "degrade_spread_ms": round((max(degraded) - min(degraded)) / 1e6, 1),
        # From redis-server accepting connections again to the last instance back.
        "recover_all_ms": round((max(recovered) - restarted) / 1e6, 1),
    }


async def _baseline(opts: BenchOptions, instances: int, duration: float) -> dict[str, Any]:
    redis = BenchRedis(opts.workdir / "redis-baseline").start()
    try:
        async with ChildGroup() as group:
            children = [
                group.start(f"instance-{i}", baseline_instance_role, redis.port, INTERVAL_S) for i in range(instances)
            ]
            return await _measure(redis, children, duration)
    finally:
        redis.stop()


def _config_text(prefix: str, redis_url: str) -> str:
    return (
        f'[bus]\nprefix = "{prefix}"\n\n'
        f'[defaults]\ninterval = "{INTERVAL_S:g}s"\ntimeout = "1s"\n'
        f'retry_interval = "{RETRY_INTERVAL_S * 1000:g}ms"\n\n'
        f'[[targets]]\nname = "{TARGET}"\nkind = "redis"\nurl = "{redis_url}"\nfeatures = ["cache"]\n'
    )


async def _healthbus(opts: BenchOptions, instances: int, duration: float, *, reports: bool) -> dict[str, Any]:
    prefix = "benchfanout"
    redis = BenchRedis(opts.workdir / ("redis-healthbus" if reports else "redis-healthbus-noreports")).start()
    try:
        async with embedded_nats(opts.workdir) as server, ChildGroup() as group:
            config_text = _config_text(prefix, redis.url)
            coordinator = group.start("coordinator", coordinator_service_role, server.url, config_text)
            await coordinator.link.expect("ready", 60)
            workers = [
                group.start(f"probe-{i}", probe_worker_role, server.url, config_text, f"bench-probe-{i}")
                for i in range(WORKERS)
            ]
            for w in workers:
                await w.link.expect("ready", 60)
            children = [
                group.start(f"instance-{i}", healthbus_instance_role, server.url, prefix, redis.url, reports)
                for i in range(instances)
            ]
            return await _measure(redis, children, duration, traffic=True)
    finally:
        redis.stop()


async def run(opts: BenchOptions) -> SuiteResult:
    """Run both designs one after the other and compare."""
    from healthbus.bench._harness import require_coordinator, require_health_client, require_probe_worker

    require_coordinator()
    require_probe_worker()
    require_health_client()
    instances: int = opts.pick("instances", smoke=3, full=50)
    duration: float = opts.pick("duration", smoke=2.0, full=10.0)
    machine = machine_description()
    base = await _baseline(opts, instances, duration)
    hb = await _healthbus(opts, instances, duration, reports=True)
    quiet = await _healthbus(opts, instances, duration, reports=False)
    vs_baseline = round(hb["degrade_all_ms"] / base["degrade_all_ms"], 3) if base["degrade_all_ms"] > 0 else None
    recover_vs = round(hb["recover_all_ms"] / base["recover_all_ms"], 3) if base["recover_all_ms"] > 0 else None
    data: dict[str, Any] = {
        "instances": instances,
        "duration_s": duration,
        "probe_workers": WORKERS,
        "interval_s": INTERVAL_S,
        "retry_interval_s": RETRY_INTERVAL_S,
        "checks_per_s_baseline": base["checks_per_s"],
        "checks_per_s_healthbus": hb["checks_per_s"],
        "commands_per_s_baseline": base["commands_per_s"],
        "commands_per_s_healthbus": hb["commands_per_s"],
        "connections_baseline": base["connections"],
        "connections_healthbus": hb["connections"],
        "connections_opened_per_s_baseline": base["connections_opened_per_s"],
        "connections_opened_per_s_healthbus": hb["connections_opened_per_s"],
        "degrade_all_ms_baseline": base["degrade_all_ms"],
        "degrade_all_ms_healthbus": hb["degrade_all_ms"],
        "degrade_p50_ms_baseline": base["degrade_p50_ms"],
        "degrade_p50_ms_healthbus": hb["degrade_p50_ms"],
        "degrade_spread_ms_baseline": base["degrade_spread_ms"],
        "degrade_spread_ms_healthbus": hb["degrade_spread_ms"],
        "degrade_all_vs_baseline": vs_baseline,
        "recover_all_ms_baseline": base["recover_all_ms"],
        "recover_all_ms_healthbus": hb["recover_all_ms"],
        "recover_all_vs_baseline": recover_vs,
        "degrade_all_ms_healthbus_no_reports": quiet["degrade_all_ms"],
        "degrade_p50_ms_healthbus_no_reports": quiet["degrade_p50_ms"],
        "checks_per_s_healthbus_no_reports": quiet["checks_per_s"],
        # Every per-target setting of the healthbus run that is not the shipped default.
        "settings_not_default": settings_not_default(_config_text("benchfanout", "redis://127.0.0.1:1/0")),
    }
    ratio = base["checks_per_s"] / hb["checks_per_s"] if hb["checks_per_s"] else float("inf")
    goals = [
        Goal(
            "fewer checks on Redis with healthbus",
            hb["checks_per_s"] < base["checks_per_s"],
            f"{base['checks_per_s']}/s vs {hb['checks_per_s']}/s ({ratio:.1f}x fewer)",
        ),
        Goal(
            "every instance degraded in under 0.3 of the per-process time (failure reports on)",
            vs_baseline is not None and vs_baseline <= 0.3,
            f"{hb['degrade_all_ms']} ms vs {base['degrade_all_ms']} ms (ratio {vs_baseline}); "
            f"without reports {quiet['degrade_all_ms']} ms",
        ),
        Goal(
            "every instance back in at most half the per-process time (shipped trial and ramp settings)",
            recover_vs is not None and recover_vs <= 0.5,
            f"{hb['recover_all_ms']} ms vs {base['recover_all_ms']} ms (ratio {recover_vs})",
        ),
        Goal(
            "no extra check while nothing fails",
            hb["checks_per_s"] <= STEADY_CHECKS_PER_S * 1.05,
            f"{hb['checks_per_s']}/s with reports on, {STEADY_CHECKS_PER_S:g}/s expected ({WORKERS} workers)",
        ),
    ]
    notes = [
        "a healthbus check is a fresh connection (HELLO, CLIENT SETNAME) with PING + INFO (server version in "
        "details), closed after the check; the baseline's is one PING over a kept connection",
        "baseline degrades on its first failed check (after redis-py's 2 retries); healthbus on "
        f"failure_threshold=3 consecutive fails per worker, re-checked every {RETRY_INTERVAL_S * 1000:g} ms "
        "(retry_interval; the default, interval/5, is 200 ms), quorum of both workers",
        "healthbus instances call Redis (GET every 50 ms) through HealthyRedis; the first failing call "
        "reports it and the coordinator has both workers check at once (confirmation round)",
        "recovery: the probe workers trial the open target every trial_interval; success_threshold=2 "
        "passing trials re-admit it, through the fleet-wide ramp (ramp.from of the instances at once, "
        "all by ramp.duration); the baseline comes back at its next PING",
    ]
    return SuiteResult("fanout", opts.size, data, goals, notes, machine)
