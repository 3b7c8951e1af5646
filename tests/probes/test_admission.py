"""Servers that serve their sessions but refuse new ones: the probes see what a new client sees.

Real PostgreSQL (``max_connections`` exhausted, ``pg_ctl stop -m smart``) and Redis
(``maxclients``): the checkers report ``warn`` with ``no_new_connections``, the
coordinator's verdict turns ``degraded`` and back, and the probes never hold a smart
shutdown up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import nats
import pytest
from nats.aio.msg import Msg

from healthbus.bus.embedded import EmbeddedNats
from healthbus.probes import Checker, CheckResult, build_checker
from healthbus.protocol import Duration, StateChanged, Subjects, TargetConfig, decode_state_changed
from tests.e2e._stack import Stack, fast_config
from tests.harness._postgres import PostgresServer
from tests.harness._redis import RedisServer
from tests.helpers import Recorder, wait_until
from tests.probes._support import Collector

#: A small server: every slot is an ordinary one (no superuser reserve), so the probes,
#: connecting as the superuser, meet the limit like any application.
PG_SETTINGS = {"max_connections": "8", "superuser_reserved_connections": "0"}

REDIS_PASSWORD = "rd-Qe71-never-shown"
REDIS_ROTATED = "rd-Zn08-rotated-never-shown"

#: Long enough for a fresh connect on a loaded 2-core machine (a timeout is at most the interval).
CHECK_PERIOD = "1s"


def _target(kind: str, url: str, **options: str | int | bool) -> TargetConfig:
    return TargetConfig(name="db", kind=kind, url=url, timeout=Duration(3.0), interval=Duration(5.0), options=options)  # type: ignore[arg-type]


class Filler:
    """Takes every free connection slot of a PostgreSQL server, and keeps taking any slot
    that frees up (a probe's short session) until :meth:`release`, so "too many clients"
    holds however the probes' own connections come and go."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    async def _grab(self) -> bool:
        """Take one more slot; False when the server is full."""
        try:
            self.conns.append(await asyncpg.connect(self.dsn, timeout=5))
        except asyncpg.TooManyConnectionsError:
            return False
        return True

    async def fill(self) -> None:
        """Connect until the server refuses, then keep grabbing freed slots in the background."""
        while await self._grab():
            pass
        self._task = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            if not await self._grab():
                await asyncio.sleep(0.01)

    async def release(self) -> None:
        """Stop grabbing and close every connection taken."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conns, self.conns = self.conns, []
        for conn in conns:
            await conn.close()


def _stat(pid: int) -> str:
    """Process ``pid``'s /proc stat line (what it is doing), or why there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().strip()
    except OSError as exc:
        return repr(exc)


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# ---------------------------------------------------------------------- checkers


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlalchemy"])
async def test_too_many_clients_is_warn_then_pass(postgres_server_factory: Any, kind: str) -> None:
    """max_connections exhausted: warn with no_new_connections and the server's words; a
    freed slot: pass. A reused connection passes through the full server until its next
    fresh connect, then warns too and is dropped (the probe holds no slot afterwards)."""
    server: PostgresServer = postgres_server_factory(settings=PG_SETTINGS)
    url = server.dsn if kind == "postgres" else server.sqlalchemy_url
    fresh = build_checker(_target(kind, url))
    reused = build_checker(_target(kind, url, reuse_connection=True, fresh_connect_every=3))
    admin = await asyncpg.connect(server.dsn)
    filler = Filler(server.dsn)
    held = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'healthbus-probe'"
    try:
        assert (await fresh.check()).outcome == "pass"
        assert (await reused.check()).outcome == "pass"  # 1 of 3 over its kept session
        await filler.fill()
        full = await fresh.check()
        assert (full.outcome, full.error_kind) == ("warn", "no_new_connections"), full
        assert full.error is not None
        assert "too many clients already" in full.error
        outcomes = [(await reused.check()).outcome for _ in range(3)]
        assert outcomes == ["pass", "pass", "warn"], outcomes
        assert await admin.fetchval(held) == 0
        await filler.release()
        assert (await fresh.check()).outcome == "pass"
        assert (await reused.check()).outcome == "pass"
    finally:
        await filler.release()
        await fresh.close()
        await reused.close()
        await admin.close()


@pytest.mark.postgres
async def test_reused_session_never_holds_a_smart_shutdown(postgres_server: PostgresServer) -> None:
    """pg_ctl stop -m smart while a checker keeps a session: within fresh_connect_every
    checks its fresh connect is refused ("shutting down": warn, no_new_connections), the
    kept session is closed, and the server exits."""
    checker = build_checker(_target("postgres", postgres_server.dsn, reuse_connection=True, fresh_connect_every=3))
    pid = postgres_server.postmaster_pid()
    assert pid is not None
    try:
        assert (await checker.check()).outcome == "pass"
        postgres_server.stop_mode("smart", wait=False)
        results: list[CheckResult] = []
        while not results or results[-1].outcome == "pass":
            assert len(results) < 3, results
            results.append(await checker.check())
        last = results[-1]
        assert (last.outcome, last.error_kind) == ("warn", "no_new_connections"), results
        assert last.error is not None
        assert "shutting down" in last.error
        await wait_until(  # another process's end, not our child: polled
            lambda: _exited(pid), 30, "the postmaster to exit after the smart shutdown", seen=lambda: _stat(pid)
        )
    finally:
        await checker.close()


@pytest.mark.postgres
async def test_auth_failure_after_admission_is_warn(postgres_server: PostgresServer) -> None:
    """pg_hba.conf changed to reject the probe's host after it was let in: the server still
    serves the open sessions, so the check warns (no_new_connections); a checker never let in
    fails as auth."""
    checker = build_checker(_target("postgres", postgres_server.dsn))
    app = await asyncpg.connect(postgres_server.dsn)
    try:
        assert (await checker.check()).outcome == "pass"
        hba = postgres_server.data_dir / "pg_hba.conf"
        original = hba.read_text()
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 reject\n")
        await app.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous (SIGHUP): wait for a refused login, as the probe sees it.
        later: list[Any] = []

        async def refused() -> bool:
            later.append(await checker.check())
            return bool(later[-1].outcome != "pass")

        await wait_until(refused, 15, "pg_hba.conf reloaded", seen=lambda: later[-1:])
        assert (later[-1].outcome, later[-1].error_kind) == ("warn", "no_new_connections"), later[-1]
        assert later[-1].error is not None
        assert "pg_hba.conf" in later[-1].error
        assert await app.fetchval("SELECT 1") == 1  # the application's session still works
        stranger = build_checker(_target("postgres", postgres_server.dsn))
        try:
            first = await stranger.check()
            assert (first.outcome, first.error_kind) == ("fail", "auth"), first
        finally:
            await stranger.close()
        hba.write_text(original)
        await app.execute("SELECT pg_reload_conf()")
    finally:
        await checker.close()
        await app.close()


@pytest.mark.redis
async def test_redis_maxclients_is_warn_then_pass(redis_server: RedisServer) -> None:
    """CONFIG SET maxclients below the clients connected: a new connection gets
    "ERR max number of clients reached": warn with no_new_connections; raised again: pass."""
    from redis.asyncio import Redis

    checker: Checker = build_checker(
        TargetConfig(name="cache", kind="redis", url=redis_server.url, timeout=Duration(3.0), interval=Duration(5.0))
    )
    admin = Redis.from_url(redis_server.url)
    try:
        assert (await checker.check()).outcome == "pass"
        await admin.config_set("maxclients", 1)  # the admin connection is the one
        full = await checker.check()
        assert (full.outcome, full.error_kind) == ("warn", "no_new_connections"), full
        assert full.error is not None
        assert "max number of clients reached" in full.error
        await admin.config_set("maxclients", 100)
        assert (await checker.check()).outcome == "pass"
    finally:
        await checker.close()
        await admin.aclose()


@pytest.mark.redis
async def test_redis_password_change_after_login_is_warn(redis_server_factory: Any) -> None:
    """requirepass changed after the probe logged in: the connected clients stay logged in,
    new ones get WRONGPASS: warn with no_new_connections; neither password is shown."""
    from redis.asyncio import Redis

    server: RedisServer = redis_server_factory(password=REDIS_PASSWORD)
    checker: Checker = build_checker(
        TargetConfig(name="cache", kind="redis", url=server.url, timeout=Duration(3.0), interval=Duration(5.0))
    )
    admin = Redis.from_url(server.url)
    try:
        assert (await checker.check()).outcome == "pass"
        await admin.config_set("requirepass", REDIS_ROTATED)
        assert await admin.ping()  # logged in before the change: still served
        changed = await checker.check()
        assert (changed.outcome, changed.error_kind) == ("warn", "no_new_connections"), changed
        assert REDIS_PASSWORD not in repr(changed)
        assert REDIS_ROTATED not in repr(changed)
    finally:
        await checker.close()
        await admin.aclose()


# ---------------------------------------------------------------------- with the coordinator


class Verdicts:
    """Every StateChanged of a prefix, and waiting for one."""

    def __init__(self) -> None:
        self.told: Recorder[StateChanged] = Recorder()

    @property
    def events(self) -> list[StateChanged]:
        """The events so far."""
        return self.told.items

    async def on_msg(self, msg: Msg) -> None:
        self.told.append(decode_state_changed(msg.data))

    def mark(self) -> int:
        """An index: :meth:`wait` with ``after=mark()`` only sees events from now on."""
        return len(self.events)

    async def wait(
        self, target: str, predicate: Callable[[StateChanged], bool], what: str, *, after: int = 0
    ) -> StateChanged:
        """The first event of ``target`` from index ``after`` on that satisfies ``predicate``."""
        start = after

        def found() -> StateChanged | None:
            return next((e for e in self.events[start:] if e.target == target and predicate(e)), None)

        await self.told.wait(
            lambda _: found() is not None,
            60,
            what,
            seen=lambda: [(e.target, e.state, e.reason) for e in self.events[start:]],
        )
        event = found()
        assert event is not None
        return event


@contextlib.asynccontextmanager
async def running(
    nats_url: str, targets: list[tuple[str, str, str]], workdir: Path, *, period: str | None = CHECK_PERIOD
) -> AsyncIterator[tuple[Verdicts, Collector]]:
    """A coordinator and two ``healthbus probe`` workers watching ``targets`` (checked every
    ``period``; None: the default interval and timeout), every verdict and result collected,
    until they are healthy. The processes' logs are printed if the block fails; they must
    all exit 0."""
    config = fast_config(targets)
    for key, fast in (("interval", "200ms"), ("timeout", "150ms")):
        line = f'{key} = "{fast}"\n'
        config = config.replace(line, "" if period is None else line.replace(fast, period))
    stack = Stack(nats_url, config, workdir)
    nc = await nats.connect(nats_url)
    verdicts = Verdicts()
    results = Collector("healthbus")
    await nc.subscribe(Subjects("healthbus").state_all, cb=verdicts.on_msg)
    await results.subscribe(nc)
    try:
        await stack.start()
        for name, _, _ in targets:
            await verdicts.wait(name, _healthy, f"{name} healthy")
        yield verdicts, results
        codes = await stack.stop()
        assert codes == {"w1": 0, "w2": 0, "coordinator": 0}, codes
    except BaseException:
        print(stack.logs())
        raise
    finally:
        await stack.stop()
        await nc.close()


def _degraded_by_refusals(event: StateChanged) -> bool:
    return event.state == "degraded" and "no_new_connections" in event.reason


def _healthy(event: StateChanged) -> bool:
    return event.state == "healthy"


@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.slow
async def test_verdict_follows_max_connections(
    nats_server: EmbeddedNats, postgres_server_factory: Any, tmp_path: Path
) -> None:
    """Coordinator and two workers watch a PostgreSQL (directly and through SQLAlchemy):
    max_connections exhausted → degraded (no_new_connections) within the usual thresholds,
    while an application's warm session keeps working; freed → healthy."""
    server: PostgresServer = postgres_server_factory(settings=PG_SETTINGS)
    names = ("db", "db-sa")
    targets = [("db", "postgres", server.dsn), ("db-sa", "sqlalchemy", server.sqlalchemy_url)]
    app = await asyncpg.connect(server.dsn)
    filler = Filler(server.dsn)
    try:
        async with running(nats_server.url, targets, tmp_path) as (verdicts, _):
            mark = verdicts.mark()
            await filler.fill()
            for name in names:
                event = await verdicts.wait(name, _degraded_by_refusals, f"{name} degraded by refusals", after=mark)
                assert event.breaker == "closed"
                kinds = {(e.outcome, e.error_kind) for e in event.evidence.values()}
                assert ("warn", "no_new_connections") in kinds, event.evidence
            assert await app.fetchval("SELECT 1") == 1  # a warm pool is served throughout
            mark = verdicts.mark()
            await filler.release()
            for name in names:
                await verdicts.wait(name, _healthy, f"{name} healthy again", after=mark)
    finally:
        await filler.release()
        await app.close()


@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.slow
async def test_smart_shutdown_completes_while_probes_run(
    nats_server: EmbeddedNats, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """pg_ctl stop -m smart with the probes running: degraded (no_new_connections) while an
    application's session is open and still served; once it closes the server exits (the
    probes never hold it) and the verdict turns unavailable."""
    names = ("db", "db-sa")
    targets = [("db", "postgres", postgres_server.dsn), ("db-sa", "sqlalchemy", postgres_server.sqlalchemy_url)]
    pid = postgres_server.postmaster_pid()
    assert pid is not None
    app = await asyncpg.connect(postgres_server.dsn)
    try:
        async with running(nats_server.url, targets, tmp_path) as (verdicts, _):
            mark = verdicts.mark()
            postgres_server.stop_mode("smart", wait=False)
            for name in names:
                await verdicts.wait(name, _degraded_by_refusals, f"{name} degraded while shutting down", after=mark)
            assert await app.fetchval("SELECT 1") == 1
            assert not _exited(pid)  # the application's session holds it, as a smart shutdown should
            mark = verdicts.mark()
            await app.close()
            await wait_until(
                lambda: _exited(pid),
                30,
                "the postmaster to exit once the application's session closed",
                seen=lambda: _stat(pid),
            )
            for name in names:
                await verdicts.wait(
                    name, lambda e: e.state == "unavailable", f"{name} unavailable after the shutdown", after=mark
                )
    finally:
        await app.close()


@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.slow
async def test_verdict_follows_redis_maxclients(
    nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis at maxclients: degraded (no_new_connections) while the connected clients are
    served; maxclients raised: healthy."""
    from redis.asyncio import Redis

    admin = Redis.from_url(redis_server.url)
    try:
        await admin.ping()
        async with running(nats_server.url, [("cache", "redis", redis_server.url)], tmp_path) as (verdicts, _):
            mark = verdicts.mark()
            await admin.config_set("maxclients", 1)
            await verdicts.wait("cache", _degraded_by_refusals, "cache degraded at maxclients", after=mark)
            assert await admin.ping()
            mark = verdicts.mark()
            await admin.config_set("maxclients", 1000)
            await verdicts.wait("cache", _healthy, "cache healthy again", after=mark)
    finally:
        await admin.aclose()


@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.slow
async def test_probe_connection_cost(
    nats_server: EmbeddedNats, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """At the default interval (5 s), two workers open exactly one PostgreSQL session per
    check (pg_stat_database counts them) and hold none between checks. Prints the rate, the
    figure in docs/performance.md (run with ``-s``)."""
    admin = await asyncpg.connect(postgres_server.dsn)
    sessions = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    held = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'healthbus-probe'"
    checks_each = 4
    try:
        before = int(await admin.fetchval(sessions))
        targets = [("db", "postgres", postgres_server.dsn)]
        async with running(nats_server.url, targets, tmp_path, period=None) as (_, results):
            for worker in ("w1", "w2"):
                await results.wait(
                    lambda got, w=worker: sum(r.probe == w and r.target == "db" for r in got) >= checks_each,  # type: ignore[misc]
                    60,
                    f"{checks_each} checks from {worker}",
                )
        checks = results.of("db")
        assert all(r.outcome == "pass" for r in checks), checks
        assert await admin.fetchval(held) == 0

        opened_so_far: list[int] = [0]

        async def counted() -> bool:
            opened_so_far[0] = int(await admin.fetchval(sessions)) - before
            return opened_so_far[0] >= len(checks)

        await wait_until(counted, 10, f"{len(checks)} sessions counted", seen=lambda: opened_so_far[0])
        opened = int(await admin.fetchval(sessions)) - before
        assert opened == len(checks), (opened, len(checks))
        span = (max(r.observed_at for r in checks) - min(r.observed_at for r in checks)).total_seconds()
        per_worker = [[r.observed_at for r in checks if r.probe == w] for w in ("w1", "w2")]
        rate = sum((len(ts) - 1) / (max(ts) - min(ts)).total_seconds() for ts in per_worker)
        print(
            f"\nprobe connection cost: {opened} sessions for {len(checks)} checks over {span:.1f} s; "
            f"2 workers x 1 target at the default interval: {rate:.3f} connections/s"
        )
    finally:
        await admin.close()
