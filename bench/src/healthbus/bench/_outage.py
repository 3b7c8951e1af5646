"""Suite ``outage``: a real PostgreSQL goes down and comes back; how soon is the fleet back,
and what does its return cost the database?

A PostgreSQL cluster of its own (connections logged), a nats-server, the coordinator and
two probe workers (each in its own process, **shipped defaults** but for the target's URL:
the JSON says so in ``settings_not_default``), and ``--instances`` service instances (50)
in 10 processes, half of them asyncio (HealthClient, SQLAlchemy async engine on asyncpg)
and half synchronous (SyncHealthClient, SQLAlchemy engine on psycopg), every instance
with its own instance id and connection pool, running ``SELECT 1`` every 100 ms through
the SQLAlchemy adapter (``DatabaseGuard``).

For each outage length (5 s and 60 s; ``--duration`` sets the first, smoke: 2 s and 3 s):
PostgreSQL is stopped (``pg_ctl stop -m fast``) and started again; from the moment it
accepts TCP connections (tried every 2 ms while ``pg_ctl start`` runs) the suite times
each instance's first successful query (``back_after_restart_s_*``), counts the probe workers' checks
while the breaker was open and past its first trial (``trial_checks_per_s_while_open``),
and reads the server log for the new connections per second during the re-admission
(``ramp_connections_per_s_peak``: the busiest one-second bucket from the restart until
every instance is back, plus a second). The same outage is then run with the baseline
design: every instance has its own health manager (a ``SELECT 1`` every second through
its pool; traffic waits while its last check failed) and no healthbus
(``baseline_*``). Any exception an instance sees other than the adapter's
``DependencyUnavailable`` is counted (``errors_other_than_unavailable``).

Then the ``max_connections`` scenario: PostgreSQL restarts with ``max_connections`` the
workers' connections plus a quarter of the fleet (superuser slots included), so
the probes' checks pass and most instances are refused. For ``flap_window_s`` seconds the
suite counts the breaker re-opening on the instances' failure reports (``flaps``), the
growing delays before each next re-admission, and whether the flapping detector said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from nats.aio.msg import Msg

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult, SuiteUnavailable, settings_not_default
from healthbus.bench._measure import machine_description, now_ns
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._procs import Child, ChildGroup, Link
from healthbus.bench._servers import BenchPostgres, ServerStartError, embedded_nats, restart_stamped

__all__ = ["run"]

TARGET = "postgres-main"
PREFIX = "benchoutage"
WORKERS = 2
PROCESSES = 10
QUERY_PERIOD_S = 0.1
POOL_SIZE = 2
#: The baseline's own health check period (seconds), as a per-process manager runs it.
BASELINE_INTERVAL_S = 1.0
_SETTLE_TIMEOUT_S = 120.0


def _config_text(dsn: str) -> str:
    return f'[bus]\nprefix = "{PREFIX}"\n\n[[targets]]\nname = "{TARGET}"\nkind = "postgres"\nurl = "{dsn}"\n'


# ---------------------------------------------------------------- child roles


#: One writer at a time on a child's pipe: the synchronous instances send from their threads.
_SEND = threading.Lock()


class _Instance:
    """One service instance's view, told to the parent as up/down transitions."""

    def __init__(self, link: Link, index: int) -> None:
        self.link = link
        self.index = index
        self.up: bool | None = None

    def send(self, *message: object) -> None:
        with _SEND:
            self.link.send(*message)

    def ok(self) -> None:
        if self.up is not True:
            self.up = True
            self.send("up", self.index, now_ns())

    def refused(self, why: object = None) -> None:
        text = str(why)[:200]
        if self.up is not False:
            self.up = False
            self.send("down", self.index, now_ns(), text)
        elif text[:60] != self.why[:60]:
            self.send("why", self.index, text)  # still down, for another reason
        self.why = text

    why = ""

    def error(self, exc: BaseException) -> None:
        # Not "error": that kind is the child framework's own (the child failed).
        self.send("unexpected", self.index, f"{type(exc).__name__}: {str(exc)[:200]}")

    @contextlib.contextmanager
    def attempt(self, refusal: type[BaseException]) -> Iterator[None]:
        """One query: up if it succeeds, down on ``refusal`` (the adapter's), else an error."""
        try:
            yield
        except refusal as exc:
            self.refused(exc)
        except Exception as exc:
            self.error(exc)
        else:
            self.ok()


