"""No decided transition is lost when the leader cannot store it and then dies (issue: failover).

A 3-node cluster, the state stream on three replicas, two coordinators: the leader a
``healthbus coordinator`` process, the standby in this process, each on a node that does
not lead the stream. The node leading the stream is SIGKILLed: while the stream elects a
new leader nothing can be stored. Within that outage the leader decides a transition it
cannot store, and is SIGKILLed too. The standby takes over and must still record it, with
the time it was decided, from the results it heard while standing by:

* a failing phase that began and ended inside the outage;
* the leader's next transition after its last *stored* event, decided from a result
  observed before that event but received after it (so the evidence the standby replays
  up to the stored event already proves the next one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client

from healthbus.bus import connect, ensure_stream
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import Outcome, StreamSettings, Subjects, load_config_text, utcnow
from tests.chaos._support import audit, by_target, config_text, read_history, result
from tests.e2e._procs import Command
from tests.harness import EmbeddedNats, NatsCluster
from tests.helpers import wait_until

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")


@dataclass
class Pair:
    """A leader process and a standby service, both away from the node leading the stream."""

    driver: Client  # never uses the doomed node
    leader: Command
    standby: CoordinatorService
    doomed: EmbeddedNats  # leads the state stream
    last_read: object = field(default_factory=list)  # what stored_states() read last

    def tail(self) -> str:
        """The end of the leader process's log (for a failure message)."""
        return self.leader.log()[-1500:]

    async def publish(
        self, outcome: Outcome, times: int, probe: str = "p1", observed_at: datetime | None = None
    ) -> None:
        for _ in range(times):
            await self.driver.publish(SUBJECTS.probe("db", probe), result("db", outcome, probe, observed_at))
        await self.driver.flush(timeout=5)

    async def stored_states(self) -> list[str]:
        try:
            states: list[str] = [e.state for e in by_target(await read_history(self.driver)).get("db", [])]
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            self.last_read = repr(exc)
            return []  # the stream is still electing its leader: ask again
        self.last_read = states
        return states

    async def outage(self) -> None:
        """The node leading the stream dies: nothing is stored until the two left elect one."""
        await asyncio.to_thread(self.doomed.kill)

    async def kill_leader(self) -> None:
        assert self.leader.proc is not None
        self.leader.proc.kill()
        await self.leader.proc.wait()


