"""Hostile input to a running system: junk is counted, dropped, bounded; nothing crashes (docs/reliability.md).

A coordinator and a service's HealthClient run on a plain nats-server (no permissions:
on a secured deployment most of this junk could not even be published, see
tests/deploy). An "attacker" connection blasts a bounded amount of junk of every kind
on loopback, while a real vantage point keeps driving one target.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import (
    ControlRequest,
    ProbeResult,
    StateChanged,
    Subjects,
    encode,
    load_config_text,
    utcnow,
)
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers import HealthClient
from tests.chaos._support import audit, by_target, config_text, read_history, result
from tests.helpers import wait_until

pytestmark = pytest.mark.nats

PREFIX = "chaoshostile"
SUBJECTS = Subjects(PREFIX)
MAX_VANTAGE_POINTS = 64  # the documented per-target cap (docs/coordinator.md)


def probe_at(target: str, probe: str, at: datetime, outcome: str = "fail") -> bytes:
    """A well-formed ProbeResult observed at ``at``."""
    return encode(ProbeResult(target=target, probe=probe, outcome=outcome, latency_ms=1.0, observed_at=at))  # type: ignore[arg-type]


async def test_junk_of_every_kind_is_counted_dropped_and_bounded(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed, oversized, unknown, mismatched, spoofed, absurd, replayed and forged junk changes nothing."""
    caplog.set_level(logging.WARNING, logger="healthbus.coordinator")
    config = load_config_text(config_text(["db", "cache"], prefix=PREFIX, lease="2s", threshold=1))
    coord_nc = await connect(url=nats_server.url, name="chaos-coordinator")
    driver = await connect(url=nats_server.url, name="chaos-probe")
    attacker = await connect(url=nats_server.url, name="chaos-attacker")
    seen: list[StateChanged] = []
    try:
        async with (
            CoordinatorService(config, coord_nc) as service,
            HealthClient.connect(nats_server.url, prefix=PREFIX) as health,
        ):
            health.on_change(seen.append)
            await driver.publish(SUBJECTS.probe("db", "p1"), result("db", "pass"))
            await driver.publish(SUBJECTS.probe("cache", "p1"), result("cache", "pass"))
            await driver.flush()
            await health.wait_for("db", "healthy", timeout=10)
            await health.wait_for("cache", "healthy", timeout=10)
            sent = 2

            # ------------------------------------------------------------ the blast
            good = result("db", "pass").decode()
            expected: dict[str, int] = {}

            async def junk(reason: str, subject: str, data: bytes) -> None:
                nonlocal sent
                await attacker.publish(subject, data)
                sent += 1
                expected[reason] = expected.get(reason, 0) + 1

            for i in range(1000):
                await junk("malformed", SUBJECTS.probe("db", "p1"), b"{not json " + str(i).encode())
            for _ in range(300):
                await junk("malformed", SUBJECTS.probe("db", "p1"), good.replace('"pass"', '"sideways"').encode())
                await junk("malformed", SUBJECTS.probe("db", "p1"), b'{"v":1,"target":"db"}')
                await junk("malformed", SUBJECTS.probe("db", "p1"), b"\xff\xfe\x00garbage")
            for _ in range(20):
                await junk("oversized", SUBJECTS.probe("db", "p1"), b"{" + b" " * (70 * 1024) + b"}")
            for i in range(2000):  # distinct unknown targets: none may create state
                await junk(
                    "unknown_target", SUBJECTS.probe(f"ghost{i}", "p1"), good.replace('"db"', f'"ghost{i}"').encode()
                )
            for i in range(200):
                await junk("unknown_target", f"{PREFIX}.probe.NOT-A-NAME{i}.p1", good.encode())
            for _ in range(300):
                await junk("subject_mismatch", SUBJECTS.probe("cache", "p1"), good.encode())
            for _ in range(300):  # absurd clocks: a century ahead, the epoch
                await junk(
                    "stale_timestamp",
                    SUBJECTS.probe("db", "p1"),
                    probe_at("db", "p1", datetime(2126, 1, 1, tzinfo=UTC)),
                )
                await junk(
                    "stale_timestamp",
                    SUBJECTS.probe("db", "p1"),
                    probe_at("db", "p1", datetime(1970, 1, 1, tzinfo=UTC)),
                )
            past = utcnow() - timedelta(seconds=5)  # older than what p1 already said: a replay
            for _ in range(300):
                await junk("out_of_order", SUBJECTS.probe("db", "p1"), probe_at("db", "p1", past))
            spoofs = 3000  # thousands of distinct probe ids on one target, all passing
            for i in range(spoofs):
                await junk(
                    "too_many_probes",
                    SUBJECTS.probe("cache", f"spoof-{i}"),
                    probe_at("cache", f"spoof-{i}", utcnow(), "pass"),
                )
            expected["too_many_probes"] -= MAX_VANTAGE_POINTS - 1  # p1 holds one slot, 63 spoofs fit
            for i in range(200):  # junk control requests (no reply wanted)
                await attacker.publish(SUBJECTS.ctl("reset"), b"{]" + str(i).encode())
                await attacker.publish(SUBJECTS.ctl("self-destruct"), encode(ControlRequest(target="db")))
            # Junk into the state stream itself (a plain server lets anyone publish there).
            forged_old = StateChanged(
                target="db",
                seq=1,
                at=utcnow(),
                previous="healthy",
                state="unavailable",
                breaker="open",
                reason="forged",
            )
            for _ in range(50):
                await attacker.publish(SUBJECTS.state("db"), b"\x00not a state change")
                await attacker.publish(SUBJECTS.state("db"), encode(forged_old))  # a stale seq: must be ignored
                await attacker.publish(SUBJECTS.state("cache"), encode(forged_old))  # body names another target
            await attacker.flush()

            # The real vantage point keeps going among the junk: db goes down...
            await driver.publish(SUBJECTS.probe("db", "p1"), result("db", "fail"))
            await driver.flush()
            sent += 1
            await service.wait_handled(sent, timeout=30)
            down = await health.wait_for("db", "unavailable", timeout=10)
            # ... and recovers through its trial (a result once retry_at has passed).
            retry_at = down.retry_at
            assert retry_at is not None
            # (the real clock: the junk's timestamps are judged by it, see the manual-clock test below)
            await wait_until(lambda: utcnow() > retry_at, 10, f"retry_at {retry_at} to pass", seen=utcnow)
            await driver.publish(SUBJECTS.probe("db", "p1"), result("db", "pass"))
            await driver.flush()
            back = await health.wait_for("db", "healthy", timeout=10)

            # Every piece of probe junk is accounted for, by reason; control junk too (the control
            # subscription has its own task: the probe results' progress does not cover it).
            await wait_until(
                lambda: service.dropped.get("bad_control", 0) >= 400,
                10,
                "the control junk to be dropped",
                seen=lambda: dict(service.dropped),
            )
            dropped = dict(service.dropped)
            assert dropped.pop("bad_control") == 400
            assert dropped == expected
            assert service.results["fail"] == 1
            # Nothing crashed, no unbounded state.
            assert service.ready
            assert sorted(service.decider.names) == ["cache", "db"]
            assert service.decider.vantage_points("cache") == MAX_VANTAGE_POINTS
            assert service.decider.vantage_points("db") == 1
            assert (down.seq, back.seq) == (2, 3)
            assert health.bus.connected
            assert set(health.states()) == {"cache", "db"}
            cache = health.state("cache")
            assert cache is not None
            assert (cache.state, cache.seq) == ("healthy", 1)  # 63 passing spoofs changed nothing
            assert all(e.reason != "forged" for e in seen)
            assert [e.seq for e in seen if e.target == "db"] == [1, 2, 3]
            # The drop log is rate-limited: at most one line per reason in this short run.
            drop_lines = [r for r in caplog.records if "dropped a message" in r.getMessage()]
            assert len(drop_lines) <= len(expected) + 1

            # The audit log: the coordinator's own events form a clean chain around the forgeries.
            history = by_target(await read_history(driver, PREFIX))
            chain = [e for e in history["db"] if e.reason != "forged"]
            assert audit(chain) is None, audit(chain)
            assert [e.state for e in chain] == ["healthy", "unavailable", "healthy"]
    finally:
        for nc in (coord_nc, driver, attacker):
            await nc.close()


