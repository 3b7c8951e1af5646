"""Losing one node of a 3-node JetStream cluster loses and repeats no StateChanged (docs/reliability.md).

A real coordinator (leader lease on, as deployed) and a HealthClient connect with all
three URLs as one comma-separated string, exactly as ``--nats`` / ``NATS_URL`` take it;
the state stream has three replicas. Results keep flowing on several targets while the
node leading the state stream is SIGKILLed and later brought back.
"""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import Outcome, Subjects, load_config_text
from healthbus.subscribers import HealthClient
from tests.chaos._support import audit, by_target, config_text, final_rounds, publish_round
from tests.harness import NatsCluster
from tests.helpers import holds_within, wait_until

pytestmark = pytest.mark.nats

TARGETS = [f"c{i}" for i in range(6)]
SUBJECTS = Subjects("healthbus")


async def pick_victim(cluster: NatsCluster, nc: Client, service: CoordinatorService, victim: str) -> EmbeddedNats:
    """The node to kill: the leader of the state stream or of the lease bucket, or the coordinator's own node."""
    if victim == "coordinator_node":
        assert nc.connected_url is not None
        return next(s for s in cluster.servers if s.port == nc.connected_url.port)
    # The lease lives in the key-value bucket <STREAM>_LEADER (docs/contract.md), stream KV_<bucket>.
    stream = service.stream.name if victim == "stream_leader" else f"KV_{service.stream.name}_LEADER"
    info = await nc.jetstream().stream_info(stream)
    assert info.cluster is not None
    return next(s for s in cluster.servers if s.server_name == info.cluster.leader)


@pytest.mark.parametrize("victim", ["stream_leader", "lease_leader", "coordinator_node"])
async def test_losing_one_node_keeps_every_chain(nats_cluster: NatsCluster, victim: str) -> None:
    """Kill one node mid-run (the state stream's leader, the lease bucket's leader, or the one the
    coordinator is connected to), keep driving, bring it back: every seq chain is intact."""
    config = load_config_text(config_text(TARGETS, replicas=3, lease="5s"))
    coord_nc = await connect(url=nats_cluster.url, name="chaos-coordinator")
    driver_nc = await connect(url=nats_cluster.url, name="chaos-driver")
    service = CoordinatorService(config, coord_nc)
    await coord_nc.subscribe("_chaos.never")  # the coordinator's connection is fully usable
    driving = True
    rounds = 0

    async def drive() -> None:
        # Alternate pass and warn on every target: each round is one transition per target.
        nonlocal rounds
        while driving:
            outcome: Outcome = "warn" if rounds % 2 == 0 else "pass"
            want = service.handled + len(TARGETS)

            def taken(want: int = want) -> bool:
                return service.handled >= want and service.pending == 0

            await publish_round(driver_nc, SUBJECTS, TARGETS, outcome)
            rounds += 1
            # Pace on the coordinator having taken the round and published what it decided
            # (results sent mid-fault may be lost: core NATS is at-most-once; the promise is
            # about the StateChanged). Mid-fault a round may never be taken: drive on after 1 s.
            await holds_within(taken, 1.0)

    try:
        await service.start()
        assert service.active
        info = await coord_nc.jetstream().stream_info(service.stream.name)
        assert info.config.num_replicas == 3
        async with HealthClient.connect(nats_cluster.url, connect_timeout=5) as health:
            driver = asyncio.create_task(drive())
            try:
                progress = lambda: (service.published, service.pending, rounds)  # noqa: E731
                await wait_until(
                    lambda: service.published >= 3 * len(TARGETS), 20, "events before the fault", seen=progress
                )
                leader = await pick_victim(nats_cluster, coord_nc, service, victim)
                await asyncio.to_thread(leader.kill)
                at_kill = service.published
                # The stream elects a new leader among the two left and takes writes again.
                await wait_until(
                    lambda: service.published >= at_kill + 3 * len(TARGETS), 30, "events after the kill", seen=progress
                )
                await asyncio.to_thread(leader.start)
                await asyncio.to_thread(nats_cluster.wait_healthy)
                at_back = service.published
                await wait_until(
                    lambda: service.published >= at_back + 2 * len(TARGETS),
                    30,
                    "events after the return",
                    seen=progress,
                )
            finally:
                driving = False
                await driver
            history = by_target(await final_rounds(driver_nc, SUBJECTS, TARGETS, health))
            await wait_until(lambda: service.pending == 0, 20, "the outbox to drain", seen=lambda: service.pending)
            assert set(history) == set(TARGETS)
            for name in TARGETS:
                chain = history[name]
                assert audit(chain) is None, f"{name}: {audit(chain)}"
                assert chain[-1].state == "healthy"
                seen = health.state(name)
                assert seen is not None
                assert (seen.state, seen.seq) == ("healthy", chain[-1].seq)
            # Nothing decided was lost or published twice: the stream holds each decision once.
            total = sum(len(chain) for chain in history.values())
            assert sum(service.transitions.values()) == total
            assert service.published == total
            assert service.active
            print(f"{rounds} rounds, {total} events, {victim} {leader.server_name} killed after {at_kill} events")
    finally:
        await service.stop()
        await coord_nc.close()
        await driver_nc.close()
