"""Re-admission with a real PostgreSQL: the fleet-wide ramp, and a database that passes its
probes but fails the fleet's traffic (``max_connections`` exhausted).

In one process: a real nats-server, the coordinator, two probe workers (each on its own
connection) and several service instances (HealthClient, each with its own instance id,
and for the traffic test a SQLAlchemy engine behind a DatabaseGuard).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from healthbus.bus import sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.probes import ProbeWorker
from healthbus.protocol import (
    Config,
    ControlRequest,
    StateChanged,
    Subjects,
    decode_control_reply,
    decode_state_changed,
    encode,
    load_config_text,
    ramp_place,
    ramp_wait,
    utcnow,
)
from healthbus.subscribers import DependencyUnavailable, HealthClient
from healthbus.subscribers.sqlalchemy import DatabaseGuard
from tests.harness._postgres import PostgresServer
from tests.harness.fixtures import PostgresFactory
from tests.helpers import Recorder, wait_event, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow]

PREFIX = "hbrecover"
SUBJECTS = Subjects(PREFIX)
TARGET = "pg"


def _config(dsn: str, *, ramp: str, flap_window: int = 21) -> Config:
    return load_config_text(
        f"""
[bus]
prefix = "{PREFIX}"
[defaults]
interval = "1s"
timeout = "1s"
failure_threshold = 2
success_threshold = 2
trial_interval = "300ms"
backoff = {{ base = "1s", multiplier = 2.0, max = "8s", jitter = "none" }}
ramp = {ramp}
flap = {{ window = {flap_window} }}
[probes]
spread = 0.0
[coordinator]
tick = "50ms"
lease_ttl = "0s"
[[targets]]
name = "{TARGET}"
kind = "postgres"
url = "{dsn}"
""",
        env={},
    )


@dataclass
class Events:
    """Every StateChanged of the test's prefix, in arrival order."""

    told: Recorder[StateChanged] = field(default_factory=Recorder)

    @property
    def items(self) -> list[StateChanged]:
        """The events so far."""
        return self.told.items

    async def attach(self, nc: Client) -> None:
        async def on_state(msg: Msg) -> None:
            self.told.append(decode_state_changed(msg.data))

        await nc.subscribe(SUBJECTS.state_all, cb=on_state)
        await sync_subscriptions(nc)

    def first(self, after: int, *, ramp: bool | None = None, breaker: str | None = None) -> StateChanged | None:
        """The first event with seq > ``after`` matching the filters."""
        for event in self.items:
            if event.seq <= after:
                continue
            if ramp is not None and (event.ramp is not None) != ramp:
                continue
            if breaker is not None and event.breaker != breaker:
                continue
            return event
        return None

    async def wait(self, after: int, what: str, timeout: float = 30.0, **filters: object) -> StateChanged:
        await self.told.wait(
            lambda _: self.first(after, **filters) is not None,  # type: ignore[arg-type]
            timeout,
            what,
            seen=lambda: [(e.seq, e.state, e.breaker, e.ramp is not None) for e in self.items],
        )
        found = self.first(after, **filters)  # type: ignore[arg-type]
        assert found is not None
        return found


@contextlib.asynccontextmanager
async def running(nats_server: EmbeddedNats, config: Config) -> AsyncIterator[tuple[Client, Events]]:
    """Coordinator and two probe workers, each on its own connection; the test's own connection and events."""
    conns = [await nats.connect(nats_server.url) for _ in range(4)]
    events = Events()
    await events.attach(conns[3])
    service = CoordinatorService(config, conns[0], lease_ttl=0)
    workers = [ProbeWorker(config, worker_id=f"w{i}") for i in (1, 2)]
    try:
        async with service:
            for worker, conn in zip(workers, conns[1:3], strict=True):
                await worker.start(conn)
            yield conns[3], events
    finally:
        for worker in workers:
            await worker.stop()
        for conn in conns:
            await conn.close()


def _instances(count: int, *, low: int, high: int) -> list[str]:
    """``count`` instance ids: ``low`` with a place below 0.1 in ``pg``'s ramps, ``high``
    above 0.9, the rest anywhere (so the test knows who is first and who is last)."""
    picked: list[str] = []
    n_low = n_high = n_mid = 0
    for i in range(100_000):
        name = f"svc-{i}@host-{i % 7}:{4000 + i}"
        place = ramp_place(name, TARGET)
        if place < 0.1 and n_low < low:
            n_low += 1
        elif place > 0.9 and n_high < high:
            n_high += 1
        elif 0.1 <= place <= 0.9 and n_mid < count - low - high:
            n_mid += 1
        else:
            continue
        picked.append(name)
        if len(picked) == count:
            return picked
    raise AssertionError("could not pick instance ids")