async def test_forged_stale_event_does_not_make_a_restarted_coordinator_reuse_a_seq(nats_server: EmbeddedNats) -> None:
    """A forged old-seq StateChanged left last in the stream: a restarted coordinator continues after the real seq."""
    config = load_config_text(config_text(["db"], prefix=PREFIX, threshold=1))
    nc = await connect(url=nats_server.url, name="chaos-restart")
    try:
        async with CoordinatorService(config, nc) as service:
            for outcome in ("pass", "warn", "pass"):
                want = service.handled + 1
                await nc.publish(SUBJECTS.probe("db", "p1"), result("db", outcome))
                await service.wait_handled(want)
            await service.wait_published("db", 3)
        forged = StateChanged(
            target="db", seq=1, at=utcnow(), previous="unknown", state="healthy", breaker="closed", reason="forged"
        )
        await nc.publish(SUBJECTS.state("db"), encode(forged))  # no Nats-Msg-Id: not from a coordinator
        await nc.flush()
        async with CoordinatorService(config, nc) as service:
            assert service.decider.state("db") == ("healthy", "closed", 3)
            await nc.publish(SUBJECTS.probe("db", "p1"), result("db", "warn"))
            await service.wait_published("db", 4)
            assert service.outbox.duplicates == 0
        chain = [e for e in by_target(await read_history(nc, PREFIX))["db"] if e.reason != "forged"]
        assert [(e.seq, e.state) for e in chain] == [(1, "healthy"), (2, "degraded"), (3, "healthy"), (4, "degraded")]
        assert audit(chain) is None, audit(chain)
    finally:
        await nc.close()


