"""Failure reports with real Redis and PostgreSQL: a report starts a confirmation check, never a verdict.

In one process: a real nats-server, the coordinator, two probe workers, and a service's
HealthClient with the Redis and SQLAlchemy adapters. Checks run on a 1 h interval, so
every check during a test is either the start-up check the test runs itself or a
confirmation check (the random first check of a 1 h cadence does not fall in a test's
few seconds, and even then it would not count as a confirmation check).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from healthbus.bus import sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.coordinator import CoordinatorService
from healthbus.probes import ProbeWorker
from healthbus.protocol import (
    Config,
    ConfirmRequest,
    FailureReport,
    ProbeResult,
    StateChanged,
    Subjects,
    decode_confirm_request,
    decode_failure_report,
    decode_probe_result,
    encode,
    load_config_text,
    utcnow,
)
from healthbus.subscribers import DependencyUnavailable, HealthClient
from healthbus.subscribers.redis import HealthyRedis
from healthbus.subscribers.sqlalchemy import DatabaseGuard
from tests.harness._postgres import PostgresServer
from tests.harness._redis import RedisServer
from tests.helpers import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.redis, pytest.mark.postgres]

PREFIX = "hbreport"
SUBJECTS = Subjects(PREFIX)
TARGETS = ("redis-main", "postgres-main")


def _config(redis_url: str, postgres_dsn: str) -> Config:
    return load_config_text(
        f"""
