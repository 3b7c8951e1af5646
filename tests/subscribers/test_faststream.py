"""FastStream adapter with a real JetStream consumer: nak/hold during an outage, resume, nothing lost."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from sqlalchemy import Column, Integer, MetaData, Table, insert
from sqlalchemy.ext.asyncio import create_async_engine

from healthbus.bus.embedded import EmbeddedNats
from healthbus.subscribers import HealthClient
from healthbus.subscribers.faststream import Gate, HealthMiddleware, requires
from healthbus.subscribers.sqlalchemy import DatabaseGuard
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._postgres import PostgresServer
from tests.helpers import Recorder, wait_until

from ._events import Publisher

pytestmark = pytest.mark.nats


class Done:
    """The message ids handled, in order; waits until a number of distinct ones were handled."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.handled: Recorder[int] = Recorder()

    @property
    def counts(self) -> Counter[int]:
        """How often each id was handled."""
        return Counter(self.handled.items)

    def add(self, n: int) -> None:
        self.handled.append(n)

    async def wait(self, timeout: float, distinct: int | None = None) -> None:
        """Until ``distinct`` (default: ``expected``) different ids were handled; fails naming those that were."""
        n = self.expected if distinct is None else distinct
        await self.handled.wait(
            lambda items: len(set(items)) >= n, timeout, f"{n} distinct messages handled", lambda: dict(self.counts)
        )


class ServerAcks:
    """The acks the server has applied to one consumer, from its ack metrics (``sample_freq="100%"``).

    nats-server publishes ``$JS.EVENT.METRIC.CONSUMER.ACK.<stream>.<consumer>`` for a sampled
    ack while holding the consumer's lock, before it drops the message from the pending set;
    a ``consumer_info`` asked for after the metric arrived therefore counts that ack. A
    handler having returned is not enough: FastStream acks after the handler, without waiting
    for the server.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.stream_seqs: Recorder[int] = Recorder()

    async def follow(self, nc: Client, stream: str, consumer: str) -> None:
        """Subscribe to the consumer's ack metrics (create the consumer with ``sample_freq="100%"``)."""

        async def on_metric(msg: Any) -> None:
            self.stream_seqs.append(json.loads(msg.data)["stream_seq"])

        await nc.subscribe(f"$JS.EVENT.METRIC.CONSUMER.ACK.{stream}.{consumer}", cb=on_metric)
        await nc.jetstream().account_info()  # a reply from the server: it has the subscription

    async def wait(self, timeout: float) -> None:
        """Until the server applied ``expected`` distinct acks; fails naming the stream seqs it applied."""
        await self.stream_seqs.wait(
            lambda seqs: len(set(seqs)) >= self.expected,
            timeout,
            f"the server to apply {self.expected} acks",
            lambda: sorted(set(self.stream_seqs.items)),
        )


@pytest.fixture
async def max_deliveries(nats_server: EmbeddedNats) -> AsyncIterator[list[bytes]]:
    """Every JetStream 'max deliveries reached' advisory (a message given up on, i.e. dead-lettered)."""
    nc = await nats.connect(nats_server.url)
    seen: list[bytes] = []

    async def on_advisory(msg: Any) -> None:
        seen.append(msg.data)

    await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", cb=on_advisory)
    try:
        yield seen
    finally:
        await nc.close()


def test_gate_delay_follows_retry_at() -> None:
    """The nak delay runs until retry_at, clamped, or the default when none is known."""
    from datetime import timedelta

    from healthbus.protocol import utcnow

    health = FakeHealthClient()
    gate = Gate(health, ["pg"], min_delay=0.5, max_delay=10, default_delay=3)
    assert gate.blocked_by() == "pg"
    assert gate.delay("pg") == 3
    health.set_state("pg", "unavailable", retry_at=utcnow() + timedelta(seconds=4))
    assert 3 < gate.delay("pg") <= 4
    health.set_state("pg", "unavailable", retry_at=utcnow() + timedelta(seconds=400))
    assert gate.delay("pg") == 10
    health.set_state("pg", "unavailable", retry_at=utcnow() - timedelta(seconds=4))
    assert gate.delay("pg") == 0.5
    health.set_state("pg", "healthy")
    assert gate.blocked_by() is None
    with pytest.raises(ValueError, match="at least one"):
        Gate(health)


async def test_decorator_naks_while_unavailable_and_processes_after(
    nats_server: EmbeddedNats, max_deliveries: list[bytes]
) -> None:
    """@requires: messages arriving during the outage are nak'ed, then each handled exactly once on recovery."""
    health = FakeHealthClient({"pg": "healthy"})
    broker = NatsBroker(nats_server.url, logger=None)
    done = Done(10)
    stream = JStream("DEC", subjects=["dec.*"])

    needs_pg = requires(health, "pg", min_delay=0.1, max_delay=0.3, default_delay=0.2)

    @broker.subscriber("dec.in", stream=stream, durable="w", pull_sub=PullSub(batch_size=1, timeout=0.2))
    @needs_pg
    async def handle(body: dict[str, int]) -> None:
        done.add(body["n"])

    await broker.start()
    try:
        for n in range(5):
            await broker.publish({"n": n}, "dec.in", stream="DEC")
        health.set_state("pg", "unavailable")
        for n in range(5, 10):
            await broker.publish({"n": n}, "dec.in", stream="DEC")
        gate: Gate = needs_pg.gate  # type: ignore[attr-defined]
        await wait_until(lambda: gate.naks >= 3, 30, "the consumer to nak during the outage", lambda: gate.naks)
        health.set_state("pg", "healthy")
        await done.wait(30)
    finally:
        await broker.stop()
    assert sorted(done.counts) == list(range(10))
    assert set(done.counts.values()) == {1}
    assert max_deliveries == []