async def test_a_spoofed_id_flood_passes_new_workers_join_and_the_spoofs_are_forgotten(
    nats_server: EmbeddedNats,
) -> None:
    """After a spoofed-id flood, a new real worker gets a slot once the spoofs go stale; then they are forgotten.

    The coordinator runs on a manual clock and every result is observed at its time: how
    long the machine takes to hand the flood over changes nothing (on the real clock, a
    loaded machine made part of the flood older than stale_after before it was decided).
    """
    stale = 0.3
    step = 0.125  # the real workers' interval (exact in binary: no rounding at the stale_after edge)
    config = load_config_text(config_text(["db"], prefix=PREFIX, stale_after=f"{int(stale * 1000)}ms"))
    clock = ManualClock()
    nc = await connect(url=nats_server.url, name="chaos-spoof")

    def observed(probe: str) -> bytes:
        return result("db", "pass", probe, observed_at=clock.now())

    try:
        async with CoordinatorService(config, nc, clock=clock) as service:
            await nc.publish(SUBJECTS.probe("db", "p1"), observed("p1"))
            for i in range(3000):
                await nc.publish(SUBJECTS.probe("db", f"spoof-{i}"), observed(f"spoof-{i}"))
            await nc.publish(SUBJECTS.probe("db", "p2"), observed("p2"))  # a new real worker, too early
            await service.wait_handled(3002)
            assert service.decider.vantage_points("db") == MAX_VANTAGE_POINTS
            assert service.dropped == {"too_many_probes": 3002 - MAX_VANTAGE_POINTS}

            # Both real workers keep checking; the spoofs have stopped. p2 takes a stale
            # spoof's slot once stale_after has passed; every spoof is forgotten after 10 x
            # stale_after (and a timer tick).
            refused: list[float] = []
            for n in range(1, int((10 * stale + 0.5) / step) + 1):
                await clock.advance(step)
                before = service.dropped.get("too_many_probes", 0)
                want = service.handled + 2
                for probe in ("p1", "p2"):
                    await nc.publish(SUBJECTS.probe("db", probe), observed(probe))
                await service.wait_handled(want)
                if service.dropped.get("too_many_probes", 0) > before:
                    refused.append(n * step)
            assert refused == [step, 2 * step]  # p2 refused while every spoof was still live
            assert service.decider.vantage_points("db") == 2
            assert service.dropped == {"too_many_probes": 3002 - MAX_VANTAGE_POINTS + 2}
            assert service.decider.state("db") == ("healthy", "closed", 1)  # 63 spoofs changed nothing
            assert service.ready
    finally:
        await nc.close()
