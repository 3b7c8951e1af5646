"""Failure reports from a service: report_failure on every client, and automatically from the adapters."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from healthbus.bus import sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import FailureReport, Subjects, decode_failure_report
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers import HealthClient, SyncHealthClient
from healthbus.subscribers._report import FailureReporter, report_kind
from healthbus.subscribers.redis import HealthyRedis
from healthbus.subscribers.testing import FakeHealthClient

from ._sync_support import wait_until_sync

PREFIX = "hbrep"


async def _collect(nc: Client) -> asyncio.Queue[tuple[str, FailureReport]]:
    got: asyncio.Queue[tuple[str, FailureReport]] = asyncio.Queue()

    async def on_report(msg: Msg) -> None:
        got.put_nowait((msg.subject, decode_failure_report(msg.data)))

    await nc.subscribe(Subjects(PREFIX).report_all, cb=on_report)
    await sync_subscriptions(nc)
    return got


@pytest.mark.nats
async def test_report_failure_publishes_a_redacted_rate_limited_report(nats_server: EmbeddedNats, nc: Client) -> None:
    """One report per target per second, kinds mapped onto the wire's, credentials masked, bad targets refused."""
    got = await _collect(nc)
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, name="orders", connect_timeout=5) as health:
        err = ConnectionError("redis://:hunter2@10.0.0.5:6379 refused\nsecond line")
        assert health.report_failure("redis-main", "refused", err)
        assert not health.report_failure("redis-main", "timeout", "again")  # within the second: dropped
        assert health.report_failure("orders-db", "pool_timeout")  # another target has its own budget
        subject, first = await asyncio.wait_for(got.get(), 5)
        assert subject == "hbrep.report.redis-main"
        assert first.kind == "refused"
        assert first.instance.startswith("orders@")
        assert first.error is not None
        assert "hunter2" not in first.error
        assert first.error.startswith("ConnectionError: redis://:***@10.0.0.5:6379 refused")
        _, second = await asyncio.wait_for(got.get(), 5)
        assert (second.target, second.kind, second.error) == ("orders-db", "timeout", None)
        assert (health.reporter.built, health.reporter.suppressed, health.reporter.unsent) == (2, 1, 0)
        with pytest.raises(ValueError, match="invalid target name"):
            health.report_failure("Not A Target")
    assert got.empty()


@pytest.mark.nats
async def test_reports_can_be_switched_off_and_never_fail_without_a_bus(nats_server: EmbeddedNats, nc: Client) -> None:
    """report_failures=False sends nothing; with no bus a report is counted as unsent, never raised."""
    got = await _collect(nc)
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, report_failures=False) as health:
        assert not health.report_failure("redis-main", "refused")
    dead = f"nats://127.0.0.1:{free_port()}"
    async with HealthClient.connect(dead, prefix=PREFIX, connect_timeout=0.5) as offline:
        assert not offline.report_failure("redis-main", "refused")
        assert offline.reporter.unsent == 1
    await nc.flush()
    assert got.empty()


@pytest.mark.nats
def test_sync_client_reports_from_any_thread(nats_server: EmbeddedNats) -> None:
    """SyncHealthClient.report_failure hands the report to its loop; it arrives on the report subject."""
    seen: list[FailureReport] = []
    with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10, instance="web-1") as listener:
        nc = listener._client.nc if listener._client is not None else None
        assert nc is not None
        with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10) as health:

            async def subscribe() -> None:
                async def on_report(msg: Msg) -> None:
                    seen.append(decode_failure_report(msg.data))

                await nc.subscribe(Subjects(PREFIX).report_all, cb=on_report)
                await sync_subscriptions(nc)

            assert listener._runner is not None
            listener._runner.call(subscribe(), 10)
            results: list[bool] = []
            thread = threading.Thread(target=lambda: results.append(health.report_failure("pg", "dns", "no such host")))
            thread.start()
            thread.join()
            assert results == [True]
            assert not health.report_failure("pg", "dns")
            wait_until_sync(lambda: len(seen) == 1, 5, "the report")
    assert (seen[0].target, seen[0].kind, seen[0].error) == ("pg", "dns", "no such host")


async def test_redis_adapter_reports_a_connection_failure_once_per_second() -> None:
    """A refused Redis call trips the adapter and reports it (to the fake, which records); a custom
    HealthView without report_failure gets none and the call still succeeds from the cache."""
    health = FakeHealthClient({"redis-main": "healthy"})
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    cache = HealthyRedis(dead, health, local_cooldown=0)
    try:
        assert await cache.get("k") is None
        assert await cache.get("k") is None  # tripped again: the report is rate-limited
    finally:
        await dead.aclose()
    assert [(r.target, r.kind) for r in health.reports] == [("redis-main", "refused")]
    assert health.reports[0].error is not None
    assert health.reporter.suppressed == 1


def test_reporter_rules() -> None:
    """Kinds map onto the wire's; an instance id must fit; the switch turns reports off."""
    assert [report_kind(k) for k in ("refused", "pool_timeout", "disconnected", "shutdown", "weird")] == [
        "refused",
        "timeout",
        "other",
        "unhealthy",
        "other",
    ]
    with pytest.raises(ValueError, match="1-128"):
        FailureReporter("x", instance="")
    with pytest.raises(TypeError, match="str"):
        FailureReporter("x").build("pg", 3, None)  # type: ignore[arg-type]
    off = FailureReporter("x", enabled=False)
    assert off.build("pg", "refused", None) is None
    clock = ManualClock(start=datetime(2026, 1, 1, tzinfo=UTC))
    reporter = FailureReporter("x", clock=clock, secrets=["s3cret"])
    report = reporter.build("pg", "auth", "password s3cret rejected")
    assert report is not None
    assert report.error == "password *** rejected"
    assert report.at == clock.now()  # the reporter's clock dates the report
    assert reporter.build("pg", "auth", None) is None
    clock.skip(0.999)
    assert reporter.build("pg", "auth", None) is None  # one per target per second, by that clock
    clock.skip(0.001)
    assert reporter.build("pg", "auth", "x" * 5000) is not None
