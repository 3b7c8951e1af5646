"""The probe worker against real NATS and Redis: publishing, holds until retry_at, isolation, sharding."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client

from healthbus.bus import ensure_stream
from healthbus.bus.embedded import EmbeddedNats
from healthbus.probes import CheckResult, ProbeWorker, assigned
from healthbus.protocol import (
    Config,
    ProbeResult,
    StreamSettings,
    TargetConfig,
    utcnow,
)
from healthbus.protocol.testing import ManualClock
from tests.harness._redis import RedisServer
from tests.helpers import open_event, publish_states
from tests.probes._support import Collector, config_for, result_of, unique_prefix

pytestmark = [pytest.mark.nats, pytest.mark.redis]

PASSWORD = "pw-Hh42-never-shown"


@asynccontextmanager
async def running(config: Config, url: str, worker_id: str = "w1") -> AsyncIterator[ProbeWorker]:
    """A started worker on its own connection, stopped (and its connection closed) afterwards."""
    nc = await nats.connect(url)
    worker = ProbeWorker(config, worker_id=worker_id)
    try:
        await worker.start(nc)
        yield worker
    finally:
        await worker.stop()
        await nc.close()


@asynccontextmanager
async def collecting(url: str, prefix: str) -> AsyncIterator[tuple[Client, Collector]]:
    """A connection and a Collector of every ProbeResult under ``prefix``."""
    nc = await nats.connect(url)
    collector = Collector(prefix)
    await collector.subscribe(nc)
    try:
        yield nc, collector
    finally:
        await nc.close()


async def test_pass_fail_pass_published(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """Results go out on <prefix>.probe.<target>: pass while up, refused when stopped, pass after restart."""
    prefix = unique_prefix()
    config = config_for(
        prefix,
        f'[[targets]]\nname = "cache"\nkind = "redis"\nurl = "{redis_server.url}"\n',
        defaults='interval = "500ms"\ntimeout = "400ms"',
    )
    async with collecting(nats_server.url, prefix) as (_, results), running(config, nats_server.url) as worker:
        up = await results.wait_for(lambda r: r.outcome == "pass")
        assert up.probe == "w1"
        assert up.details["role"] == "master"
        mark = results.mark()
        redis_server.stop()
        down = await results.wait_for(lambda r: r.outcome == "fail", after=mark)
        assert down.error_kind == "refused"
        mark = results.mark()
        redis_server.start()
        await results.wait_for(lambda r: r.outcome == "pass", after=mark)
        assert worker.ready
    checker = worker.checkers["cache"]
    assert getattr(checker, "_client", "x") is None  # closed on stop


async def test_open_target_not_checked_before_retry_at(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """After a StateChanged with breaker open, the target is silent until retry_at, then checked at once."""
    prefix = unique_prefix()
    config = config_for(
        prefix,
        f'[[targets]]\nname = "cache"\nkind = "redis"\nurl = "{redis_server.url}"\n',
        defaults='interval = "300ms"\ntimeout = "200ms"',
    )
    async with collecting(nats_server.url, prefix) as (nc, results), running(config, nats_server.url) as worker:
        await results.wait_for(lambda r: r.outcome == "pass")
        event = open_event("cache", 1, retry_in=2.5)
        await publish_states(nc.jetstream(), prefix, [event])
        await worker.wait_state("cache", 1, timeout=10)
        applied_at = utcnow()
        assert event.retry_at is not None
        trial = await results.wait_for(lambda r: r.observed_at >= event.retry_at, timeout=15)  # type: ignore[operator]
        assert trial.outcome == "pass"
        # A check already running when the verdict arrived may finish; nothing starts afterwards.
        grace = applied_at + timedelta(seconds=0.5)
        during = [r for r in results.of("cache") if grace < r.observed_at < event.retry_at]
        assert during == []
        assert (trial.observed_at - event.retry_at) < timedelta(seconds=2)
        skipped = worker.metrics.registry.get_sample_value(
            "healthbus_probe_skipped_total", {"target": "cache", "reason": "breaker_open"}
        )
        assert skipped is not None
        assert skipped >= 2
        assert worker.metrics.registry.get_sample_value("healthbus_probe_following_state") == 1.0


async def test_open_at_start_is_honoured(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """A target already open when the worker starts is not checked before its retry_at."""
    prefix = unique_prefix()
    config = config_for(
        prefix,
        f'[[targets]]\nname = "cache"\nkind = "redis"\nurl = "{redis_server.url}"\n'
        f'[[targets]]\nname = "other"\nkind = "tcp"\nurl = "tcp://127.0.0.1:{redis_server.port}"\n',
        defaults='interval = "200ms"\ntimeout = "150ms"',
    )
    async with collecting(nats_server.url, prefix) as (nc, results):
        event = open_event("cache", 4, retry_in=2.0)
        await publish_states(nc.jetstream(), prefix, [event])
        async with running(config, nats_server.url):
            first = await results.wait_for(lambda r: r.target == "cache", timeout=15)
            assert event.retry_at is not None
            assert first.observed_at >= event.retry_at
            assert [r for r in results.of("other") if r.observed_at < event.retry_at]  # the other went on


async def test_no_password_anywhere(
    nats_server: EmbeddedNats, redis_server_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password yields auth failures whose bytes on the wire and log lines never hold it."""
    caplog.set_level(logging.DEBUG)
    server: RedisServer = redis_server_factory(password="the-right-one")  # type: ignore[operator]
    prefix = unique_prefix()
    url = f"redis://:{PASSWORD}@{server.host}:{server.port}/0"
    config = config_for(
        prefix,
        f'[[targets]]\nname = "cache"\nkind = "redis"\nurl = "{url}"\n',
        defaults='interval = "300ms"\ntimeout = "300ms"',
    )
    async with collecting(nats_server.url, prefix) as (_, results), running(config, nats_server.url):
        failed = await results.wait_for(lambda r: r.outcome == "fail")
        assert failed.error_kind == "auth"
        await results.wait_for(lambda r: True, after=results.mark())
    assert results.raw
    assert all(PASSWORD.encode() not in raw for raw in results.raw)
    assert PASSWORD not in caplog.text
    assert "cache" in caplog.text  # the failure was logged, by name


