"""The coordinator service against a real nats-server: ProbeResults in, StateChanged out."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import generate_latest

from healthbus.bus import StateStream, connect
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import (
    ControlReply,
    ControlRequest,
    Outcome,
    StateChanged,
    StateDigest,
    Subjects,
    decode_control_reply,
    decode_state_digest,
    encode,
    load_config_text,
    utcnow,
)
from healthbus.protocol.testing import ManualClock
from tests.cli._support import run_cli
from tests.e2e._procs import Command
from tests.helpers import freeze, probe_result, publish_probe, wait_until

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")
CONFIG = """
[defaults]
interval = "1s"
timeout = "500ms"
failure_threshold = 2
success_threshold = 2
stale_after = "{stale}"
backoff = {{ base = "300ms", multiplier = 2.0, max = "2s", jitter = "none" }}
trial_interval = "300ms"
flap = {{ enabled = false }}

[coordinator]
tick = "50ms"
lease_ttl = "1s"

[[targets]]
name = "db"
kind = "tcp"
url = "tcp://127.0.0.1:1"
features = ["orders"]

[[targets]]
name = "cache"
kind = "tcp"
url = "tcp://127.0.0.1:2"
"""


def config_text(stale: str = "30s") -> str:
    """The test configuration; ``stale`` is stale_after."""
    return CONFIG.format(stale=stale)


class Events:
    """Every StateChanged in the stream, live, with waiting on a condition."""

    def __init__(self) -> None:
        self.items: list[StateChanged] = []
        self._changed = asyncio.Event()
        self._cursor: dict[str, int] = {}

    def add(self, event: StateChanged) -> None:
        self.items.append(event)
        self._changed.set()

    def of(self, target: str) -> list[StateChanged]:
        """The events of one target, in stream order."""
        return [e for e in self.items if e.target == target]

    async def wait(self, pred: Callable[[list[StateChanged]], bool], timeout: float = 10.0) -> list[StateChanged]:
        """Wait until ``pred(items)`` holds; return the items."""
        async with asyncio.timeout(timeout):
            while not pred(self.items):
                self._changed.clear()
                await self._changed.wait()
        return self.items

    async def state(self, target: str, state: str, timeout: float = 10.0) -> StateChanged:
        """Wait for the next event of ``target`` (after the one last returned) with ``state``."""
        after = self._cursor.get(target, 0)

        def find() -> StateChanged | None:
            return next((e for e in self.of(target) if e.seq > after and e.state == state), None)

        await self.wait(lambda _: find() is not None, timeout)
        found = find()
        assert found is not None
        self._cursor[target] = found.seq
        return found


@pytest.fixture
async def events(nc: Client) -> AsyncIterator[Events]:
    """Every StateChanged published to the state stream, as it arrives."""
    from healthbus.bus import ensure_stream
    from healthbus.protocol import StreamSettings

    await ensure_stream(nc.jetstream(), StreamSettings.for_prefix("healthbus"))
    collected = Events()
    follower = await StateStream(nc).follow(collected.add, start="all")
    try:
        yield collected
    finally:
        await follower.stop()


async def publish(nc: Client, target: str, outcome: Outcome = "pass", probe: str = "p1", *, skew: float = 0.0) -> None:
    """Publish one ProbeResult directly, as a probe worker would."""
    result = probe_result(target, outcome, probe=probe, at=utcnow() + timedelta(seconds=skew), latency_ms=1.5)
    await publish_probe(nc, SUBJECTS.prefix, result)


async def past_retry_at(event: StateChanged) -> None:
    """Wait until ``event``'s retry_at has passed: results from then on are trials."""
    retry_at = event.retry_at
    assert retry_at is not None
    # The coordinator runs on the real clock here (a process, or a lease with real round trips).
    await wait_until(lambda: utcnow() > retry_at, 10.0, f"retry_at {retry_at} to pass", seen=utcnow)


