"""The whole system as a user runs it: real commands, a real redis-server, a service using HealthClient.

`healthbus coordinator` + two `healthbus probe` workers watch a redis-server; a service
(HealthClient in this test) sees it go unavailable when Redis stops and healthy when it
is back; `healthbus replay` shows the whole history with contiguous seqs; `healthbus
state-at` during the outage says unavailable; the ops endpoints count what happened.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import decode_state_changed, format_timestamp
from healthbus.subscribers import HealthClient
from tests.cli._support import run_cli
from tests.e2e._stack import Stack, fast_config
from tests.harness._redis import RedisServer
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.redis, pytest.mark.slow]


def _sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample (labels in any order), or None."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_outage_is_seen_by_a_service_and_recorded(
    nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis stops → the service sees unavailable; restarts → healthy; replay/state-at/metrics tell the story."""
    stack = Stack(nats_server.url, fast_config([("redis", "redis", redis_server.url)]), tmp_path / "stack")
    try:
        await stack.start()
        async with HealthClient.connect(nats_server.url) as health:
            await health.wait_for("redis", "healthy", timeout=30)
            assert health.is_available("redis")
            assert health.feature_available("cache")

            redis_server.stop()
            await health.wait_for("redis", "unavailable", timeout=30)
            assert not health.is_available("redis")
            assert not health.feature_available("cache")

            redis_server.start()
            await health.wait_for("redis", "healthy", timeout=30)
            assert health.is_available("redis")

        replay = await run_cli("replay", "--json", "--nats", nats_server.url)
        assert replay.code == 0, replay.err
        events = [decode_state_changed(line.encode()) for line in replay.lines]
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seqs must be contiguous from 1"
        assert all(e.target == "redis" for e in events)
        assert events[0].previous == "unknown"
        assert all(a.state == b.previous for a, b in itertools.pairwise(events))
        states = [e.state for e in events]
        assert "unavailable" in states
        assert states[-1] == "healthy"
        outage = next(e for e in events if e.state == "unavailable")
        assert outage.breaker == "open"
        assert outage.retry_at is not None

        during = await run_cli("state-at", format_timestamp(outage.at), "--json", "--nats", nats_server.url)
        assert during.code == 0, during.err
        assert [(e.target, e.state) for e in (decode_state_changed(line.encode()) for line in during.lines)] == [
            ("redis", "unavailable")
        ]
        table = await run_cli("state-at", format_timestamp(outage.at), "--nats", nats_server.url)
        assert table.lines[1].split()[:2] == ["redis", "unavailable"]

        coordinator = await stack.metrics("coordinator")
        assert _sample(coordinator, "healthbus_target_state", target="redis", state="healthy") == 1.0
        assert _sample(coordinator, "healthbus_target_state", target="redis", state="unavailable") == 0.0
        # A transition is a counter too: the outage stays visible however the scrapes fall.
        went_down = _sample(coordinator, "healthbus_transitions_total", target="redis", to="unavailable")
        assert went_down is not None
        assert went_down >= 1
        for worker in ("w1", "w2"):
            probe = await stack.metrics(worker)
            assert (_sample(probe, "healthbus_probe_check_seconds_count", target="redis") or 0) > 0
            assert (_sample(probe, "healthbus_probe_checks_total", target="redis", outcome="fail") or 0) >= 1
        evidence = {e.target: set(e.evidence) for e in events}["redis"]
        assert evidence <= {"w1", "w2"}
    except BaseException:
        print(stack.logs())
        raise
    finally:
        codes = await stack.stop()
    assert codes == {"w1": 0, "w2": 0, "coordinator": 0}


async def test_ctl_overrides_through_the_real_coordinator(
    nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path
) -> None:
    """`healthbus ctl force-open` holds a healthy target unavailable for maintenance; `reset` lets it recover."""
    stack = Stack(nats_server.url, fast_config([("redis", "redis", redis_server.url)]), tmp_path / "stack", probes=1)
    url = ["--nats", nats_server.url]

    async def current_state() -> tuple[str, str] | None:
        status = await run_cli("status", "--json", *url)
        events = [decode_state_changed(line.encode()) for line in status.lines]
        return (events[0].state, events[0].breaker) if events else None

    try:
        await stack.start()

        last: list[object] = [None]

        async def healthy() -> bool:
            last[0] = await current_state()
            return last[0] == ("healthy", "closed")

        await wait_until(healthy, 30, "redis healthy", seen=lambda: last[0])
        forced = await run_cli("ctl", "force-open", "redis", "--reason", "planned maintenance", *url)
        assert forced.code == 0, forced.err
        assert "now unavailable (breaker forced_open" in forced.out
        assert await current_state() == ("unavailable", "forced_open")
        replay = await run_cli("replay", "--json", "--target", "redis", *url)
        assert "planned maintenance" in decode_state_changed(replay.lines[-1].encode()).reason
        refused = await run_cli("ctl", "disable", "nosuch", *url)
        assert refused.code == 1
        assert "nosuch" in refused.err
        reset = await run_cli("ctl", "reset", "redis", *url)
        assert reset.code == 0, reset.err
        await wait_until(healthy, 30, "redis healthy after reset", seen=lambda: last[0])
    except BaseException:
        print(stack.logs())
        raise
    finally:
        codes = await stack.stop()
    assert codes == {"w1": 0, "coordinator": 0}