async def _healthy_clients(stack: contextlib.AsyncExitStack, url: str, names: list[str]) -> list[HealthClient]:
    """One HealthClient per instance id (closed with ``stack``), once each sees the target healthy."""
    clients = [
        await stack.enter_async_context(HealthClient.connect(url, prefix=PREFIX, name="orders", instance=name))
        for name in names
    ]
    for client in clients:
        await client.wait_for(TARGET, "healthy", timeout=30)
    return clients


async def test_a_recovered_database_is_readmitted_through_a_ramp_each_instance_once(
    nats_server: EmbeddedNats, postgres_server: PostgresServer
) -> None:
    """PostgreSQL stops and comes back: the probes trial it every trial_interval, the breaker
    closes with a ramp (10 % → 100 % over 4 s); each of 12 instances answers is_available()
    False until its own moment and True from then on, never back and forth; the first share is
    in with the event; everyone is in once the ramp is over."""
    config = _config(postgres_server.dsn, ramp='{ from = 0.1, duration = "4s" }')
    names = _instances(12, low=2, high=3)
    async with running(nats_server, config) as (_, events), contextlib.AsyncExitStack() as stack:
        clients = await _healthy_clients(stack, nats_server.url, names)
        postgres_server.stop()
        opened = await events.wait(0, "the breaker to open", breaker="open")
        assert (opened.attempt, opened.ramp) == (1, None)
        # At the moment each instance learns of the re-admission: available or not.
        at_event: dict[str, tuple[bool, datetime]] = {}
        everyone_told = asyncio.Event()
        for name, client in zip(names, clients, strict=True):

            def seen(event: StateChanged, name: str = name, client: HealthClient = client) -> None:
                if event.ramp is not None and name not in at_event:
                    at_event[name] = (client.is_available(TARGET), utcnow())
                    if len(at_event) == len(names):
                        everyone_told.set()

            client.on_change(seen)
        postgres_server.start()
        back = await events.wait(opened.seq, "the re-admission", ramp=True)
        ramp = back.ramp
        assert ramp is not None
        # Closed by a quorum of passed trials: healthy, or degraded while one worker's trial
        # has not passed yet (both available).
        assert (back.breaker, back.previous) == ("closed", "unavailable")
        assert back.state in ("healthy", "degraded")
        assert (ramp.from_share, ramp.duration_s, ramp.readmission) == (0.1, 4.0, 1)
        assert [e.seq for e in events.items if opened.seq < e.seq < back.seq] == []  # failed trials: silent
        # Sample every instance until all are in: each series must be False..., True...
        series: dict[str, list[bool]] = {name: [] for name in names}

        async def all_in() -> bool:
            for name, client in zip(names, clients, strict=True):
                series[name].append(client.is_available(TARGET))
            return all(s[-1] for s in series.values())

        # Admission comes from each client's ramp timer (no event): sampled, the sampling is the check.
        await wait_until(all_in, 30, "every instance admitted", seen=lambda: {n: s[-1:] for n, s in series.items()})
        for name, values in series.items():
            first_true = values.index(True)
            assert all(values[first_true:]), f"{name} flipped back: {values}"
        await wait_event(everyone_told, 10, "every instance to see the re-admission", seen=lambda: sorted(at_event))
        for name in names:
            available, when = at_event[name]
            wait = ramp_wait(ramp, ramp_place(name, TARGET))
            if wait == 0.0:
                assert available, f"{name} is in the first share but was not admitted with the event"
            elif available:
                # Admitted with the event only if it learnt of it after its own moment.
                assert (when - ramp.started_at).total_seconds() >= wait, (name, wait)
        assert sum(1 for name in names if ramp_place(name, TARGET) > 0.9) == 3
        assert events.first(back.seq, breaker="open") is None  # nothing went wrong: no re-open


async def _hog(dsn: str) -> list[asyncpg.Connection]:
    """Take every connection slot PostgreSQL has left (as other applications would)."""
    held: list[asyncpg.Connection] = []
    while True:
        try:
            held.append(await asyncpg.connect(dsn, timeout=5))
        except asyncpg.TooManyConnectionsError:
            return held