def assert_chain(events: list[StateChanged]) -> None:
    """seq 1, 2, 3, ... with previous equal to the state before."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for before, after in itertools.pairwise(events):
        assert after.previous == before.state


async def test_full_cycle_healthy_unavailable_trials_healthy(nc: Client, events: Events) -> None:
    """unknown → healthy → unavailable (retry_at = trial_interval) → trials pass → healthy, with a ramp."""
    clock = ManualClock()  # retry_at comes when the test says (no lease: see test_silence_becomes_unknown)
    async with CoordinatorService(load_config_text(config_text()), nc, clock=clock, lease_ttl=0) as service:
        for _ in range(2):
            await publish(nc, "db", "pass")
        healthy = await events.state("db", "healthy")
        assert (healthy.seq, healthy.previous, healthy.features) == (1, "unknown", ["orders"])
        for _ in range(2):
            await publish(nc, "db", "fail")
        down = await events.state("db", "unavailable")
        assert (down.seq, down.breaker, down.attempt) == (2, "open", 1)
        assert down.retry_at is not None
        assert (down.retry_at - down.at).total_seconds() == pytest.approx(0.3, abs=0.01)
        assert "refused" in down.reason
        await clock.advance(0.29)  # before retry_at: passes are evidence only, no trial
        for _ in range(2):
            await publish(nc, "db", "pass")
        await service.wait_handled(6)
        assert service.decider.state("db") == ("unavailable", "open", 2)  # still seq 2: no trial yet
        await clock.advance(0.02)  # retry_at passed: results are trials now
        for _ in range(2):
            await publish(nc, "db", "pass")
        back = await events.state("db", "healthy")
        assert (back.seq, back.breaker, back.attempt) == (3, "closed", 0)
        assert back.ramp is not None
        assert back.ramp.started_at == back.at
        assert_chain(events.of("db"))
        raw = await nc.jetstream().get_last_msg(service.stream.name, SUBJECTS.state("db"))
        assert raw.headers is not None
        assert raw.headers["Nats-Msg-Id"] == "db:3"
        assert service.results["pass"] == 6
        assert service.results["fail"] == 2


async def test_minority_failure_is_degraded(nc: Client, events: Events) -> None:
    """One of three vantage points failing → degraded; the other target is untouched."""
    async with CoordinatorService(load_config_text(config_text()), nc):
        for _ in range(2):
            for probe in ("p1", "p2", "p3"):
                await publish(nc, "db", "pass", probe)
        await events.state("db", "healthy")
        for _ in range(2):
            await publish(nc, "db", "fail", "p1")
        degraded = await events.state("db", "degraded")
        assert degraded.breaker == "closed"
        assert "1/3 probes failing" in degraded.reason
        assert set(degraded.evidence) == {"p1", "p2", "p3"}
        assert degraded.evidence["p1"].error_kind == "refused"
        assert events.of("cache") == []


async def test_silence_becomes_unknown(nc: Client, events: Events) -> None:
    """With no results for stale_after (of the coordinator's clock), the target turns unknown without any traffic."""
    clock = ManualClock()
    # No leader lease: advance() moves the manual clock on while a renewal waits on NATS, so
    # the lease could lapse by that clock and hold back the event (the lease is tested in
    # test_lease.py and below, with real time).
    config = load_config_text(config_text(stale="30s"))
    async with CoordinatorService(config, nc, clock=clock, lease_ttl=0) as service:
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
        await clock.advance(29.0)
        assert service.decider.state("db")[0] == "healthy"  # still within stale_after
        await clock.advance(1.1)
        unknown = await events.state("db", "unknown", timeout=5.0)
        assert (unknown.seq, unknown.previous) == (2, "healthy")
        assert "no result" in unknown.reason


async def test_restart_in_process_continues_seq(nc: Client, events: Events) -> None:
    """A second service on the same stream restores, emits nothing new, and continues the seq."""
    config = load_config_text(config_text())
    async with CoordinatorService(config, nc):
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
    async with CoordinatorService(config, nc) as second:
        assert second.restored == 1
        assert second.decider.state("db") == ("healthy", "closed", 1)
        for _ in range(3):
            await publish(nc, "db", "pass")
        await second.wait_handled(3)
        assert len(events.of("db")) == 1  # agreeing results re-announce nothing
        for _ in range(2):
            await publish(nc, "db", "fail")
        down = await events.state("db", "unavailable")
        assert (down.seq, down.previous) == (2, "healthy")


async def test_junk_floods_are_dropped_while_valid_targets_are_decided(nc: Client, events: Events) -> None:
    """Malformed, mistyped, mismatched, unknown-target, absurd and oversized messages are counted and dropped."""
    async with CoordinatorService(load_config_text(config_text()), nc) as service:
        good = encode(probe_result("db")).decode()
        junk: list[tuple[str, bytes]] = []
        for i in range(2000):
            junk.append((SUBJECTS.probe("db", "p1"), b"{not json" + str(i).encode()))
            junk.append((SUBJECTS.probe("db", "p1"), good.replace('"latency_ms":1.0', '"latency_ms":"fast"').encode()))
            junk.append((SUBJECTS.probe("cache", "p1"), good.encode()))  # target db on the cache subject
            junk.append((f"healthbus.probe.nope{i}.p1", good.replace('"db"', f'"nope{i}"').encode()))
            junk.append(("healthbus.probe.BAD.p1", good.encode()))
        junk.append((SUBJECTS.probe("db", "p1"), b"x" * (70 * 1024)))
        total = len(junk)
        for subject, data in junk:
            await nc.publish(subject, data)
        # absurd timestamps: a year ahead, a day old
        await publish(nc, "db", "fail", skew=365 * 86400.0)
        await publish(nc, "db", "fail", skew=-86400.0)
        total += 2
        # valid results keep being decided among the junk
        for _ in range(2):
            await publish(nc, "db", "pass")
        total += 2
        await service.wait_handled(total)
        assert service.dropped == {
            "malformed": 4000,
            "subject_mismatch": 2000,
            "unknown_target": 4000,
            "oversized": 1,
            "stale_timestamp": 2,
        }
        healthy = await events.state("db", "healthy")
        assert healthy.seq == 1
        assert service.decider.vantage_points("db") == 1
        metrics = generate_latest(service.registry).decode()
        assert 'healthbus_dropped_messages_total{reason="malformed"} 4000.0' in metrics
        assert 'healthbus_target_state{state="healthy",target="db"} 1.0' in metrics
        assert 'healthbus_transitions_total{from="unknown",target="db",to="healthy"} 1.0' in metrics


async def test_spoofed_probe_ids_cannot_grow_memory(nc: Client, events: Events) -> None:
    """A flood of distinct probe ids is capped per target; the excess is dropped and counted."""
    async with CoordinatorService(load_config_text(config_text()), nc) as service:
        for i in range(200):
            await publish(nc, "db", "fail", f"spoof-{i}")
        await service.wait_handled(200)
        assert service.decider.vantage_points("db") == 64
        assert service.dropped == {"too_many_probes": 136}


async def test_control_request_reply(nc: Client, events: Events) -> None:
    """force-open, status, reset and bad requests are answered with request/reply."""
    async with CoordinatorService(load_config_text(config_text()), nc):
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")

        async def ctl(command: str, body: bytes) -> ControlReply:
            msg = await nc.request(SUBJECTS.ctl(command), body, timeout=5.0)
            return decode_control_reply(msg.data)

        reply = await ctl("force-open", encode(ControlRequest(target="db", reason="maintenance")))
        assert reply.ok
        assert reply.event is not None
        assert (reply.event.state, reply.event.breaker, reply.event.seq) == ("unavailable", "forced_open", 2)
        assert events.of("db")[-1].seq == 2  # acked before the reply
        status = await ctl("status", encode(ControlRequest(target="db")))
        assert status.ok
        assert status.event is not None
        assert status.event.seq == 2
        missing = await ctl("disable", encode(ControlRequest(target="nope")))
        assert not missing.ok
        assert "nope" in (missing.error or "")
        bad = await ctl("reset", b"{]")
        assert not bad.ok
        unknown_cmd = await ctl("explode", encode(ControlRequest(target="db")))
        assert not unknown_cmd.ok
        reset = await ctl("reset", encode(ControlRequest(target="db", reason="done")))
        assert reset.event is not None
        assert reset.event.state == "recovering"
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
        assert_chain(events.of("db"))


async def test_control_replies_carry_who_decided(nc: Client, events: Events) -> None:
    """A control reply's event is the event as stored: with the deciding coordinator's id
    and its lease term, as every StateChanged carries them (issue 25), also when the
    command changed nothing and the reply is the current event."""
    async with CoordinatorService(load_config_text(config_text()), nc, holder="coord-a") as service:
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
        assert service.lease is not None
        term = service.lease.term
        assert term > 0

        async def ctl(command: str) -> StateChanged:
            msg = await nc.request(SUBJECTS.ctl(command), encode(ControlRequest(target="db")), timeout=5.0)
            reply = decode_control_reply(msg.data)
            assert reply.ok, reply
            assert reply.event is not None
            return reply.event

        opened = await ctl("force-open")
        assert (opened.coordinator, opened.term) == ("coord-a", term)
        assert opened == events.of("db")[-1]  # exactly what the stream stored
        status = await ctl("status")
        assert status == events.of("db")[-1]
        reset = await ctl("reset")
        await events.wait(lambda _: events.of("db")[-1].seq == reset.seq)
        assert (reset.coordinator, reset.term) == ("coord-a", term)
        assert reset == events.of("db")[-1]


async def test_nats_restart_keeps_every_decision(nats_server: EmbeddedNats, nc: Client, events: Events) -> None:
    """Events decided while NATS is down are published in order, without gaps, once it is back."""
    async with CoordinatorService(load_config_text(config_text()), nc) as service:
        for _ in range(2):
            await publish(nc, "db", "pass")
        healthy = await events.state("db", "healthy")
        # A core subscriber gets the event as it is published, before the stream's ack reaches
        # the outbox: stop NATS only once it is stored (a loaded rehearsal found 2 pending, not 1).
        await service.wait_published("db", healthy.seq)
        assert service.pending == 0
        await asyncio.to_thread(nats_server.stop)
        # Results already received (e.g. still queued in the client) are decided meanwhile.
        now = utcnow()
        for _ in range(2):
            data = encode(probe_result("db", "fail", at=now))
            service.handle_probe(SUBJECTS.probe("db", "p1"), data)
        assert service.pending == 1
        await asyncio.to_thread(nats_server.start)
        down = await events.state("db", "unavailable", timeout=20.0)
        assert down.seq == 2
        await past_retry_at(down)
        for _ in range(2):
            await publish(nc, "db", "pass")
        healthy = await events.state("db", "healthy", timeout=10.0)
        assert healthy.seq == 3
        assert_chain(events.of("db"))
        await service.wait_published("db", 3)
        assert service.pending == 0
        assert service.ready


async def _spawn(config: Path, url: str, log: Path, *extra: str) -> Command:
    return await Command(["coordinator", "--config", str(config), "--nats", url, "-v", *extra], log).start()


async def _wait_ready(nc: Client, command: Command, target: str = "db") -> None:
    """Until the coordinator answers a status request (it subscribes only after restoring)."""
    proc = command.proc
    assert proc is not None

    errors: list[str] = []

    async def answers() -> bool:
        assert proc.returncode is None, command.log()
        try:
            await nc.request(SUBJECTS.ctl("status"), encode(ControlRequest(target=target)), timeout=0.5)
        except Exception as exc:
            errors.append(repr(exc))
            return False
        return True

    await wait_until(
        answers,
        30,
        "the coordinator to answer a status request",
        seen=lambda: (errors[-3:], command.log()[-1000:]),
    )


@pytest.mark.slow
async def test_kill9_restart_never_repeats_or_skips_seq(
    nats_server: EmbeddedNats, nc: Client, events: Events, tmp_path: Path
) -> None:
    """A coordinator killed with SIGKILL and restarted continues every seq and re-announces nothing."""
    config = tmp_path / "healthbus.toml"
    config.write_text(config_text())
    log = tmp_path / "coordinator.log"
    proc = await _spawn(config, nats_server.url, log)
    try:
        await _wait_ready(nc, proc)
        for _ in range(2):
            await publish(nc, "db", "pass")
            await publish(nc, "cache", "pass")
        await events.state("db", "healthy")
        await events.state("cache", "healthy")
        for _ in range(2):
            await publish(nc, "db", "fail")
        await events.state("db", "unavailable")
        await proc.signal(signal.SIGKILL, 10)
        before = list(events.items)

        port = free_port()
        proc = await _spawn(config, nats_server.url, log, "--http", f"127.0.0.1:{port}")
        await _wait_ready(nc, proc)
        assert events.items == before  # the restart announced nothing
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
        assert 'healthbus_target_state{state="unavailable",target="db"} 1.0' in metrics
        assert "healthbus_ready 1.0" in metrics
        await past_retry_at(events.of("db")[-1])
        for _ in range(2):
            await publish(nc, "db", "pass")
        healthy = await events.state("db", "healthy")
        assert (healthy.seq, healthy.previous) == (3, "unavailable")
        assert_chain(events.of("db"))
        assert [e.seq for e in events.of("cache")] == [1]
        assert await proc.signal(signal.SIGTERM, 15) == 0, proc.log()
    finally:
        await proc.stop()


async def test_cli_requires_config() -> None:
    """``healthbus coordinator`` without --config exits 2 with a message."""
    done = await run_cli("coordinator")
    assert done.code == 2
    assert "--config" in done.err


async def test_standby_takes_over_from_a_frozen_leader(nats_server: EmbeddedNats, nc: Client, events: Events) -> None:
    """A leader that stops renewing its lease stops publishing; the standby takes over and continues every seq."""
    config = load_config_text(config_text())
    other = await connect(url=nats_server.url)
    frozen = ManualClock()
    leader = CoordinatorService(config, nc, holder="a", clock=frozen)
    standby = CoordinatorService(config, other, holder="b")
    try:
        await leader.start()
        await standby.start()
        assert leader.active
        assert not standby.active
        assert not standby.ready
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
        # A standby decides what it hears (for a takeover) and publishes nothing.
        await standby.wait_handled(2)
        assert standby.published == 0
        assert standby.pending == 0
        # The leader's process freezes (as a stopped process would): its clock moves past
        # the lease while none of its timers run, so it renews nothing; it keeps deciding
        # the results NATS hands it, but its lease is no longer valid for publishing.
        frozen.skip(2 * leader.lease_ttl)
        assert leader.lease is not None
        assert not leader.lease.valid()
        async with asyncio.timeout(10):
            await standby.activated.wait()
        assert standby.decider.state("db") == ("healthy", "closed", 1)
        for _ in range(2):
            await publish(nc, "db", "fail")
        down = await events.state("db", "unavailable")
        assert down.seq == 2
        await past_retry_at(down)
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
        assert_chain(events.of("db"))
        # The frozen leader decided the same transitions but published none of them.
        assert leader.published == 1
        assert leader.pending > 0
        # Who decided each, under which lease: the new leader's term is the higher one.
        assert leader.lease is not None
        assert standby.lease is not None
        assert 0 < leader.lease.term < standby.lease.term
        first, *rest = events.of("db")
        assert (first.coordinator, first.term) == ("a", leader.lease.term)
        assert {(e.coordinator, e.term) for e in rest} == {("b", standby.lease.term)}
        # The frozen leader thaws: its lease loop finds the key taken and it steps down
        # with its events unstored; the stream never gets one of them after b's first.
        await frozen.advance(leader.lease_ttl)
        await wait_until(
            lambda: not leader.active,
            10.0,
            "the thawed leader stepped down",
            seen=lambda: (leader.lease, leader.pending),
        )
        stored = [e async for e in StateStream(nc).history(target="db")]
        assert_chain(stored)
        assert [e.coordinator for e in stored] == ["a"] + ["b"] * (len(stored) - 1)
        assert [e.term for e in stored] == sorted(e.term or 0 for e in stored)
        assert leader.published == 1
    finally:
        await standby.stop()
        await leader.stop(flush_timeout=0.1)
        await other.close()


@pytest.mark.slow
async def test_kill9_leader_standby_process_takes_over(
    nats_server: EmbeddedNats, nc: Client, events: Events, tmp_path: Path
) -> None:
    """Two coordinator processes: SIGKILL the leader, the standby takes over without a seq gap."""
    config = tmp_path / "healthbus.toml"
    config.write_text(config_text())
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    first = await _spawn(config, nats_server.url, log_a)
    second: Command | None = None
    try:
        await _wait_ready(nc, first)
        second = await _spawn(config, nats_server.url, log_b)
        standby = second
        await wait_until(
            lambda: "standing by" in standby.log(),
            30,
            "the second coordinator to stand by",
            seen=lambda: standby.log()[-1000:],
        )
        for _ in range(2):
            await publish(nc, "db", "pass")
        await events.state("db", "healthy")
        await first.signal(signal.SIGKILL, 10)
        await _wait_ready(nc, second)  # answers ctl only once it leads
        for _ in range(2):
            await publish(nc, "db", "fail")
        down = await events.state("db", "unavailable")
        assert (down.seq, down.previous) == (2, "healthy")
        assert_chain(events.of("db"))
        assert "took the leader lease" in second.log()
    finally:
        for proc in (first, second):
            if proc is not None:
                await proc.stop()


@pytest.mark.slow
async def test_kill9_mid_burst_leaves_every_chain_intact(
    nats_server: EmbeddedNats, nc: Client, events: Events, tmp_path: Path
) -> None:
    """SIGKILL while a burst of transitions is being published: every target's seq chain stays gap- and repeat-free."""
    names = [f"t{i}" for i in range(20)]
    text = (
        '[defaults]\nfailure_threshold = 1\nsuccess_threshold = 1\nstale_after = "30s"\n'
        'backoff = { base = "50ms", multiplier = 2.0, max = "200ms", jitter = "none" }\n'
        "flap = { enabled = false }\n"
        '[coordinator]\ntick = "20ms"\nlease_ttl = "1s"\n'
    )
    text += "".join(f'[[targets]]\nname = "{n}"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n' for n in names)
    config = tmp_path / "burst.toml"
    config.write_text(text)
    log = tmp_path / "coordinator.log"

    async def burst(rounds: int) -> None:
        for r in range(rounds):
            for name in names:
                await publish(nc, name, "fail" if r % 2 else "pass")

    proc = await _spawn(config, nats_server.url, log)
    try:
        await _wait_ready(nc, proc, target="t0")
        await burst(6)
        await proc.signal(signal.SIGKILL, 10)  # events of that burst may still be on their way
        proc = await _spawn(config, nats_server.url, log)
        await _wait_ready(nc, proc, target="t0")
        await burst(6)
        await events.wait(lambda _: all(len(events.of(n)) >= 2 for n in names), timeout=20)
        stream = {n: [e async for e in StateStream(nc).history(target=n)] for n in names}
        for name in names:
            assert_chain(stream[name])
    finally:
        await proc.stop()


async def test_a_takeover_tries_the_stream_read_again_after_a_bounded_wait(
    nats_server: EmbeddedNats, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try to read the stream's last events at a takeover waits at most 1 s for JetStream.

    A stream electing its leader answers nothing; the takeover then tries again at once
    instead of waiting out JetStream's 5 s default (which added about 5 s to a node
    loss's decision gap in `healthbus bench failover`). Here the real server is frozen
    (SIGSTOP) during the first read and resumed when that read gives up: with
    ``restore_timeout`` 4.5 s, a first try that waited out the 5 s default would leave no
    time for a second one and the start would fail.
    """
    from healthbus.bus import DirectGetError

    pid = nats_server.pid
    assert pid is not None
    reads: list[str] = []
    real = StateStream.current

    async def first_read_unanswered(self: StateStream, **kwargs: Any) -> dict[str, StateChanged]:
        if reads:
            states = await real(self, **kwargs)
            reads.append("answered")
            return states
        reads.append("frozen")  # only the first read: whatever happens, the server is resumed
        freeze(pid)
        try:
            return await real(self, **kwargs)
        except DirectGetError as exc:  # the bounded wait gave up on the frozen server
            if exc.kind == "timeout":
                reads[-1] = "no answer"
            raise
        finally:
            os.kill(pid, signal.SIGCONT)

    monkeypatch.setattr(StateStream, "current", first_read_unanswered)
    config = load_config_text(config_text())
    async with CoordinatorService(config, nc, restore_timeout=4.5, lease_ttl=0) as service:
        assert service.active
        assert service.ready
    # The first read gave up on the frozen server and was tried again; every later read (a
    # standby reads the stream at start, and the takeover reads it again) was answered.
    assert reads[0] == "no answer"
    assert set(reads[1:]) == {"answered"}


async def test_state_digest_names_every_decided_target_and_follows_the_stream(nc: Client, events: Events) -> None:
    """While active the coordinator publishes the StateDigest: each configured target's highest
    sent seq (targets never decided are absent), again after every new event, and the last
    stored event of the targets that changed last."""
    digests: asyncio.Queue[StateDigest] = asyncio.Queue()

    async def on_digest(msg: Msg) -> None:
        digests.put_nowait(decode_state_digest(msg.data))

    async def digest_reaching(seq: int) -> StateDigest:
        seen: list[dict[str, int]] = []
        try:
            async with asyncio.timeout(10):
                while (digest := await digests.get()).seqs.get("db", 0) < seq:
                    seen.append(digest.seqs)
        except TimeoutError:
            raise AssertionError(f"no digest with db >= {seq} within 10 s; the last ones: {seen[-3:]}") from None
        return digest

    await nc.subscribe(SUBJECTS.digest, cb=on_digest)
    async with CoordinatorService(load_config_text(config_text()), nc) as service:
        assert service.digest_interval == 0.5  # the default
        for _ in range(2):
            await publish(nc, "db", "pass")
        healthy = await events.state("db", "healthy")
        assert (await digest_reaching(healthy.seq)).seqs == {"db": healthy.seq}  # "cache": never decided
        for _ in range(2):
            await publish(nc, "db", "fail")
        down = await events.state("db", "unavailable")
        digest = await digest_reaching(down.seq)
        assert set(digest.seqs) == {"db"}
        assert digest.seqs["db"] <= max(e.seq for e in events.of("db"))  # never ahead of what was sent
        # Once stored, db's last event comes with the digest (a subscriber that missed it reads nothing).
        async with asyncio.timeout(10):
            while (digest := await digests.get()).events[-1:] == [] or digest.events[-1].seq != down.seq:
                pass
        assert digest.events == [down]