async def healthbus_instances_role(link: Link, url: str, dsn: str, first: int, count: int, sync: bool) -> None:
    """``count`` instances with healthbus: a client, an engine and a DatabaseGuard each."""
    import faulthandler
    import signal

    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    from healthbus.subscribers import DependencyUnavailable, HealthClient, SyncHealthClient
    from healthbus.subscribers.sqlalchemy import DatabaseGuard

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks, on a timeout: where is each thread?
    stop = threading.Event()
    rest = dsn.split("://", 1)[1]
    async with contextlib.AsyncExitStack() as stack:
        runs: list[Any] = []
        for i in range(first, first + count):
            me = _Instance(link, i)
            name = f"bench-outage-{i}@bench:{i}"
            if sync:
                health_sync = await asyncio.to_thread(SyncHealthClient.connect, url, prefix=PREFIX, instance=name)
                stack.push_async_callback(asyncio.to_thread, health_sync.close)
                engine = create_engine(
                    f"postgresql+psycopg://{rest}",
                    pool_size=POOL_SIZE,
                    max_overflow=0,
                    pool_timeout=2,
                    pool_pre_ping=True,  # as the baseline's (and any careful service's) pools
                    connect_args={"connect_timeout": 2},
                )
                stack.callback(engine.dispose)
                guard = DatabaseGuard(engine, health_sync, target=TARGET, local_cooldown=0.5)

                def loop(guard: DatabaseGuard = guard, me: _Instance = me) -> None:
                    while not stop.is_set():
                        with me.attempt(DependencyUnavailable), guard.session_scope() as session:
                            session.execute(text("SELECT 1"))
                        stop.wait(QUERY_PERIOD_S)

                runs.append(asyncio.to_thread(loop))
            else:
                health = await stack.enter_async_context(HealthClient.connect(url, prefix=PREFIX, instance=name))
                async_engine = create_async_engine(
                    f"postgresql+asyncpg://{rest}",
                    pool_size=POOL_SIZE,
                    max_overflow=0,
                    pool_timeout=2,
                    pool_pre_ping=True,  # as the baseline's (and any careful service's) pools
                    connect_args={"timeout": 2},
                )
                stack.push_async_callback(async_engine.dispose)
                async_guard = DatabaseGuard(async_engine, health, target=TARGET, local_cooldown=0.5)

                async def aloop(guard: DatabaseGuard = async_guard, me: _Instance = me) -> None:
                    while not stop.is_set():
                        with me.attempt(DependencyUnavailable):
                            async with guard.async_session_scope() as session:
                                await session.execute(text("SELECT 1"))
                        await asyncio.sleep(QUERY_PERIOD_S)

                runs.append(aloop())
        tasks = [asyncio.ensure_future(r) for r in runs]
        with _SEND:
            link.send("ready")
        try:
            while (await link.recv(7200))[0] != "stop":
                pass
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def baseline_instances_role(link: Link, dsn: str, first: int, count: int) -> None:
    """``count`` instances without healthbus: each checks PostgreSQL itself every second
    (its own manager) and sends its traffic only while its last check passed."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    rest = dsn.split("://", 1)[1]
    stop = asyncio.Event()
    engines = [
        create_async_engine(f"postgresql+asyncpg://{rest}", pool_size=POOL_SIZE, max_overflow=0, pool_pre_ping=True)
        for _ in range(count)
    ]

    async def instance(index: int, engine: Any) -> None:
        me = _Instance(link, index)
        healthy = [True]

        async def manager() -> None:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(1.0), engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                    healthy[0] = True
                except Exception:
                    healthy[0] = False
                    me.refused()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), BASELINE_INTERVAL_S)

        checker = asyncio.create_task(manager())
        while not stop.is_set():
            if healthy[0]:
                try:
                    async with asyncio.timeout(1.0), engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                    me.ok()
                except Exception:
                    healthy[0] = False
                    me.refused()
            await asyncio.sleep(QUERY_PERIOD_S)
        await checker

    tasks = [asyncio.create_task(instance(first + i, e)) for i, e in enumerate(engines)]
    link.send("ready")
    try:
        while (await link.recv(7200))[0] != "stop":
            pass
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines:
            await engine.dispose()


async def service_role(link: Link, url: str, config_text: str, what: str, worker_id: str) -> None:
    """The coordinator (``what == "coordinator"``) or a probe worker."""
    from healthbus.bench._harness import RunningCoordinator, RunningProbeWorker

    running: Any
    if what == "coordinator":
        running = await RunningCoordinator.start(config_text, url)
    else:
        running = await RunningProbeWorker.start(config_text, url, worker_id)
    try:
        link.send("ready")
        while (await link.recv(7200))[0] != "stop":
            pass
    finally:
        await running.stop()


# ---------------------------------------------------------------- the parent side


class Fleet:
    """The instances' up/down reports and errors, gathered from their processes."""

    def __init__(self, children: list[Child], instances: int) -> None:
        self.children = children
        self.instances = instances
        self.up: dict[int, bool] = {}
        self.last_up_ns: dict[int, int] = {}
        self.errors: list[str] = []
        self.why: dict[int, str] = {}
        self._tasks = [asyncio.create_task(self._read(c)) for c in children]

    async def _read(self, child: Child) -> None:
        while True:
            try:
                kind, *rest = await child.link.recv(7200)
            except Exception:
                return
            if kind == "up":
                self.up[rest[0]] = True
                self.last_up_ns[rest[0]] = rest[1]
            elif kind == "down":
                self.up[rest[0]] = False
                self.why[rest[0]] = rest[2]
            elif kind == "why":
                self.why[rest[0]] = rest[1]
            elif kind == "unexpected":
                self.errors.append(rest[1])

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float = _SETTLE_TIMEOUT_S) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not condition():
            if loop.time() > end:
                raise TimeoutError(f"{what}: not within {timeout:g}s ({sum(self.up.values())}/{self.instances} up)")
            await asyncio.sleep(0.01)

    def all_up(self) -> bool:
        return len(self.up) == self.instances and all(self.up.values())

    def all_down(self) -> bool:
        return len(self.up) == self.instances and not any(self.up.values())

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