@asynccontextmanager
async def pair(nats_cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[Pair]:
    text = config_text(["db"], lease="2s", replicas=3, threshold=2)
    config_file = tmp_path / "healthbus.toml"
    config_file.write_text(text)
    driver = await connect(url=nats_cluster.url, name="chaos-driver")
    standby_nc = None
    leader = Command(["coordinator", "--config", str(config_file), "--nats", "", "-v"], tmp_path / "leader.log")
    standby: CoordinatorService | None = None
    try:
        # The stream first, so the coordinators can be placed away from its leader node.
        config = load_config_text(text)
        settings = config.coordinator
        stream = StreamSettings.for_prefix(
            "healthbus",
            max_age_s=float(settings.stream_max_age),
            duplicate_window_s=float(settings.duplicate_window),
            replicas=settings.stream_replicas,
        )
        await ensure_stream(driver.jetstream(), stream)
        info = await driver.jetstream().stream_info(stream.name)
        assert info.cluster is not None
        doomed = next(s for s in nats_cluster.servers if s.server_name == info.cluster.leader)
        others = [s for s in nats_cluster.servers if s is not doomed]
        await driver.close()  # from here on, a connection that never uses the doomed node
        driver = await connect(url=",".join(s.url for s in others), name="chaos-driver")
        leader.args[leader.args.index("--nats") + 1] = others[0].url
        await leader.start()
        await wait_until(
            lambda: "coordinator active" in leader.log(), 30, "the leader to start", seen=lambda: leader.log()[-1500:]
        )
        standby_nc = await connect(url=others[1].url, name="chaos-standby")
        standby = CoordinatorService(config, standby_nc, holder="standby")
        await standby.start()
        assert not standby.active
        yield Pair(driver, leader, standby, doomed)
    finally:
        if standby is not None:
            await standby.stop()
        await leader.stop()
        if standby_nc is not None:
            await standby_nc.close()
        await driver.close()


async def test_a_failing_phase_shorter_than_the_outage_reaches_the_stream(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Stream leader killed, then the leader that decided the failure unstored: the stream still has it."""
    async with pair(nats_cluster, tmp_path) as p:
        await p.publish("pass", 2)
        await wait_until(lambda: "db #1: unknown → healthy" in p.leader.log(), 20, "healthy decided", seen=p.tail)

        async def healthy_stored() -> bool:
            return "healthy" in await p.stored_states()

        await wait_until(healthy_stored, 20, "healthy stored", seen=lambda: p.last_read)
        await p.outage()
        failed_at = utcnow()
        await p.publish("fail", 2)
        await wait_until(
            lambda: "db #2: healthy → unavailable" in p.leader.log(), 20, "the leader deciding the failure", seen=p.tail
        )
        await p.kill_leader()  # before it could store it: the stream is still electing
        recovered_at = utcnow()
        async with asyncio.timeout(30):
            await p.standby.activated.wait()

        async def recovered() -> bool:
            await p.publish("pass", 1)  # trials once the breaker is half-open
            states = await p.stored_states()
            return len(states) > 1 and states[-1] == "healthy"

        await wait_until(recovered, 30, "the recovery stored", seen=lambda: p.last_read)
        chain = by_target(await read_history(p.driver))["db"]
        assert audit(chain) is None, audit(chain)
        down = [e for e in chain if e.state == "unavailable"]
        assert down, [(e.seq, e.state) for e in chain]
        # Recorded with the time it was decided from the results, not the takeover's.
        # The coordinator reads its wall clock at most once a millisecond (docs/contract.md, StateChanged `at`):
        # the reading it decided with may predate the test's own by up to that much.
        assert failed_at - timedelta(milliseconds=1) <= down[0].at <= recovered_at
        assert {ev.outcome for ev in down[0].evidence.values()} == {"fail"}
        assert [e.state for e in chain[:2]] == ["healthy", "unavailable"]
        print(f"stream: {[(e.seq, e.state, e.at.isoformat()) for e in chain]}")


async def test_the_transition_after_the_stored_one_is_recorded_from_a_result_observed_before_it(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Stored: degraded (p1 failing). Unstored: unavailable, decided from p2's second failure,
    observed before the degraded event but received after it. The standby records it
    without waiting for any later result (stale_after is 60 s here: no timer would)."""
    async with pair(nats_cluster, tmp_path) as p:
        await p.publish("pass", 2, "p1")
        await p.publish("pass", 2, "p2")

        async def stored(state: str) -> bool:
            return state in await p.stored_states()

        await wait_until(lambda: stored("healthy"), 20, "healthy stored", seen=lambda: p.last_read)
        first_fail = utcnow()
        await p.publish("fail", 1, "p2", first_fail)  # p2: one failure, no verdict yet
        await p.publish("fail", 2, "p1")  # p1 failing: 1/2 failing, degraded
        await wait_until(lambda: "→ degraded" in p.leader.log(), 20, "degraded decided", seen=p.tail)
        await wait_until(lambda: stored("degraded"), 20, "degraded stored", seen=lambda: p.last_read)
        await p.outage()
        # p2's second failure, observed before the degraded event (a slow network, a busy
        # worker): 2/2 failing, the breaker opens; the stream cannot take it.
        sent_at = utcnow()
        await p.publish("fail", 1, "p2", first_fail + timedelta(milliseconds=1))
        await wait_until(
            lambda: "degraded → unavailable" in p.leader.log(), 20, "the leader deciding unavailable", seen=p.tail
        )
        killed_at = utcnow()
        await p.kill_leader()
        async with asyncio.timeout(30):
            await p.standby.activated.wait()
        await wait_until(
            lambda: stored("unavailable"), 30, "unavailable stored by the new leader", seen=lambda: p.last_read
        )
        chain = by_target(await read_history(p.driver))["db"]
        assert audit(chain) is None, audit(chain)
        states = [e.state for e in chain]
        assert "unavailable" in states, [(e.seq, e.state, e.reason[:50]) for e in chain]
        # Nothing else in between (no state the evidence never had), and right after degraded.
        assert states[: states.index("unavailable") + 1] == ["healthy", "degraded", "unavailable"], states
        down = chain[states.index("unavailable")]
        # The time the standby received the result that decided it, not the takeover's (a
        # lease, 2 s, after the kill). The standby hears it about when the leader does: its
        # clock reads wall time at most NOW_RESOLUTION (1 ms) stale, and it may take the
        # message in just after this test saw the leader's log line.
        assert sent_at - timedelta(milliseconds=1) <= down.at <= killed_at + timedelta(milliseconds=500)
        assert {ev.outcome for ev in down.evidence.values()} == {"fail"}
