"""Catching up after a reconnect: the StateDigest shortcut, bounded requests, jittered reconnects.

The fleet test restarts a real nats-server under a few hundred HealthClients (each on its
own connection, as in a fleet) while a coordinator stand-in publishes StateChanged and the
StateDigest, and checks that every client catches up with no request left unanswered and
no transition missed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.msg import Msg

from healthbus.bus import DigestPublisher, PongSafeClient, connect, sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import BusSettings, StateChanged, Subjects
from healthbus.subscribers import HealthClient
from healthbus.subscribers._catchup import behind, pages
from tests.helpers import freeze, holds_within, record_writes, wait_bus, wait_until

from ._events import Publisher
from ._proxy import Proxy

PREFIX = "hbcatch"
FLEET = 300


# ---------------------------------------------------------------- pure parts


def test_behind_names_newer_new_and_retired_targets() -> None:
    """Newer in the digest, unknown to us, or known but absent (retired): read again; nothing else."""
    known = {"a": 3, "b": 5, "gone": 2}
    digest = {"a": 3, "b": 6, "new": 1}
    assert behind(known, digest) == ["b", "gone", "new"]
    assert behind(known, digest, absent=False) == ["b", "new"]
    assert behind({"a": 4}, {"a": 3}) == []  # ahead of the digest (it was sent before): fine


def test_pages_of_a_batched_load() -> None:
    """One request per page of ``batch``; an empty stream still took one."""
    assert [pages(n, 1000) for n in (0, 1, 1000, 1001, 2500)] == [1, 1, 1, 2, 3]


# ---------------------------------------------------------------- real server


@pytest.fixture
async def publisher(nats_server: EmbeddedNats) -> AsyncIterator[Publisher]:
    """A coordinator stand-in publishing StateChanged into the state stream."""
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    pub = Publisher(nc.jetstream(), PREFIX)
    await pub.ensure()
    try:
        yield pub
    finally:
        await nc.close()


@pytest.fixture(params=["seqs", "events"])
async def digests(
    request: pytest.FixtureRequest, nats_server: EmbeddedNats, publisher: Publisher
) -> AsyncIterator[DigestPublisher]:
    """The coordinator's StateDigest of ``publisher``'s seqs, on a connection that reconnects like the coordinator's:
    with the stored events of the targets that changed last (``events``, as the coordinator
    sends it), or with the seqs only (``seqs``, as a coordinator before ``events`` did)."""
    nc = await connect(BusSettings(url=nats_server.url), name="test-digest")
    events = publisher.recent if request.param == "events" else None
    digest = DigestPublisher(nc, Subjects(PREFIX), lambda: dict(publisher.seqs), interval=0.2, events=events)
    task = asyncio.create_task(digest.run())
    try:
        yield digest
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await nc.close()


@pytest.mark.nats
async def test_a_late_pong_after_a_flush_timeout_keeps_the_connection_reading(nats_server: EmbeddedNats) -> None:
    """nats-py 2.16 stops reading for good here (docs/upstream/nats-py-pong.md); bus.connect's client does not."""
    nc = await connect(BusSettings(url=nats_server.url))
    other = await nats.connect(nats_server.url)
    try:
        assert isinstance(nc, PongSafeClient)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            got.put_nowait(msg.data)

        await nc.subscribe("pong.test", cb=on_msg)
        await nc.flush()
        pid = nats_server.pid
        assert pid is not None
        freeze(pid)  # a server too busy to answer the PING in time
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.flush(timeout=0.2)  # type: ignore[arg-type]  # nats-py annotates int, takes seconds
        finally:
            os.kill(pid, signal.SIGCONT)
        await nc.flush(timeout=10)  # the late PONG came first, then this one's
        await other.publish("pong.test", b"after")
        await other.flush()
        assert await asyncio.wait_for(got.get(), 10) == b"after"
        assert nc.is_connected
    finally:
        await other.close()
        await nc.close()


@pytest.fixture
async def proxy(nats_server: EmbeddedNats) -> AsyncIterator[Proxy]:
    """A TCP proxy in front of ``nats_server`` (started; ``cut()`` drops every connection
    through it, ``start()`` lets them in again), cut at the end."""
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


