"""Suite ``groups``: instances reading from a group of three real PostgreSQL replicas through
the SQLAlchemy adapter (``GroupRouter``), one replica stopped mid-run.

Three PostgreSQL clusters of their own, each holding the same read-only table (no
replication is needed: the table is written once at start), a nats-server, the coordinator
and one probe worker in their own processes, and ``--instances`` service instances (smoke
4, full 20) in this process, each with its own HealthClient, its own engine and pool per
member, reading ``SELECT name FROM whoami`` (the row names the replica) every
:data:`READ_PERIOD_S` through ``GroupRouter.async_session_scope(read_only=True)``.

The stop: after ``--duration`` seconds (smoke 2, full 5) of reads, replica ``pg-b`` is
stopped (``pg_ctl stop -m fast``). Each instance's **verdict** is the moment its own
HealthClient answers ``is_available("pg-b")`` False. Figures:

* ``failed_reads`` — reads that raised (any member) after the instance's verdict (goal 0);
  ``failed_reads_before_verdict`` those between the stop and the verdict (the local trip
  keeps them to about one per instance);
* ``reads_on_stopped_member_after_verdict`` — reads routed to ``pg-b`` after the verdict (0);
* ``time_to_reroute_ms_p99`` — per instance, from the stop to its last read routed to
  ``pg-b`` (the first read that failed there trips it locally), p99 over instances;
* ``spread`` — per policy, the share of reads each member served with all three up (the
  coordinator restarted with that policy between runs); ``spread_after_stop`` — the same
  after the stop (round-robin).

The coordinator and probe worker run shipped defaults except what ``settings_not_default``
lists (a short check interval, so the run is short).
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult, SuiteUnavailable, settings_not_default
from healthbus.bench._measure import machine_description
from healthbus.bench._outage import service_role
from healthbus.bench._procs import Child, ChildGroup
from healthbus.bench._servers import BenchPostgres, ServerStartError, embedded_nats

__all__ = ["run"]

PREFIX = "benchgroups"
MEMBERS = ("pg-a", "pg-b", "pg-c")
STOPPED = "pg-b"
READ_PERIOD_S = 0.02
POLICIES = ("round-robin", "least-latency", "weighted", "primary-first")
WEIGHTS = {"pg-a": 3, "pg-b": 2, "pg-c": 1}


def config_text(dsns: dict[str, str], policy: str) -> str:
    """The bench's configuration: three postgres targets and the group ``pg`` with ``policy``."""
    lines = [f'[bus]\nprefix = "{PREFIX}"\n', '[defaults]\ninterval = "500ms"\ntimeout = "400ms"\n']
    for member, dsn in dsns.items():
        lines.append(f'[[targets]]\nname = "{member}"\nkind = "postgres"\nurl = "{dsn}"\n')
    members = ", ".join(f'"{m}"' for m in MEMBERS)
    group = f'[[groups]]\nname = "pg"\nmembers = [{members}]\npolicy = "{policy}"\n'
    if policy == "weighted":
        group += "weights = { " + ", ".join(f"{m} = {w}" for m, w in WEIGHTS.items()) + " }\n"
    lines.append(group)
    return "\n".join(lines)


class Instance:
    """One service instance: its HealthClient, its router, and every read it made."""

    def __init__(self, health: Any, router: Any) -> None:
        self.health = health
        self.router = router
        self.reads: list[tuple[int, str | None, bool]] = []
        """(monotonic ns, member it was routed to or None, succeeded)."""
        self.verdict_ns: int | None = None
        health.on_change(self._on_change)

    def _on_change(self, event: Any) -> None:
        if event.target == STOPPED and self.verdict_ns is None and not self.health.is_available(STOPPED):
            self.verdict_ns = time.monotonic_ns()

    async def read_once(self) -> None:
        from sqlalchemy import text

        from healthbus.subscribers import DependencyUnavailable

        member: str | None = None
        try:
            async with self.router.async_session_scope(read_only=True) as session:
                member = session.info["healthbus_member"]
                await session.execute(text("SELECT name FROM whoami"))
        except DependencyUnavailable as exc:
            self.reads.append((time.monotonic_ns(), exc.target if exc.target in MEMBERS else member, False))
            return
        self.reads.append((time.monotonic_ns(), member, True))

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.read_once()
            await asyncio.sleep(READ_PERIOD_S)


async def _seed(dsn: str, member: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS whoami (name text)")
        await conn.execute("DELETE FROM whoami")
        await conn.execute("INSERT INTO whoami VALUES ($1)", member)
    finally:
        await conn.close()


async def _open_instances(url: str, config: Any, n: int) -> list[Instance]:
    from healthbus.bench._harness import connect_health_client
    from healthbus.subscribers.sqlalchemy import GroupRouter

    out = []
    for i in range(n):
        health = await connect_health_client(url, PREFIX, instance=f"bench-groups-{i}")
        router = GroupRouter.from_config(config, "pg", health, pool_size=2, connect_args={"timeout": 1})
        out.append(Instance(health, router))
    return out


async def _close_instances(instances: list[Instance]) -> None:
    for inst in instances:
        await inst.router.dispose()
        await inst.health.close()


async def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.05)


def _sees(instances: list[Instance], policy: str) -> bool:
    return all((g := inst.health.group("pg")) is not None and g.policy == policy for inst in instances)


def _all_usable(instances: list[Instance]) -> bool:
    return all(
        (g := inst.health.group("pg")) is not None
        and g.available == len(MEMBERS)
        and all(inst.health.is_available(m) for m in MEMBERS)
        for inst in instances
    )


async def _reads_for(instances: list[Instance], seconds: float) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(inst.loop(stop)) for inst in instances]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)


