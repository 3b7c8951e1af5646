"""No decided transition is lost when the leader cannot store it and then dies (issue: failover).

A 3-node cluster, the state stream on three replicas, two coordinators: the leader a
``healthbus coordinator`` process, the standby in this process, each on a node that does
not lead the stream. The node leading the stream is SIGKILLed: while the stream elects a
new leader nothing can be stored. Within that outage a target fails briefly — the leader
decides ``unavailable`` but cannot store it — and the leader is SIGKILLed too. The
standby takes over and must still record the failing phase, with the time it was
decided, from the results it heard while standing by.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import pytest

from healthbus.bus import connect, ensure_stream
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import Outcome, StreamSettings, Subjects, load_config_text, utcnow
from tests.chaos._support import audit, by_target, config_text, read_history, result
from tests.e2e._procs import Command
from tests.harness import NatsCluster
from tests.helpers import wait_until

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")


async def test_a_failing_phase_shorter_than_the_outage_reaches_the_stream(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Stream leader killed, then the leader that decided the failure unstored: the stream still has it."""
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
        await wait_until(lambda: "coordinator active" in leader.log(), 30, "the leader to start")
        standby_nc = await connect(url=others[1].url, name="chaos-standby")
        standby = CoordinatorService(config, standby_nc, holder="standby")
        await standby.start()
        assert not standby.active

        async def publish(outcome: Outcome, times: int) -> None:
            for _ in range(times):
                await driver.publish(SUBJECTS.probe("db", "p1"), result("db", outcome))
            await driver.flush(timeout=5)

        async def stored_states() -> list[str]:
            return [e.state for e in by_target(await read_history(driver)).get("db", [])]

        await publish("pass", 2)
        await wait_until(lambda: "db #1: unknown → healthy" in leader.log(), 20, "healthy decided")

        async def healthy_stored() -> bool:
            return "healthy" in await stored_states()

        await wait_until(healthy_stored, 20, "healthy stored")
        # The outage: the stream has no leader until the two nodes left elect one.
        await asyncio.to_thread(doomed.kill)
        failed_at = utcnow()
        await publish("fail", 2)
        await wait_until(lambda: "db #2: healthy → unavailable" in leader.log(), 20, "the leader deciding the failure")
        assert leader.proc is not None
        leader.proc.kill()  # before it could store it: the stream is still electing
        await leader.proc.wait()
        recovered_at = utcnow()
        async with asyncio.timeout(30):
            await standby.activated.wait()

        async def recovered() -> bool:
            await publish("pass", 1)  # trials once the breaker is half-open
            try:
                states = await stored_states()
            except (TimeoutError, nats.errors.TimeoutError):
                return False  # the stream is still electing its leader: ask again
            return len(states) > 1 and states[-1] == "healthy"

        await wait_until(recovered, 30, "the recovery stored")
        chain = by_target(await read_history(driver))["db"]
        assert audit(chain) is None, audit(chain)
        down = [e for e in chain if e.state == "unavailable"]
        assert down, [(e.seq, e.state) for e in chain]
        # Recorded with the time it was decided from the results, not the takeover's.
        assert failed_at <= down[0].at <= recovered_at
        assert {ev.outcome for ev in down[0].evidence.values()} == {"fail"}
        assert [e.state for e in chain[:2]] == ["healthy", "unavailable"]
        print(f"stream: {[(e.seq, e.state, e.at.isoformat()) for e in chain]}")
    finally:
        if standby is not None:
            await standby.stop()
        await leader.stop()
        if standby_nc is not None:
            await standby_nc.close()
        await driver.close()