@pytest.mark.nats
async def test_digest_shortcut_reads_only_what_changed(
    nats_server: EmbeddedNats, publisher: Publisher, digests: DigestPublisher
) -> None:
    """Cut off while one of three targets changes: back, the client reads that one target only."""
    from ._proxy import Proxy

    for target in ("pg", "redis-main", "es"):
        await publisher.publish(target, "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=0.2, resync_jitter=0.1) as health:
            seen: list[tuple[str, int]] = []
            health.on_change(lambda ev: seen.append((ev.target, ev.seq)))
            loaded = health.resync.requests
            # Cut off, nothing changes: back, no request at all.
            await proxy.cut()
            await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
            await proxy.start()
            await wait_bus(health, lambda bus: bus.connected, 30, "the client to follow live again")
            assert (health.resync.requests, health.resync.skipped, health.resync.reloads) == (loaded, 1, 0)
            # Cut off while pg changes twice: back, one direct get for pg, nothing else.
            await proxy.cut()
            await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
            await publisher.publish("pg", "unavailable")
            await publisher.publish("pg", "recovering")
            await proxy.start()
            await wait_bus(health, lambda bus: bus.connected, 30, "the client to follow live again")
            pg = health.state("pg")
            assert pg is not None
            assert (pg.seq, pg.state) == (3, "recovering")
            # The digest carries pg's last event (the coordinator's): applied, nothing read.
            # Without events, one direct get for pg.
            carried = digests.events is not None
            assert (health.resync.requests, health.resync.applied) == ((loaded, 1) if carried else (loaded + 1, 0))
            assert (health.resync.reloads, health.resync.timeouts) == (0, 0)
            assert ("pg", 3) in seen
            assert seen.count(("pg", 3)) == 1
    finally:
        await proxy.cut()


@pytest.mark.nats
async def test_once_caught_up_the_server_sends_the_client_no_more_digests(
    nats_server: EmbeddedNats, publisher: Publisher, digests: DigestPublisher
) -> None:
    """The digest subscription ends on the server, not only in nats-py: after its catch-up a
    client's connection receives none of the digests sent later (nats-py's ``max_msgs``
    alone only dropped them on arrival, each parsed, on every connection, until the next
    reconnect)."""
    from ._proxy import Proxy

    await publisher.publish("pg", "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=0.2, resync_jitter=0.1) as health:
            await proxy.cut()
            await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
            await proxy.start()
            await wait_bus(health, lambda bus: bus.connected, 30, "the client to follow live again")
            assert health.resync.digests == 1
            nc = health.nc
            assert nc is not None
            await nc.flush()
            before = nc.stats["in_msgs"]
            for _ in range(3):
                assert await digests.publish()
            await digests.nc.flush()  # the server has routed them (to nobody, now)
            await nc.flush()  # and any routed to this connection came before this PONG
            assert nc.stats["in_msgs"] == before
    finally:
        await proxy.cut()


@pytest.mark.nats
async def test_the_digest_subscription_goes_out_in_the_reconnect_write(
    proxy: Proxy, publisher: Publisher, digests: DigestPublisher
) -> None:
    """Back after a cut, the client asks for one digest in the reconnect's one write (CONNECT,
    PING, the replayed subscriptions, then the digest's SUB and its UNSUB after one message):
    no second write, and the server's one wakeup for it, per instance of a fleet."""
    await publisher.publish("pg", "healthy")
    async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=0.2, resync_jitter=0.1) as health:
        nc = health.nc
        assert nc is not None
        writes = record_writes(nc)
        await proxy.cut()
        await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
        await proxy.start()
        await wait_bus(health, lambda bus: bus.connected, 30, "the client to follow live again")
        assert (health.resync.digests, health.resync.skipped) == (1, 1)
        handshake = [w for w in writes if w and w[0].startswith(b"CONNECT ")]
        assert len(handshake) == 1, writes
        commands = [line.split(b" ", 2)[:2] for line in handshake[0]]
        digest = [i for i, c in enumerate(commands) if c == [b"SUB", f"{PREFIX}.digest".encode()]]
        assert len(digest) == 1, handshake[0]
        sid = handshake[0][digest[0]].split()[-1]
        assert handshake[0][digest[0] + 1] == b"UNSUB " + sid + b" 1\r\n"
        later = [line for w in writes[writes.index(handshake[0]) + 1 :] for line in w]
        assert not [line for line in later if line.startswith(b"SUB ")], later


@pytest.mark.nats
async def test_a_reconnect_its_digest_catches_up_takes_no_supervisor_turn(
    proxy: Proxy, publisher: Publisher, digests: DigestPublisher
) -> None:
    """The reconnect and the digest's callback move the sleeping supervisor's next round instead
    of waking it (two turns less per instance of a fleet); that round still comes when due."""
    from healthbus.protocol.testing import ManualClock

    await publisher.publish("pg", "healthy")
    clock = ManualClock()  # the supervisor's rounds come only when the test moves the clock
    async with HealthClient.connect(
        proxy.url, prefix=PREFIX, stale_after=600, resync_jitter=0.1, clock=clock
    ) as health:
        await clock.wait_sleepers(1)  # following live, its supervisor asleep
        rounds: list[float] = []
        supervise_once = health._supervise_once

        async def counted() -> float:
            rounds.append(clock.monotonic())
            return await supervise_once()

        health._supervise_once = counted  # type: ignore[method-assign]
        await proxy.cut()
        await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
        await proxy.start()
        await wait_bus(health, lambda bus: bus.connected, 30, "the digest to catch the client up")
        assert (health.resync.digests, health.resync.skipped, health.resync.reloads) == (1, 1, 0)
        assert rounds == []
        await clock.advance(5.0)  # the round the digest's callback put off (its round's wait, live)
        await wait_until(lambda: len(rounds) == 1, 10, "the supervisor's next round")


@pytest.mark.nats
async def test_a_failure_while_saying_the_loss_does_not_stop_the_reconnect(
    proxy: Proxy, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """The loss is said in nats-py's reconnect task (the disconnected callback): should that
    fail, it is logged and the supervisor says it; the client still comes back."""
    await publisher.publish("pg", "healthy")
    async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=0.2, resync_jitter=0.1) as health:
        lose = health._lose
        failures: list[str] = []

        def failing_once(now: float, reason: str) -> None:
            if not failures:
                failures.append(reason)
                raise RuntimeError("boom")
            lose(now, reason)

        health._lose = failing_once  # type: ignore[method-assign]
        await proxy.cut()
        await wait_bus(health, lambda bus: not bus.connected, 10, "the supervisor to say the loss")
        await proxy.start()
        await wait_bus(health, lambda bus: bus.connected, 30, "the client to follow live again")
        assert failures == ["disconnected from NATS"]
        assert "cannot say the bus was lost" in caplog.text


@pytest.mark.nats
async def test_without_a_digest_the_client_reloads_as_before(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """An older coordinator sends no digest: after a reconnect the client reloads every state."""
    from ._proxy import Proxy

    await publisher.publish("pg", "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=0.2, resync_jitter=0.1) as health:
            await proxy.cut()
            await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
            await publisher.publish("pg", "unavailable")
            await proxy.start()
            await health.wait_for("pg", "unavailable", timeout=30)
            await wait_bus(health, lambda bus: bus.connected, 30, "the client to follow live again")
            assert health.resync.reloads == 1
            assert health.resync.digests == 0
    finally:
        await proxy.cut()


@pytest.mark.nats
async def test_fleet_catches_up_after_a_nats_restart(
    nats_server: EmbeddedNats, publisher: Publisher, digests: DigestPublisher
) -> None:
    """A few hundred clients, NATS restarted, transitions published as it comes back: every
    client sees every transition exactly once, no catch-up request times out, none reloads."""
    targets = [f"t{i}" for i in range(5)]
    for target in targets:
        await publisher.publish(target, "healthy")
    seen: list[dict[tuple[str, int], int]] = [{} for _ in range(FLEET)]
    clients: list[HealthClient] = []
    gate = asyncio.Semaphore(20)

    async def open_one(index: int) -> None:
        async with gate:
            client = await HealthClient.connect(
                nats_server.url, prefix=PREFIX, stale_after=600, resync_jitter=0.5, connect_timeout=30
            )
        mine = seen[index]

        def note(event: StateChanged) -> None:
            key = (event.target, event.seq)
            mine[key] = mine.get(key, 0) + 1

        client.on_change(note)
        clients.append(client)

    try:
        await asyncio.gather(*(open_one(i) for i in range(FLEET)))
        assert all(c.bus.connected for c in clients)
        before = sum(c.resync.requests for c in clients)

        await nats_server.astop()
        await asyncio.gather(
            *(
                wait_bus(c, lambda bus: not bus.connected, 30, f"client {i} to see the bus go")
                for i, c in enumerate(clients)
            )
        )
        await nats_server.astart()
        # The coordinator decides as soon as NATS is back, while the fleet reconnects.
        published = [await publisher.publish("t0", "unavailable"), await publisher.publish("t1", "degraded")]

        def caught_up(c: HealthClient) -> bool:
            return c.bus.connected and all((s := c.state(e.target)) is not None and s.seq >= e.seq for e in published)

        if not await holds_within(lambda: all(caught_up(c) for c in clients), 120):
            late = [c for c in clients if not caught_up(c)]
            raise AssertionError(f"{len(late)} of {FLEET} clients not caught up after 120 s; one: {late[0].bus}")
        missed = [
            (i, e.target, e.seq) for i, mine in enumerate(seen) for e in published if mine.get((e.target, e.seq)) != 1
        ]
        assert missed == [], f"{len(missed)} (client, target, seq) not seen exactly once, e.g. {missed[:5]}"
        assert sum(c.resync.timeouts for c in clients) == 0
        assert sum(c.resync.reloads for c in clients) == 0
        # Every client learnt from a digest whether it missed anything (none reloaded).
        assert [c for c in clients if c.resync.digests < 1] == []
        # At most one direct get per changed target per client (most got them live).
        assert sum(c.resync.requests for c in clients) - before <= FLEET * len(published)
    finally:
        for i in range(0, len(clients), 50):
            await asyncio.gather(*(c.close() for c in clients[i : i + 50]), return_exceptions=True)


@pytest.mark.nats
async def test_fleet_held_off_during_a_nats_restart_reads_exactly_what_changed(
    nats_server: EmbeddedNats, publisher: Publisher, digests: DigestPublisher
) -> None:
    """A few hundred clients cut off while NATS restarts and two targets change: back, every
    client takes exactly those two from one digest (its events; with a seqs-only digest, one
    direct get each), none times out or reloads, and every client sees each change exactly once."""
    from ._proxy import Proxy

    targets = [f"t{i}" for i in range(5)]
    for target in targets:
        await publisher.publish(target, "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    seen: list[dict[tuple[str, int], int]] = [{} for _ in range(FLEET)]
    clients: list[HealthClient] = []
    gate = asyncio.Semaphore(20)

    async def open_one(index: int) -> None:
        async with gate:
            client = await HealthClient.connect(
                proxy.url, prefix=PREFIX, stale_after=600, resync_jitter=0.5, connect_timeout=30
            )
        mine = seen[index]

        def note(event: StateChanged) -> None:
            key = (event.target, event.seq)
            mine[key] = mine.get(key, 0) + 1

        client.on_change(note)
        clients.append(client)

    try:
        await asyncio.gather(*(open_one(i) for i in range(FLEET)))
        before = [(c.resync.requests, c.resync.digests) for c in clients]
        await proxy.cut()
        await wait_until(lambda: all(not c.bus.connected for c in clients), 30, "every client to see the bus go")
        await nats_server.astop()
        await nats_server.astart()
        # The coordinator decides while the fleet cannot reach NATS: nobody gets these live.
        published = [await publisher.publish("t0", "unavailable"), await publisher.publish("t3", "degraded")]
        await proxy.start()

        def caught_up(c: HealthClient) -> bool:
            return c.bus.connected and all((s := c.state(e.target)) is not None and s.seq >= e.seq for e in published)

        if not await holds_within(lambda: all(caught_up(c) for c in clients), 120):
            late = [c for c in clients if not caught_up(c)]
            raise AssertionError(f"{len(late)} of {FLEET} clients not caught up after 120 s; one: {late[0].bus}")
        missed = [
            (i, e.target, e.seq) for i, mine in enumerate(seen) for e in published if mine.get((e.target, e.seq)) != 1
        ]
        assert missed == [], f"{len(missed)} (client, target, seq) not seen exactly once, e.g. {missed[:5]}"
        cost = [
            (c.resync.requests - r, c.resync.digests - d, c.resync.timeouts, c.resync.reloads)
            for c, (r, d) in zip(clients, before, strict=True)
        ]
        # Both changes come with the digest (its events), else one direct get each.
        expected = (0, 1, 0, 0) if digests.events is not None else (2, 1, 0, 0)
        assert [x for x in cost if x != expected] == []
    finally:
        for i in range(0, len(clients), 50):
            await asyncio.gather(*(c.close() for c in clients[i : i + 50]), return_exceptions=True)
        await proxy.cut()


@pytest.mark.nats
async def test_a_digest_split_into_parts_is_merged_and_only_what_changed_is_read(
    nats_server: EmbeddedNats, publisher: Publisher, digests: DigestPublisher
) -> None:
    """1,000 targets with 64-character names: the digest is split (over 64 KiB); a client cut
    off while the first and the last target change reads just those two after merging it.
    (1,000: nats-server answers a batched direct get over more than 1,024 subjects with
    "413 Too Many Results", so a client cannot load more targets yet; docs/performance.md.)"""
    from ._proxy import Proxy

    names = [f"{i:05d}-" + "x" * 58 for i in range(1_000)]
    for name in names:
        await publisher.publish(name, "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        async with HealthClient.connect(
            proxy.url, prefix=PREFIX, stale_after=0.2, resync_jitter=0.1, connect_timeout=30
        ) as health:
            assert len(health.states()) == len(names)
            loaded = health.resync.requests
            await proxy.cut()
            await wait_until(lambda: not health.bus.connected, 10, "the client to notice the cut")
            first, last = (
                await publisher.publish(names[0], "unavailable"),
                await publisher.publish(names[-1], "degraded"),
            )
            await proxy.start()
            await wait_until(
                lambda: health.bus.connected, 30, "the client to follow live again", seen=lambda: health.bus
            )
            assert digests.parts == 2  # the digest went out in parts
            for event in (first, last):
                state = health.state(event.target)
                assert state is not None
                assert (state.seq, state.state) == (event.seq, event.state)
            reads = 0 if digests.events is not None else 2  # the newest events come with part 1
            assert (health.resync.requests - loaded, health.resync.digests) == (reads, 1)
            assert (health.resync.reloads, health.resync.timeouts) == (0, 0)
    finally:
        await proxy.cut()


@pytest.mark.nats
async def test_fifty_thousand_targets_reach_a_listener_as_one_merged_digest(nats_server: EmbeddedNats) -> None:
    """The publisher splits a 50,000-target digest into parts of at most 64 KiB on real NATS;
    a listener merges what it receives into exactly the seqs that were sent."""
    from healthbus.protocol import MAX_MESSAGE_BYTES, DigestParts, decode_state_digest

    seqs = {f"{i:05d}-" + "x" * 58: i + 1 for i in range(50_000)}
    nc = await connect(BusSettings(url=nats_server.url), name="test-digest-50k")
    listener = await nats.connect(nats_server.url)
    try:
        merged: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        sizes: list[int] = []
        parts = DigestParts()

        async def on_msg(msg: Msg) -> None:
            sizes.append(len(msg.data))
            whole = parts.add(decode_state_digest(msg.data))
            if whole is not None and not merged.done():
                merged.set_result(whole.seqs)

        await listener.subscribe(Subjects(PREFIX).digest, cb=on_msg)
        await sync_subscriptions(listener)
        publisher = DigestPublisher(nc, Subjects(PREFIX), lambda: seqs, interval=60)
        assert await publisher.publish()
        assert await asyncio.wait_for(merged, 30) == seqs
        assert publisher.parts == len(sizes) > 50
        assert max(sizes) <= MAX_MESSAGE_BYTES
    finally:
        await listener.close()
        await nc.close()


@pytest.mark.nats
async def test_after_its_reconnect_the_publisher_sends_digests_in_a_burst(nats_server: EmbeddedNats) -> None:
    """Back from a NATS restart, the publisher sends a digest every BURST_INTERVAL for a while
    (subscribers coming back later need not wait a whole interval): with a 60 s interval a
    listener still gets several right after the restart."""
    from healthbus.bus import BURST_FOR, BURST_INTERVAL

    nc = await connect(BusSettings(url=nats_server.url), name="test-digest-burst")
    listener = await connect(BusSettings(url=nats_server.url), name="test-digest-listener")
    got: list[bytes] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg.data)

    try:
        await listener.subscribe(Subjects(PREFIX).digest, cb=on_msg)
        await sync_subscriptions(listener)
        publisher = DigestPublisher(nc, Subjects(PREFIX), lambda: {"a": 1}, interval=60)
        task = asyncio.create_task(publisher.run())

        def state() -> dict[str, object]:  # where a digest that did not arrive got lost
            return {
                "got": len(got),
                "sent": publisher.sent,
                "task": task.exception() if task.done() else "running",
                "out_msgs": nc.stats["out_msgs"],
                "in_msgs": listener.stats["in_msgs"],
                "connected": (nc.is_connected, listener.is_connected),
            }

        await wait_until(lambda: len(got) == 1, 10, "the first digest", state)
        reconnects = nc.stats["reconnects"]
        await nats_server.astop()
        await nats_server.astart()
        await wait_until(lambda: nc.stats["reconnects"] > reconnects and listener.is_connected, 30, "both back")
        # A burst: many more than the one an interval of 60 s would give.
        await wait_until(lambda: len(got) >= 10, BURST_FOR, "a burst of digests", state)
        assert publisher.sent <= 2 + BURST_FOR / BURST_INTERVAL  # the first, then the burst only
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await listener.close()
        await nc.close()


@pytest.mark.nats
async def test_a_process_running_late_does_not_count_its_own_lag_against_the_digest_wait(
    nats_server: EmbeddedNats, publisher: Publisher
) -> None:
    """A client frozen for longer than the digest wait right after reconnecting (a process
    starved of CPU) keeps waiting for the digest afterwards instead of reloading at once;
    with no digest at all it still reloads once the wait has passed in time it was running."""
    from healthbus.protocol.testing import ManualClock

    from ._proxy import Proxy

    await publisher.publish("pg", "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    clock = ManualClock()
    try:
        async with HealthClient.connect(
            proxy.url, prefix=PREFIX, stale_after=600, resync_jitter=0.1, clock=clock
        ) as health:
            await proxy.cut()
            await wait_until(lambda: not health.bus.connected, 10, "the client to notice the cut")
            await proxy.start()
            # Reconnected, subscribed for a digest, its supervisor asleep on the clock.
            await wait_until(lambda: health._catchup_since is not None, 30, "a catch-up to begin", lambda: health.bus)
            await clock.wait_sleepers(1)
            clock.skip(8.0)  # frozen longer than the 5 s digest wait
            await clock.advance(0.6)  # its supervisor wakes, 8 s late
            assert (health.resync.reloads, health.resync.digests) == (0, 0)
            for _ in range(12):  # 6 s of running time: no digest came, so it reloads
                await clock.advance(0.5)
            assert health.resync.reloads == 1
            await wait_until(lambda: health.bus.connected, 30, "the client to follow live again", lambda: health.bus)
    finally:
        await proxy.cut()


@pytest.mark.nats
async def test_a_dropped_connection_is_logged_once_with_its_reason(
    nats_server: EmbeddedNats, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning per outage, not two: "lost the bus" carries nats-py's error (a fleet's
    processes log it for every instance at once)."""
    import logging

    from ._proxy import Proxy

    await publisher.publish("pg", "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=600, resync_jitter=0.1) as health:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="healthbus.subscribers"):
                await proxy.cut()
                await wait_bus(health, lambda bus: not bus.connected, 10, "the client to notice the cut")
            lines = [r.getMessage() for r in caplog.records if r.name == "healthbus.subscribers"]
            assert len(lines) == 1, lines
            assert lines[0].startswith("healthbus: lost the bus (NATS nats://127.0.0.1:")
            assert lines[0].endswith("); keeping the last known states")
    finally:
        await proxy.cut()