async def test_hold_mode_pauses_the_consumer_without_naks(
    nats_server: EmbeddedNats, max_deliveries: list[bytes]
) -> None:
    """mode='hold': the consumer holds its message (in_progress) and fetches nothing else until recovery."""
    health = FakeHealthClient({"pg": "unavailable"})
    middleware = HealthMiddleware(health, "pg", mode="hold", hold_interval=0.2)
    broker = NatsBroker(nats_server.url, logger=None, middlewares=[middleware])
    done = Done(5)

    @broker.subscriber(
        "hold.in",
        stream=JStream("HOLD", subjects=["hold.*"]),
        durable="w",
        pull_sub=PullSub(batch_size=1, timeout=0.2),
        config=ConsumerConfig(max_deliver=1, ack_wait=1),
    )
    async def handle(body: dict[str, int]) -> None:
        done.add(body["n"])

    await broker.start()
    try:
        for n in range(5):
            await broker.publish({"n": n}, "hold.in", stream="HOLD")
        # Held well past ack_wait (1 s): in_progress keeps it ours, nothing else is fetched.
        await wait_until(lambda: middleware.progress_sent >= 8, 30, "8 progress acks", lambda: middleware.progress_sent)
        nc = await nats.connect(nats_server.url)
        info = await nc.jetstream().consumer_info("HOLD", "w")
        await nc.close()
        assert info.num_ack_pending == 1
        assert info.num_redelivered == 0
        assert done.counts == {}
        health.set_state("pg", "healthy")
        await done.wait(30)
    finally:
        await broker.stop()
    assert set(done.counts.values()) == {1}
    assert sorted(done.counts) == list(range(5))
    assert middleware.gate.naks == 0
    assert max_deliveries == []  # max_deliver=1 and still nothing lost


@pytest.mark.postgres
async def test_consumer_pauses_on_real_database_outage_and_loses_nothing(
    nats_server: EmbeddedNats, postgres_server: PostgresServer, max_deliveries: list[bytes]
) -> None:
    """Real JetStream + real PostgreSQL stopped mid-stream: each message stored exactly once, none dead-lettered."""
    prefix = "hbfs"
    nc = await nats.connect(nats_server.url)
    pub = Publisher(nc.jetstream(), prefix)
    await pub.ensure()
    await pub.publish("postgres-main", "healthy")

    metadata = MetaData()
    orders = Table("orders", metadata, Column("id", Integer, primary_key=True))
    engine = create_async_engine(postgres_server.sqlalchemy_url, pool_pre_ping=True, connect_args={"timeout": 2})
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)

    total = 40
    done = Done(total)
    acked = ServerAcks(total)
    await acked.follow(nc, "ORDERS", "workers")
    max_deliver = 3
    async with HealthClient.connect(nats_server.url, prefix=prefix) as health:
        guard = DatabaseGuard(engine, health, local_cooldown=0.5)
        middleware = HealthMiddleware(
            health, "postgres-main", max_deliver=max_deliver, hold_interval=0.5, min_delay=0.1, max_delay=0.5
        )
        router = NatsRouter(middlewares=[middleware])
        broker = NatsBroker(nats_server.url, logger=None)

        @router.subscriber(
            "orders.new",
            stream=JStream("ORDERS", subjects=["orders.*"]),
            durable="workers",
            pull_sub=PullSub(batch_size=1, timeout=0.2),
            config=ConsumerConfig(max_deliver=max_deliver, ack_wait=5, sample_freq="100%"),
        )
        async def store(body: dict[str, int]) -> None:
            async with guard.async_session_scope() as session:
                await session.execute(insert(orders).values(id=body["n"]))
            done.add(body["n"])

        broker.include_router(router)
        await broker.start()
        try:
            for n in range(15):
                await broker.publish({"n": n}, "orders.new", stream="ORDERS")
            await done.wait(30, distinct=5)  # mid-stream
            postgres_server.stop()
            for n in range(15, 30):
                await broker.publish({"n": n}, "orders.new", stream="ORDERS")
            await pub.publish("postgres-main", "unavailable", retry_in=0.3)
            await health.wait_for("postgres-main", "unavailable", timeout=5)
            for n in range(30, total):
                await broker.publish({"n": n}, "orders.new", stream="ORDERS")
            await wait_until(
                lambda: middleware.gate.holds >= 1,
                30,
                "a hold (naks used all but the last delivery)",
                seen=lambda: (middleware.gate.naks, middleware.gate.holds, sorted(done.counts)),
            )
            stored_during_outage = len(done.counts)

            postgres_server.start()
            await pub.publish("postgres-main", "recovering")
            await pub.publish("postgres-main", "healthy")
            await done.wait(60)
            await acked.wait(60)  # the last handler returned; its ack may still be on the way
            info = await nc.jetstream().consumer_info("ORDERS", "workers")
        finally:
            await broker.stop()
    await engine.dispose()
    await nc.close()

    assert stored_during_outage < total
    assert sorted(done.counts) == list(range(total))
    assert set(done.counts.values()) == {1}, "a message was processed twice"
    assert middleware.gate.naks > 0
    assert max_deliveries == [], "a message was dead-lettered (max_deliver reached)"
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
