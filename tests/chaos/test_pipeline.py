"""The whole pipeline across a NATS restart during which Redis goes down (docs/reliability.md).

Real processes as a user runs them: ``healthbus coordinator`` and two ``healthbus probe``
workers checking a real redis-server, and a service's HealthClient in this process.
NATS is stopped, Redis dies while the bus is away, NATS comes back (same port and
store): the client converges to ``unavailable``, then to ``healthy`` once Redis is
back, and the audit log has no gap or repeat.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import StateChanged
from healthbus.subscribers import HealthClient
from tests.chaos._support import audit, by_target, read_history
from tests.e2e._procs import Command
from tests.e2e._stack import Stack, fast_config
from tests.harness._redis import RedisServer
from tests.helpers import wait_bus

pytestmark = [pytest.mark.nats, pytest.mark.redis, pytest.mark.e2e]


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_nats_restart_while_redis_dies_converges_and_keeps_the_chain(
    nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path, how: str
) -> None:
    """Bus down (clean stop or SIGKILL), Redis down, bus back: unavailable, then healthy when Redis returns; no gap."""
    stack = Stack(nats_server.url, fast_config([("cache", "redis", redis_server.url)]), tmp_path, probes=2)
    seen: list[StateChanged] = []
    try:
        await stack.start()
        async with HealthClient.connect(nats_server.url, stale_after=60) as health:
            health.on_change(seen.append)
            await health.wait_for("cache", "healthy", timeout=30)
            before = health.state("cache")
            assert before is not None

            await asyncio.to_thread(nats_server.stop if how == "stop" else nats_server.kill)
            await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the bus is gone")
            redis_server.stop()
            assert health.state("cache") == before  # "keep": the last verdict stands meanwhile
            await asyncio.to_thread(nats_server.start)

            down = await health.wait_for("cache", "unavailable", timeout=30)
            assert down.seq > before.seq
            assert not health.is_available("cache")
            assert not health.feature_available("cache")
            redis_server.start()
            back = await health.wait_for("cache", "healthy", timeout=30)
            assert back.seq > down.seq
            assert health.is_available("cache")

            nc = await connect(url=nats_server.url, name="chaos-audit")
            try:
                chain = by_target(await read_history(nc))["cache"]
            finally:
                await nc.close()
            assert audit(chain) is None, audit(chain)
            states = [e.state for e in chain]
            assert states[0] == "healthy"
            assert states[-1] == "healthy"
            assert "unavailable" in states
            assert "recovering" not in states  # an open breaker is trialled and re-admitted, no half-open flip
            # The client saw changes in order, each once (after the outage it may catch up
            # straight to the current state, skipping what happened while it was away).
            seqs = [e.seq for e in seen if e.target == "cache"]
            assert all(b > a for a, b in itertools.pairwise(seqs))
            assert seqs[-1] == chain[-1].seq
        assert stack.coordinator is not None
        assert stack.coordinator.proc is not None
        assert stack.coordinator.proc.returncode is None  # it rode out the outage
        assert all(w.proc is not None and w.proc.returncode is None for w in stack.workers)
        assert all("Traceback" not in p.log() for p in (stack.coordinator, *stack.workers))
        print(" -> ".join(f"{e.seq}:{e.state}" for e in chain))
    except BaseException:
        print(stack.logs())
        raise
    finally:
        codes = await stack.stop()
    assert codes == {"w1": 0, "w2": 0, "coordinator": 0}


async def test_coordinator_kill9_while_the_breaker_is_open_resumes_the_cycle(
    nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGKILL the coordinator while Redis is down (breaker open); restarted, it carries the cycle on to healthy."""
    text = fast_config([("cache", "redis", redis_server.url)]).replace(
        "[coordinator]\n", '[coordinator]\nlease_ttl = "1s"\n'
    )
    stack = Stack(nats_server.url, text, tmp_path, probes=2)
    try:
        await stack.start()
        async with HealthClient.connect(nats_server.url) as health:
            await health.wait_for("cache", "healthy", timeout=30)
            redis_server.stop()
            down = await health.wait_for("cache", "unavailable", timeout=30)
            old = stack.coordinator
            assert old is not None
            assert old.proc is not None
            old.proc.kill()
            await old.proc.wait()
            stack.coordinator = await Command(old.args, tmp_path / "coordinator-restarted.log").start()
            await stack.coordinator.wait_http_ready(f"http://{stack.http['coordinator']}")
            redis_server.start()
            back = await health.wait_for("cache", "healthy", timeout=30)
            assert back.seq > down.seq
            nc = await connect(url=nats_server.url, name="chaos-audit")
            try:
                chain = by_target(await read_history(nc))["cache"]
            finally:
                await nc.close()
            assert audit(chain) is None, audit(chain)
            assert chain[-1].seq == back.seq
            print(" -> ".join(f"{e.seq}:{e.state}" for e in chain))
        assert "1 restored" in stack.coordinator.log()
    except BaseException:
        print(stack.logs())
        raise
    finally:
        codes = await stack.stop()
    assert codes == {"w1": 0, "w2": 0, "coordinator": 0}