def _peak_per_s(times: list[float], start: float, end: float) -> int:
    """The most connections in one one-second bucket of [start, end)."""
    buckets: dict[int, int] = {}
    for t in times:
        if start <= t < end:
            key = int(t - start)
            buckets[key] = buckets.get(key, 0) + 1
    return max(buckets.values(), default=0)


class Watch:
    """What the suite hears on the bus: probe results of the target (receive times) and events."""

    def __init__(self) -> None:
        self.results: list[float] = []
        self.states: list[Any] = []

    async def attach(self, nc: Any) -> None:
        from healthbus.protocol import Subjects, decode_state_changed

        async def on_result(msg: Msg) -> None:
            self.results.append(time.monotonic())

        async def on_state(msg: Msg) -> None:
            self.states.append(decode_state_changed(msg.data))

        subjects = Subjects(PREFIX)
        await nc.subscribe(f"{subjects.probe_all[:-3]}{TARGET}.*", cb=on_result)
        await nc.subscribe(subjects.state_all, cb=on_state)

    def last_seq(self) -> int:
        return max((e.seq for e in self.states), default=0)

    async def opened_after(self, seq: int, timeout: float) -> Any:
        """The first open-breaker event after ``seq`` (waiting for it)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            found = next((e for e in self.states if e.seq > seq and e.breaker == "open"), None)
            if found is not None:
                return found
            if loop.time() > end:
                raise TimeoutError(f"the breaker did not open within {timeout:g}s")
            await asyncio.sleep(0.01)


async def _outage(pg: BenchPostgres, fleet: Fleet, outage_s: float, watch: Watch | None) -> dict[str, Any]:
    """One outage: stop, wait, start; the figures of the way back. With ``watch``, the
    probe checks are counted from the open breaker's first trial to the restart."""
    await fleet.wait(fleet.all_up, "every instance answering before the outage")
    seq = watch.last_seq() if watch is not None else 0
    await asyncio.to_thread(pg.stop)
    stopped = time.monotonic()
    trials, trial_window = 0, 0.0
    if watch is not None:
        opened = await watch.opened_after(seq, outage_s + 60)
        first_trial = time.monotonic() + max(0.0, (opened.retry_at - opened.at).total_seconds())
        await asyncio.sleep(max(0.0, first_trial - time.monotonic()))
        count_from, window_start = len(watch.results), time.monotonic()
    await asyncio.sleep(max(0.0, stopped + outage_s - time.monotonic()))
    if watch is not None:
        trials, trial_window = len(watch.results) - count_from, time.monotonic() - window_start
    mark = pg.log_size()
    # When PostgreSQL began to accept connections (TCP; `pg_ctl -w` and this loop can
    # come back later on a loaded machine).
    restarted_ns = await restart_stamped(pg.start, pg.host, pg.port)
    restarted_wall = time.time() - (now_ns() - restarted_ns) / 1e9
    await fleet.wait(fleet.all_up, "every instance answering after the restart")
    back = [(fleet.last_up_ns[i] - restarted_ns) / 1e9 for i in range(fleet.instances)]
    await asyncio.sleep(1.0)  # the last connections of the re-admission reach the log
    times = pg.connection_times(mark)
    return {
        "back": back,
        "trial_checks_per_s": round(trials / trial_window, 2) if trial_window > 0 else None,
        "connections_per_s_peak": _peak_per_s(times, restarted_wall, restarted_wall + max(back) + 1.0),
    }