async def _traffic(guards: Sequence[DatabaseGuard], stop: asyncio.Event) -> dict[str, int]:
    """Each instance runs a query every 50 ms; counts what happened."""
    counts = {"ok": 0, "unavailable": 0, "connection": 0}

    async def one(guard: DatabaseGuard) -> None:
        while not stop.is_set():
            try:
                async with guard.async_session_scope() as session:
                    await session.execute(text("SELECT 1"))
                counts["ok"] += 1
            except DependencyUnavailable as exc:
                counts["unavailable" if exc.kind == "unavailable" else "connection"] += 1
            await asyncio.sleep(0.05)

    await asyncio.gather(*(one(g) for g in guards))
    return counts


async def test_passing_probes_failing_traffic_reopens_with_growing_backoff_and_ends(
    nats_server: EmbeddedNats, postgres_server_factory: PostgresFactory
) -> None:
    """max_connections exhausted: the probes' checks pass (a refused login after being let in
    is a warn, no_new_connections: the server still serves its sessions), the fleet's new
    connections are refused. After a maintenance window, each re-admission is re-opened by
    the instances' failure reports during its ramp, the next one waits longer (1 s, 2 s, 4 s: backoff),
    and the flapping detector sees it; once the slots are free again the next re-admission
    holds: healthy, no more re-opens."""
    server = postgres_server_factory(settings={"max_connections": "12", "superuser_reserved_connections": "0"})
    config = _config(server.dsn, ramp='{ from = 0.5, duration = "2s", reopen_reports = 2 }', flap_window=5)
    names = _instances(6, low=3, high=0)
    engines: list[AsyncEngine] = []
    held: list[asyncpg.Connection] = []
    stop = asyncio.Event()
    async with running(nats_server, config) as (nc, events), contextlib.AsyncExitStack() as stack:
        try:
            clients = await _healthy_clients(stack, nats_server.url, names)
            # Every slot is taken (the workers connect afresh per check: their refused logins
            # are warns, which pass the trials).
            held = await _hog(server.dsn)
            assert held, "no slot left to take: the test needs max_connections above the workers' connections"
            request = ControlRequest(target=TARGET, reason="planned restart", duration_s=1.0)
            reply = decode_control_reply((await nc.request(f"{PREFIX}.ctl.maintenance", encode(request), 10)).data)
            assert reply.ok, reply.error
            engines = [create_async_engine(server.sqlalchemy_url, pool_size=2, max_overflow=0) for _ in names]
            guards = [
                DatabaseGuard(engine, client, target=TARGET, local_cooldown=0.5)
                for engine, client in zip(engines, clients, strict=True)
            ]
            traffic = asyncio.create_task(_traffic(guards, stop))
            # Three re-admissions, each re-opened by the fleet's reports.
            after = reply.event.seq if reply.event is not None else 0
            reopens: list[StateChanged] = []
            for n in (1, 2, 3):
                readmitted = await events.wait(after, f"re-admission {n}", ramp=True)
                assert readmitted.ramp is not None
                assert readmitted.ramp.readmission == n
                reopened = await events.wait(readmitted.seq, f"re-admission {n} to fail", breaker="open")
                assert f"re-admission {n} failed" in reopened.reason
                assert reopened.attempt == n + 1
                reopens.append(reopened)
                after = reopened.seq
            delays = [(e.retry_at - e.at).total_seconds() for e in reopens if e.retry_at is not None]
            assert delays == pytest.approx([1.0, 2.0, 4.0], abs=0.01)
            # The other applications let go: the next re-admission holds.
            for conn in held:
                await conn.close()
            held = []
            last_open = max(e.seq for e in events.items if e.breaker == "open")
            final = await events.wait(last_open, "a re-admission that holds", ramp=True)
            await wait_until(  # the clients' ramp timers: no event
                lambda: all(c.is_available(TARGET) for c in clients),
                30,
                "every instance admitted for good",
                seen=lambda: [c.is_available(TARGET) for c in clients],
            )
            assert final.ramp is not None
            ramp_end = final.ramp.started_at + timedelta(seconds=final.ramp.duration_s)
            await wait_until(lambda: utcnow() > ramp_end, 30, f"the last ramp to end at {ramp_end}", seen=utcnow)
            stop.set()
            counts = await traffic
            assert events.first(final.seq, breaker="open") is None, [e.reason for e in events.items]
            assert any(e.flapping for e in events.items), [e.reason for e in events.items]
            assert counts["ok"] > 0
            assert counts["connection"] > 0  # the refusals that made it re-open were real
        finally:
            stop.set()
            for conn in held:
                await conn.close()
            for engine in engines:
                await engine.dispose()