async def test_hanging_target_never_delays_another(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """A dependency that never answers times out on its own; another target keeps its cadence meanwhile."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    hang = await asyncio.start_server(silent, "127.0.0.1", 0)
    hang_port = hang.sockets[0].getsockname()[1]
    prefix = unique_prefix()
    config = config_for(
        prefix,
        f'[[targets]]\nname = "stuck"\nkind = "redis"\nurl = "redis://127.0.0.1:{hang_port}/0"\n'
        'interval = "2s"\ntimeout = "1500ms"\nretry_interval = "2s"\n'
        f'[[targets]]\nname = "fast"\nkind = "redis"\nurl = "{redis_server.url}"\ninterval = "100ms"\n',
        defaults='timeout = "100ms"',
    )
    try:
        async with collecting(nats_server.url, prefix) as (_, results), running(config, nats_server.url):
            first = await results.wait_for(lambda r: r.target == "stuck")
            second = await results.wait_for(lambda r: r.target == "stuck" and r is not first, after=results.mark())
            assert first.error_kind == "timeout"
            assert second.error_kind == "timeout"
            fast_between = [r for r in results.of("fast") if first.observed_at < r.observed_at < second.observed_at]
            assert len(fast_between) >= 3
            assert all(r.outcome == "pass" for r in fast_between)
    finally:
        for writer in accepted:
            writer.close()
        hang.close()
        await hang.wait_closed()


async def test_warn_latency(nats_server: EmbeddedNats) -> None:
    """A passing check slower than warn_latency is published as warn, saying why."""

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    prefix = unique_prefix()
    config = config_for(
        prefix,
        f'[[targets]]\nname = "api"\nkind = "http"\nurl = "http://127.0.0.1:{port}/health"\nwarn_latency = "10ms"\n',
        defaults='interval = "300ms"\ntimeout = "300ms"',
    )
    try:
        async with collecting(nats_server.url, prefix) as (_, results), running(config, nats_server.url):
            result = await results.wait_for(lambda r: r.target == "api")
            assert result.outcome == "warn"
            assert result.error_kind is None
            assert result.error is not None
            assert "warn_latency" in result.error
            assert result.details["status"] == 200
    finally:
        await runner.cleanup()


def _sharding_config(prefix: str, port: int) -> tuple[Config, set[str]]:
    """Twelve tcp targets on ``port``, checked by sharding workers (one replica each), and their names."""
    targets = "".join(f'[[targets]]\nname = "t{i}"\nkind = "tcp"\nurl = "tcp://127.0.0.1:{port}"\n' for i in range(12))
    config = config_for(
        prefix,
        targets,
        defaults='interval = "300ms"\ntimeout = "300ms"',
        probes='sharding = true\nworkers_per_target = 1\nheartbeat = "200ms"',
    )
    return config, {f"t{i}" for i in range(12)}


async def test_sharding_splits_and_fails_over(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """Two sharding workers split the targets without overlap; when one leaves the other takes all."""
    prefix = unique_prefix()
    config, names = _sharding_config(prefix, redis_server.port)

    def everything(mine: set[str]) -> bool:
        return mine == names

    async with collecting(nats_server.url, prefix) as (_, results), running(config, nats_server.url, "w1") as w1:
        await w1.wait_assigned(5)
        assert w1.assigned_targets == names  # alone: everything
        async with running(config, nats_server.url, "w2") as w2:
            await w2.wait_assigned(5)
            share = assigned(names, ["w1", "w2"], 1, "w1")
            await w1.wait_assignment(lambda mine: mine == share, timeout=10)
            await w2.wait_assignment(lambda mine: mine == names - share, timeout=10)
            assert w2.assigned_targets
            mark = results.mark()
            for name in w2.assigned_targets:

                def from_w2(r: ProbeResult, n: str = name) -> bool:
                    return r.target == n and r.probe == "w2"

                await results.wait_for(from_w2, after=mark)
        # w2 said it was stopping: w1 takes over at once
        assert await w1.wait_assignment(everything, timeout=10) == names


class StubbornChecker:
    """A checker that swallows cancellation once per check, as a 3.11 timeout race can."""

    def __init__(self, target: TargetConfig) -> None:
        self.target = target
        self.started = asyncio.Event()
        self.closed = False

    async def check(self) -> CheckResult:
        """Wait 'forever'; a cancellation is swallowed and the check 'passes'."""
        self.started.set()
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return CheckResult(outcome="pass")

    async def close(self) -> None:
        """Remember being closed."""
        self.closed = True


async def test_stop_survives_a_swallowed_cancellation(nats_server: EmbeddedNats) -> None:
    """stop() ends every target task and closes every client even when a check swallows its cancellation."""
    prefix = unique_prefix()
    config = config_for(
        prefix,
        '[[targets]]\nname = "stubborn"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\ninterval = "1h"\ntimeout = "1h"\n',
        probes="spread = 0.0",
    )
    nc = await nats.connect(nats_server.url)
    checkers: list[StubbornChecker] = []

    def factory(target: TargetConfig) -> StubbornChecker:
        checkers.append(StubbornChecker(target))
        return checkers[-1]

    worker = ProbeWorker(config, worker_id="w1", checker_factory=factory, follow_state=False)
    try:
        await worker.start(nc)
        worker.schedules["stubborn"].next_check = 0.0  # due now
        await asyncio.wait_for(checkers[0].started.wait(), 10)
        await asyncio.wait_for(worker.stop(), 10)
        assert worker.assigned_targets == set()
        assert checkers[0].closed
    finally:
        await nc.close()


async def test_sharding_a_dead_worker_is_replaced(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """A worker that vanishes without a word (connection gone) is dropped after three heartbeats and
    its targets move to the survivor; the survivor's own targets never move."""
    prefix = unique_prefix()
    config, names = _sharding_config(prefix, redis_server.port)

    def everything(mine: set[str]) -> bool:
        return mine == names

    async with running(config, nats_server.url, "w1") as w1:
        nc2 = await nats.connect(nats_server.url)
        w2 = ProbeWorker(config, worker_id="w2")
        try:
            await w2.start(nc2)
            await w2.wait_assigned(5)
            share = assigned(names, ["w1", "w2"], 1, "w1")
            kept = await w1.wait_assignment(lambda mine: mine == share, timeout=10)
            await w2.wait_assignment(lambda mine: mine == names - share, timeout=10)
            assert kept
            assert kept != names
            w2.sharding = False  # stop w2 re-planning while it is "dead"
            await nc2.close()  # no stopping heartbeat: w1 must notice the silence
            after = await w1.wait_assignment(everything, timeout=10)
            assert kept <= after
        finally:
            await w2.stop()


async def test_results_resume_after_a_nats_restart(nats_server: EmbeddedNats, redis_server: RedisServer) -> None:
    """The worker keeps checking through a NATS restart and its results flow again afterwards,
    and a verdict published after the restart is still honoured (the stream reader resumes)."""
    from healthbus.bus import connect

    prefix = unique_prefix()
    config = config_for(
        prefix,
        f'[[targets]]\nname = "cache"\nkind = "redis"\nurl = "{redis_server.url}"\n',
        defaults='interval = "200ms"\ntimeout = "200ms"',
    )
    admin = await nats.connect(nats_server.url)
    await ensure_stream(admin.jetstream(), StreamSettings.for_prefix(prefix))
    await admin.close()
    nc = await connect(url=nats_server.url, name="probe-under-test")
    worker = ProbeWorker(config, worker_id="w1")
    try:
        await worker.start(nc)
        async with collecting(nats_server.url, prefix) as (_, results):
            await results.wait_for(lambda r: r.outcome == "pass")
        await nats_server.astop()
        await nats_server.astart()
        async with collecting(nats_server.url, prefix) as (watcher, results):
            await results.wait_for(lambda r: r.outcome == "pass", timeout=30)
            await publish_states(watcher.jetstream(), prefix, [open_event("cache", 1, retry_in=60)])
            await worker.wait_state("cache", 1, timeout=30)
            assert worker.schedules["cache"].hold_until is not None
    finally:
        await worker.stop()
        await nc.close()


async def test_schedule_runs_on_the_worker_clock(nats_server: EmbeddedNats) -> None:
    """Checks are due by the worker's clock: a ManualClock decides when each one runs and its observed_at."""
    prefix = unique_prefix()
    config = config_for(
        prefix,
        '[[targets]]\nname = "closed"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
        'interval = "1h"\nretry_interval = "10m"\ntimeout = "5s"\n',
        probes="spread = 0.0",
    )
    clock = ManualClock()
    async with collecting(nats_server.url, prefix) as (nc, collector):
        worker = ProbeWorker(config, worker_id="w1", clock=clock, follow_state=False)
        try:
            await worker.start(nc)
            schedule = worker.schedules["closed"]
            assert clock.monotonic() <= schedule.next_check < clock.monotonic() + 3600  # within the first interval
            await clock.advance(schedule.next_check - clock.monotonic())
            first = await collector.wait_for(result_of("closed", "fail"))
            assert first.observed_at == clock.now()  # stamped by the worker's clock
            assert len(collector.results) == 1
            # a fail is re-checked after retry_interval
            assert schedule.next_check == pytest.approx(clock.monotonic() + 600)
            await clock.advance(600)
            second = await collector.wait_for(result_of("closed", "fail"), after=1)
            assert second.observed_at - first.observed_at == timedelta(seconds=600)
        finally:
            await worker.stop()