async def _start_fleet(group: ChildGroup, instances: int, make: Callable[[int, int, int], Child]) -> Fleet:
    per = [instances // PROCESSES + (1 if i < instances % PROCESSES else 0) for i in range(PROCESSES)]
    children: list[Child] = []
    first = 0
    for p, n in enumerate(per):
        if n:
            children.append(make(p, first, n))
            first += n
    for child in children:
        await child.link.expect("ready", 180)
    return Fleet(children, instances)


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the healthbus fleet and the baseline through the same outages; then max_connections."""
    from healthbus.bench._harness import require_coordinator, require_health_client, require_probe_worker

    require_coordinator()
    require_probe_worker()
    require_health_client()
    missing = [m for m in ("sqlalchemy", "asyncpg", "psycopg") if importlib.util.find_spec(m) is None]
    if missing:
        raise SuiteUnavailable(f"{', '.join(missing)} is not available (a healthbus-bench dependency)")
    instances: int = opts.pick("instances", smoke=6, full=50)
    first_outage: float = opts.pick("duration", smoke=2.0, full=5.0)
    outages = [first_outage, 3.0 if opts.size == "smoke" else 60.0]
    flap_window: float = 6.0 if opts.size == "smoke" else 30.0
    machine = machine_description()
    try:
        pg = BenchPostgres({"max_connections": str(instances * POOL_SIZE + 40)}).start()
    except ServerStartError as exc:
        raise SuiteUnavailable(f"PostgreSQL is not available here: {exc}") from None
    config_text = _config_text(pg.dsn)
    runs: list[dict[str, Any]] = []
    flaps: dict[str, Any] = {}
    try:
        async with embedded_nats(opts.workdir) as server, ChildGroup(stop_timeout=30.0) as group:
            nc = await bench_connect(server.url, "bench-outage-watch")
            watch = Watch()
            await watch.attach(nc)
            services = [group.start("coordinator", service_role, server.url, config_text, "coordinator", "")]
            services += [
                group.start(f"probe-{i}", service_role, server.url, config_text, "probe", f"bench-probe-{i}")
                for i in range(WORKERS)
            ]
            for child in services:
                await child.link.expect("ready", 60)

            def make_hb(p: int, first: int, n: int) -> Child:
                return group.start(f"instances-{p}", healthbus_instances_role, server.url, pg.dsn, first, n, p % 2 == 1)

            fleet = await _start_fleet(group, instances, make_hb)
            for outage_s in outages:
                hb = await _outage(pg, fleet, outage_s, watch)
                runs.append({"outage_s": outage_s, **_figures(hb)})
            errors = list(fleet.errors)
            flaps = await _max_connections(pg, fleet, instances, flap_window, watch)
            for child in fleet.children:
                await group.stop(child)
            fleet.close()

            def make_base(p: int, first: int, n: int) -> Child:
                return group.start(f"baseline-{p}", baseline_instances_role, pg.dsn, first, n)

            base_fleet = await _start_fleet(group, instances, make_base)
            for entry, outage_s in zip(runs, outages, strict=True):
                base = await _outage(pg, base_fleet, outage_s, None)
                entry["baseline_back_after_restart_s_max"] = round(max(base["back"]), 3)
                entry["baseline_connections_per_s_peak"] = base["connections_per_s_peak"]
            for child in base_fleet.children:
                await group.stop(child)
            base_fleet.close()
            for entry in runs:
                entry["errors_other_than_unavailable"] = len(errors)
            await nc.close()
    finally:
        await asyncio.to_thread(pg.remove)
    data: dict[str, Any] = {
        "instances": instances,
        "probe_workers": WORKERS,
        "query_period_s": QUERY_PERIOD_S,
        "settings_not_default": {k: v for k, v in settings_not_default(config_text).items() if k != "url"},
        "runs": runs,
        "back_after_restart_s_max": max(r["back_after_restart_s_max"] for r in runs),
        "errors_other_than_unavailable": len(errors),
        "error_samples": errors[:3],
        **flaps,
    }
    from healthbus.protocol import load_config_text

    cadence = float(load_config_text(config_text, env={}).targets[0].trial_interval)
    goals = [
        Goal(
            "every instance back within 2 s of PostgreSQL accepting connections, at every outage length",
            all(r["back_after_restart_s_max"] <= 2.0 for r in runs),
            "; ".join(f"{r['outage_s']:g} s outage: max {r['back_after_restart_s_max']} s" for r in runs),
        ),
        Goal(
            "trial checks while open at most workers / trial_interval",
            all(r["trial_checks_per_s_while_open"] <= WORKERS / cadence * 1.1 for r in runs),
            f"{[r['trial_checks_per_s_while_open'] for r in runs]} /s, bound {WORKERS / cadence:g}/s",
        ),
        Goal("no error other than 'unavailable'", not errors, f"{len(errors)} other errors"),
        Goal(
            "the max_connections case is re-opened and backed off, not re-admitted at a steady 1 s rate",
            flaps.get("flaps", 0) >= 1 and flaps.get("flaps", 0) < flap_window / 1.0,
            f"{flaps.get('flaps')} re-opens in {flap_window:g} s, waits {flaps.get('readmission_delays_s')} "
            "(full jitter: each is random below its cap 1, 2, 4, ... s)",
        ),
    ]
    notes = [
        f"{instances} instances in {PROCESSES} processes (half asyncio with asyncpg, half sync with psycopg), "
        f"SELECT 1 every {QUERY_PERIOD_S * 1000:g} ms through DatabaseGuard, pools of {POOL_SIZE}",
        "back_after_restart: from PostgreSQL accepting TCP connections (tried every 2 ms) to each "
        "instance's first successful query",
        "connections per second: 'connection received' lines of the server log (log_connections), "
        "one-second buckets from the restart until every instance is back plus 1 s",
        f"baseline: no healthbus; each instance checks PostgreSQL itself every {BASELINE_INTERVAL_S:g} s "
        "and sends traffic only while its last check passed",
    ]
    return SuiteResult("outage", opts.size, data, goals, notes, machine)


def _figures(hb: dict[str, Any]) -> dict[str, Any]:
    back = hb["back"]
    return {
        "back_after_restart_s_p50": round(statistics.median(back), 3),
        "back_after_restart_s_max": round(max(back), 3),
        "trial_checks_per_s_while_open": hb["trial_checks_per_s"],
        "ramp_connections_per_s_peak": hb["connections_per_s_peak"],
    }


async def _max_connections(
    pg: BenchPostgres, fleet: Fleet, instances: int, window: float, watch: Watch
) -> dict[str, Any]:
    """PostgreSQL restarted with too few connection slots for the fleet (the probes get
    theirs, most instances do not): re-opens and their delays over ``window`` seconds;
    then the slots are given back and the fleet must come back."""
    await fleet.wait(fleet.all_up, "every instance answering before the max_connections scenario")
    seq = watch.last_seq()
    errors_before = len(fleet.errors)
    normal = dict(pg.settings)
    await asyncio.to_thread(pg.stop)
    await watch.opened_after(seq, 60)
    pg.settings.update(
        {"max_connections": str(WORKERS + max(1, instances // 4)), "superuser_reserved_connections": "0"}
    )
    await asyncio.to_thread(pg.start)
    await asyncio.sleep(window)
    during = [e for e in watch.states if e.seq > seq]
    await asyncio.to_thread(pg.stop)
    pg.settings.clear()
    pg.settings.update(normal)
    await asyncio.to_thread(pg.start)
    try:
        await fleet.wait(fleet.all_up, "every instance answering once the slots are back")
    except TimeoutError as exc:
        last = [f"#{e.seq} {e.state}/{e.breaker}: {e.reason}" for e in watch.states[-4:]]
        down = [(i, fleet.why.get(i, "")) for i, up in fleet.up.items() if not up]
        for child in fleet.children:  # their threads' stacks go to stderr
            if child.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGUSR1)
        await asyncio.sleep(1.0)
        raise TimeoutError(f"{exc}; down: {down}; last events: {last}; errors: {fleet.errors[-3:]}") from None
    reopens = [e for e in during if e.breaker == "open" and "re-admission" in e.reason]
    return {
        "flap_window_s": window,
        "flaps": len(reopens),
        "readmission_delays_s": [
            round((e.retry_at - e.at).total_seconds(), 2) for e in reopens if e.retry_at is not None
        ],
        "flapping_detected": any(e.flapping for e in during),
        # Errors the adapter does not classify as connection-level during this phase (not
        # counted above: the outages' figure is errors_other_than_unavailable).
        "unclassified_errors_max_connections": len(fleet.errors) - errors_before,
        "unclassified_error_samples": fleet.errors[errors_before:][:2],
        "readmissions": sum(1 for e in during if e.ramp is not None and e.ramp.started_at == e.at),
    }