[bus]
prefix = "{PREFIX}"
[defaults]
interval = "1h"
timeout = "1s"
retry_interval = "200ms"
trial_interval = "10s"
failure_threshold = 2
success_threshold = 1
backoff = {{ base = "10s", multiplier = 2.0, max = "30s", jitter = "none" }}
flap = {{ enabled = false }}
[probes]
spread = 0.0
[coordinator]
tick = "50ms"
[[targets]]
name = "redis-main"
kind = "redis"
url = "{redis_url}"
[[targets]]
name = "postgres-main"
kind = "postgres"
url = "{postgres_dsn}"
""",
        env={},
    )


@dataclass
class Wire:
    """Everything published on the report, confirm and probe subjects, with arrival times."""

    reports: list[tuple[float, FailureReport]] = field(default_factory=list)
    confirms: list[tuple[float, ConfirmRequest]] = field(default_factory=list)
    results: list[tuple[float, ProbeResult]] = field(default_factory=list)

    async def attach(self, nc: Client) -> None:
        async def on_report(msg: Msg) -> None:
            self.reports.append((time.monotonic(), decode_failure_report(msg.data)))

        async def on_confirm(msg: Msg) -> None:
            self.confirms.append((time.monotonic(), decode_confirm_request(msg.data)))

        async def on_result(msg: Msg) -> None:
            self.results.append((time.monotonic(), decode_probe_result(msg.data)))

        await nc.subscribe(SUBJECTS.report_all, cb=on_report)
        await nc.subscribe(SUBJECTS.confirm_all, cb=on_confirm)
        await nc.subscribe(SUBJECTS.probe_all, cb=on_result)
        await sync_subscriptions(nc)


@dataclass
class Stack:
    service: CoordinatorService
    workers: list[ProbeWorker]
    nc: Client
    wire: Wire


@contextlib.asynccontextmanager
async def running(nats_server: EmbeddedNats, config: Config) -> AsyncIterator[Stack]:
    """Coordinator (no lease) and two probe workers, each on its own connection; every target checked once."""
    conns = [await nats.connect(nats_server.url) for _ in range(4)]
    wire = Wire()
    await wire.attach(conns[3])
    service = CoordinatorService(config, conns[0], lease_ttl=0)
    workers = [ProbeWorker(config, worker_id=f"w{i}") for i in (1, 2)]
    try:
        async with service:
            for worker, conn in zip(workers, conns[1:3], strict=True):
                await worker.start(conn)
            for worker in workers:
                for target in TARGETS:
                    await worker.check_once(target)
            yield Stack(service, workers, conns[3], wire)
    finally:
        for worker in workers:
            await worker.stop()
        for conn in conns:
            await conn.close()


def _redis_client(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 1))


def _confirm_checks(stack: Stack) -> int:
    return sum(w.confirm_checks for w in stack.workers)


async def test_one_report_leads_to_a_confirmation_check_and_the_usual_rules_decide(
    nats_server: EmbeddedNats, redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    """Redis stops: the first failing adapter call reports it; the coordinator asks both workers to check
    now; their failing results (observed after the request) and re-checks at retry_interval make it
    unavailable; a report while the breaker is open starts no extra check."""
    config = _config(redis_server.url, postgres_server.dsn)
    async with (
        running(nats_server, config) as stack,
        HealthClient.connect(nats_server.url, prefix=PREFIX, name="orders") as health,
    ):
        await health.wait_for("redis-main", "healthy", timeout=10)
        cache = HealthyRedis(_redis_client(redis_server.url), health)
        await cache.set("k", "v")
        assert stack.wire.reports == []
        assert stack.wire.confirms == []

        redis_server.stop()
        failed_at = time.monotonic()
        assert await cache.get("k") == b"v"  # failed here: served from the local cache, reported
        await wait_until(
            lambda: _confirm_checks(stack) >= 2,
            10,
            "a confirmation check by both workers",
            seen=lambda: [w.confirm_checks for w in stack.workers],
        )

        wire = stack.wire
        # The wire's subscriptions are its own (each with its own task): the report and the
        # request reached it before the workers' answers left, but it may not have taken them yet.
        await wait_until(
            lambda: bool(wire.reports and wire.confirms),
            10,
            "the report and the request on the wire",
            seen=lambda: (len(wire.reports), len(wire.confirms)),
        )
        assert len(wire.reports) == 1
        _, report = wire.reports[0]
        assert (report.target, report.kind) == ("redis-main", "refused")
        assert report.instance.startswith("orders@")
        assert len(wire.confirms) == 1
        confirmed_at, request = wire.confirms[0]
        assert (request.target, request.round, request.reports, request.instances) == ("redis-main", 1, 1, 1)
        assert request.at >= report.at

        def answered() -> list[tuple[float, ProbeResult]]:
            return [(t, r) for t, r in wire.results if r.target == "redis-main" and r.observed_at >= request.at]

        # A worker counts its confirmation check once it has handed the result to nats-py: the
        # wire's own subscription gets it a moment later (a loaded CI rehearsal asserted first).
        await wait_until(
            lambda: {r.probe for _, r in answered()} == {"w1", "w2"},
            10,
            "both workers' answers on the wire",
            seen=lambda: [(r.probe, r.outcome) for _, r in answered()],
        )
        answers = answered()
        assert {r.probe for _, r in answers} == {"w1", "w2"}
        assert all(r.outcome == "fail" for _, r in answers)
        first_answer = min(t for t, _ in answers)
        assert failed_at <= wire.reports[0][0] <= confirmed_at <= first_answer
        print(f"report -> confirmation check result: {(first_answer - wire.reports[0][0]) * 1000:.1f} ms")
        assert stack.service.reports.planner.rounds == {"redis-main": 1}
        for worker in stack.workers:
            assert (
                worker.metrics.registry.get_sample_value(
                    "healthbus_probe_confirms_total", {"target": "redis-main", "result": "checked"}
                )
                == 1.0
            )

        down = await health.wait_for("redis-main", "unavailable", timeout=10)
        assert down.breaker == "open"
        assert down.retry_at is not None
        # Held: the coordinator starts no round while the breaker waits for retry_at ...
        late = FailureReport(target="redis-main", instance="billing@web-2:7", kind="timeout", at=utcnow())
        await stack.nc.publish(SUBJECTS.report("redis-main"), encode(late))
        planner = stack.service.reports.planner
        await wait_until(
            lambda: planner.outcomes.get(("redis-main", "held")) == 1,
            5,
            "the held report",
            seen=lambda: dict(planner.outcomes),
        )
        assert planner.rounds == {"redis-main": 1}
        # ... and a worker asked anyway does not check before retry_at.
        checks_before = _confirm_checks(stack)
        forged = ConfirmRequest(target="redis-main", round=99, at=utcnow())
        await stack.nc.publish(SUBJECTS.confirm("redis-main"), encode(forged))
        for worker in stack.workers:
            await wait_until(
                lambda w=worker: (
                    w.metrics.registry.get_sample_value(  # type: ignore[misc]
                        "healthbus_probe_confirms_total", {"target": "redis-main", "result": "held"}
                    )
                    == 1.0
                ),
                5,
                "the worker to hold the confirmation request",
                seen=lambda w=worker: w.metrics.registry.get_sample_value(  # type: ignore[misc]
                    "healthbus_probe_confirms_total", {"target": "redis-main", "result": "held"}
                ),
            )
        assert _confirm_checks(stack) == checks_before
        assert health.state("postgres-main") is not None
        assert health.state("postgres-main").state == "healthy"  # type: ignore[union-attr]


async def test_reports_alone_never_make_a_target_unavailable_while_the_probes_pass(
    nats_server: EmbeddedNats, redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    """One instance cannot reach PostgreSQL (its own network trouble), 30 more report both targets, one
    floods Redis: rounds are coalesced per window, the checks pass, every verdict stays healthy."""
    config = _config(redis_server.url, postgres_server.dsn)
    async with (
        running(nats_server, config) as stack,
        HealthClient.connect(nats_server.url, prefix=PREFIX, name="orders") as health,
    ):
        verdicts: list[StateChanged] = []
        health.on_change(verdicts.append)
        for target in TARGETS:
            await health.wait_for(target, "healthy", timeout=10)
        dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"
        engine = create_async_engine(dead)
        guard = DatabaseGuard(engine, health, target="postgres-main", local_cooldown=0)
        planner = stack.service.reports.planner
        try:
            # Bounded: two confirmation rounds per target within 30 s, or the test fails here.
            async with asyncio.timeout(30):
                while planner.rounds.get("postgres-main", 0) < 2 or planner.rounds.get("redis-main", 0) < 2:
                    with pytest.raises(DependencyUnavailable) as info:
                        async with guard.async_session_scope() as session:
                            await session.execute(text("SELECT 1"))
                    assert info.value.kind == "refused"
                    for i in range(30):
                        for target in TARGETS:
                            report = FailureReport(target=target, instance=f"svc-{i}", kind="timeout", at=utcnow())
                            await stack.nc.publish(SUBJECTS.report(target), encode(report))
                    await asyncio.sleep(1.0)  # pacing: a client reports a target at most once a second
        finally:
            await engine.dispose()
        flood = FailureReport(target="redis-main", instance="noisy", kind="other", at=utcnow())
        for _ in range(20):
            await stack.nc.publish(SUBJECTS.report("redis-main"), encode(flood))
        await stack.nc.publish(f"{PREFIX}.report.no-such-target", encode(flood))
        await stack.nc.flush()
        dropped = stack.service.dropped
        await wait_until(
            lambda: dropped.get("report_flood", 0) == 19 and dropped.get("report_unknown_target", 0) == 1,
            5,
            "the flood and the unknown target to be dropped",
            seen=lambda: dict(dropped),
        )
        await wait_until(
            lambda: _confirm_checks(stack) >= 8,
            10,
            "both workers answering every round",
            seen=lambda: [w.confirm_checks for w in stack.workers],
        )

        for target in TARGETS:
            assert planner.instances(target) == 31  # 30 + "orders" (postgres-main) or "noisy" (redis-main)
            coalesced = planner.outcomes.get((target, "coalesced"), 0)
            assert coalesced > planner.rounds[target]  # most reports rode along on a round
        answers = [r for _, r in stack.wire.results if r.observed_at >= stack.wire.confirms[0][1].at]
        assert answers
        assert all(r.outcome == "pass" for r in answers)
        assert [v for v in verdicts if v.state != "healthy"] == []
        for target in TARGETS:
            assert health.is_available(target)
            rounds = stack.service.registry.get_sample_value("healthbus_confirm_rounds_total", {"target": target})
            assert rounds == planner.rounds[target]
            instances = stack.service.registry.get_sample_value("healthbus_report_instances", {"target": target})
            assert instances == planner.instances(target)
        # One database failure a round, rounds a second apart: each went out, none was rate-limited.
        assert guard.connection_errors >= 2
        assert health.reporter.built == guard.connection_errors
        assert health.reporter.suppressed == 0
        assert health.reporter.unsent == 0