def _shares(reads: list[tuple[int, str | None, bool]]) -> dict[str, float]:
    ok = [m for _, m, good in reads if good and m is not None]
    return {m: round(ok.count(m) / len(ok), 3) if ok else 0.0 for m in MEMBERS}


async def run(opts: BenchOptions) -> SuiteResult:
    """Spread per policy with all up, then a replica stopped under round-robin."""
    from healthbus.bench._harness import require_coordinator, require_health_client, require_probe_worker
    from healthbus.protocol import load_config_text

    require_coordinator()
    require_probe_worker()
    require_health_client()
    missing = [m for m in ("sqlalchemy", "asyncpg") if importlib.util.find_spec(m) is None]
    if missing:
        raise SuiteUnavailable(f"the groups suite needs {', '.join(missing)} (the healthbus-bench dependencies)")
    n: int = opts.pick("instances", smoke=4, full=20)
    phase_s: float = opts.pick("duration", smoke=2.0, full=5.0)
    machine = machine_description()
    servers: dict[str, BenchPostgres] = {}
    try:
        for member in MEMBERS:
            servers[member] = BenchPostgres().start()
    except ServerStartError as exc:
        for pg in servers.values():
            pg.remove()
        raise SuiteUnavailable(f"PostgreSQL cannot be started here: {exc}") from None
    dsns = {m: pg.dsn for m, pg in servers.items()}
    spread: dict[str, dict[str, float]] = {}
    data: dict[str, Any] = {}
    try:
        for member, dsn in dsns.items():
            await _seed(dsn, member)
        async with embedded_nats(opts.workdir) as server, ChildGroup(stop_timeout=30.0) as group:
            probe = group.start("probe", service_role, server.url, config_text(dsns, "round-robin"), "probe", "p0")
            await probe.link.expect("ready", 60)
            coordinator: Child | None = None
            instances: list[Instance] = []
            try:
                for policy in (*POLICIES[1:], POLICIES[0]):  # round-robin last: the stop runs under it
                    if coordinator is not None:
                        await group.stop(coordinator)
                    text_ = config_text(dsns, policy)
                    coordinator = group.start(
                        f"coordinator-{policy}", service_role, server.url, text_, "coordinator", ""
                    )
                    await coordinator.link.expect("ready", 60)
                    if not instances:
                        instances = await _open_instances(server.url, load_config_text(text_), n)
                    await _until(partial(_sees, instances, policy), f"every instance sees policy {policy}")
                    await _until(partial(_all_usable, instances), "every member usable by every instance")
                    marks = [len(inst.reads) for inst in instances]
                    await _reads_for(instances, phase_s)
                    spread[policy] = _shares(
                        [r for inst, k in zip(instances, marks, strict=True) for r in inst.reads[k:]]
                    )
                # The stop, under round-robin, reads going on throughout.
                stop_event = asyncio.Event()
                tasks = [asyncio.create_task(inst.loop(stop_event)) for inst in instances]
                await asyncio.sleep(phase_s / 2)
                stopped_ns = time.monotonic_ns()
                await asyncio.to_thread(servers[STOPPED].stop)
                await _until(lambda: all(i.verdict_ns is not None for i in instances), "every instance's verdict")
                await asyncio.sleep(phase_s)
                stop_event.set()
                await asyncio.gather(*tasks)
                data = _stop_figures(instances, stopped_ns, n)
            finally:
                await _close_instances(instances)
    finally:
        for pg in servers.values():
            pg.remove()
    data = {
        "instances": n,
        "members": len(MEMBERS),
        "read_period_ms": READ_PERIOD_S * 1000,
        **data,
        "spread": spread,
        "settings_not_default": settings_not_default(config_text(dsns, "round-robin")),
    }
    goals = [
        Goal("no failed read after the verdict", data["failed_reads"] == 0, f"{data['failed_reads']} failed"),
        Goal(
            "no read lands on the stopped replica after the verdict",
            data["reads_on_stopped_member_after_verdict"] == 0,
            f"{data['reads_on_stopped_member_after_verdict']} reads",
        ),
    ]
    return SuiteResult("groups", opts.size, data, goals, [], machine)


def _stop_figures(instances: list[Instance], stopped_ns: int, n: int) -> dict[str, Any]:
    failed_after = failed_before = on_stopped_after = 0
    reroute_ms: list[float] = []
    verdict_ms: list[float] = []
    after: list[tuple[int, str | None, bool]] = []
    for inst in instances:
        verdict = inst.verdict_ns
        if verdict is None:
            raise TimeoutError("an instance never saw the stopped replica's verdict")
        verdict_ms.append((verdict - stopped_ns) / 1e6)
        last_on_stopped = stopped_ns
        for t, member, ok in inst.reads:
            if t < stopped_ns:
                continue
            if member == STOPPED:
                last_on_stopped = max(last_on_stopped, t)
            if t >= verdict:
                after.append((t, member, ok))
                failed_after += not ok
                on_stopped_after += member == STOPPED
            else:
                failed_before += not ok
        reroute_ms.append((last_on_stopped - stopped_ns) / 1e6)
    reroute_sorted = sorted(reroute_ms)
    p99 = reroute_sorted[min(len(reroute_sorted) - 1, int(0.99 * len(reroute_sorted)))]
    return {
        "failed_reads": failed_after,
        "failed_reads_before_verdict": failed_before,
        "reads_on_stopped_member_after_verdict": on_stopped_after,
        "reads_after_verdict": len(after),
        "time_to_reroute_ms_p99": round(p99, 1),
        "time_to_reroute_ms_median": round(statistics.median(reroute_ms), 1),
        "verdict_ms_median": round(statistics.median(verdict_ms), 1),
        "verdict_ms_max": round(max(verdict_ms), 1),
        "spread_after_stop": _shares(after),
    }
