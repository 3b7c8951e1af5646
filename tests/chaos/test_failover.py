"""Failover between two coordinator processes under load loses and repeats no StateChanged (docs/reliability.md).

Two ``healthbus coordinator`` processes share a 1 s leader lease. Results flow on several
targets without a pause while the leader is killed with SIGKILL; the standby takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from healthbus.bus import StateStream, connect
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import Outcome, StateChanged, Subjects, utcnow
from healthbus.subscribers import HealthClient
from tests.chaos._support import audit, by_target, config_text, final_rounds, publish_round
from tests.e2e._procs import Command
from tests.harness import NatsCluster
from tests.helpers import Recorder, wait_until

pytestmark = pytest.mark.nats

TARGETS = [f"f{i}" for i in range(8)]
SUBJECTS = Subjects("healthbus")


def took_over_at(log: str) -> datetime:
    """When the standby logged taking the lease (the CLI logs local time, millisecond precision)."""
    line = next(line for line in log.splitlines() if "took the leader lease" in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()


async def test_kill9_leader_under_load_standby_continues_every_chain(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """SIGKILL the leading coordinator while results flow: no gap, no repeat, nothing decided in between."""
    await failover(tmp_path, coordinator_urls=(nats_server.url, nats_server.url), client_url=nats_server.url)


async def test_host_loss_in_a_cluster_leader_and_its_node_die_together(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """On a 3-node cluster, the leading coordinator and the NATS node it uses die together (a host is lost)."""
    doomed = nats_cluster.servers[0]
    survivors = ",".join(s.url for s in nats_cluster.servers[1:])  # --nats takes a comma-separated list
    await failover(
        tmp_path,
        coordinator_urls=(doomed.url, survivors),
        client_url=survivors,
        replicas=3,
        also_kill=doomed.kill,
    )


async def failover(
    tmp_path: Path,
    *,
    coordinator_urls: tuple[str, str],
    client_url: str,
    replicas: int = 1,
    also_kill: Callable[[], None] | None = None,
) -> None:
    """Two coordinator processes (the first leads); SIGKILL the leader (and ``also_kill``) under load; audit."""
    config = tmp_path / "healthbus.toml"
    config.write_text(config_text(TARGETS, lease="1s", replicas=replicas))
    ports = [free_port(), free_port()]
    first, second = (
        Command(
            ["coordinator", "--config", str(config), "--nats", url, "--http", f"127.0.0.1:{port}"],
            tmp_path / f"coordinator{i}.log",
        )
        for i, (url, port) in enumerate(zip(coordinator_urls, ports, strict=True))
    )
    nc = await connect(url=client_url, name="chaos-driver")
    live: Recorder[StateChanged] = Recorder()
    driving = True
    rounds = 0

    async def drive() -> None:
        # Alternate warn and pass on every target; pace on the round's events reaching the
        # stream, with a bound so the load goes on while nobody leads.
        nonlocal rounds
        while driving:
            outcome: Outcome = "warn" if rounds % 2 == 0 else "pass"
            want = len(live) + len(TARGETS)
            await publish_round(nc, SUBJECTS, TARGETS, outcome)
            rounds += 1

            def round_seen(items: list[StateChanged], want: int = want) -> bool:
                return len(items) >= want

            with contextlib.suppress(AssertionError):
                await live.wait(round_seen, 0.2, "the round's events")

    try:
        await first.start()
        await first.wait_http_ready(f"http://127.0.0.1:{ports[0]}")
        await second.start()
        await wait_until(
            lambda: "standing by" in second.log(),
            30,
            "the second coordinator to stand by",
            seen=lambda: second.log()[-1500:],
        )
        follower = await StateStream(nc).follow(live.append, start="all")
        async with HealthClient.connect(client_url, connect_timeout=5) as health:
            driver = asyncio.create_task(drive())
            try:
                await live.wait(lambda items: len(items) >= 4 * len(TARGETS), 20, "events from the first leader")
                assert first.proc is not None
                first.proc.kill()
                if also_kill is not None:
                    await asyncio.to_thread(also_kill)
                await first.proc.wait()
                killed_at = utcnow()
                at_kill = len(live)
                await second.wait_http_ready(f"http://127.0.0.1:{ports[1]}")
                await live.wait(
                    lambda items: len(items) >= at_kill + 4 * len(TARGETS), 20, "events from the new leader"
                )
            finally:
                driving = False
                await driver
            events = await final_rounds(nc, SUBJECTS, TARGETS, health)
            chains = by_target(events)
            await follower.stop()
            for name in TARGETS:
                assert audit(chains[name]) is None, f"{name}: {audit(chains[name])}"
                seen = health.state(name)
                assert seen is not None
                assert (seen.state, seen.seq) == ("healthy", chains[name][-1].seq)
            # Decisions dated between the kill and the takeover can only be the new
            # leader's catch-up on the results it heard meanwhile (docs/coordinator.md).
            took_over = took_over_at(second.log())
            between = [e for e in events if killed_at <= e.at < took_over]
            assert not between or "caught up" in second.log(), "an event dated while nobody led, not caught up"
            print(f"{rounds} rounds, {len(events)} events, takeover {(took_over - killed_at).total_seconds():.2f}s")
    finally:
        await nc.close()
        for command in (first, second):
            await command.stop()
