"""The refresh against a real nats-server: a state older than the stream's max_age survives, and a restart continues it.

The stream here keeps messages 4 s (``stream_max_age``) and the coordinator re-announces an
unchanged state every ``refresh_after`` (1 s) of its clock. The coordinator runs on a
:class:`~healthbus.protocol.testing.ManualClock`: each refresh happens because the test
moves that clock on by ``refresh_after``, never because real time passed. Only JetStream's
expiry of old messages takes real seconds (it is the server's clock): every such wait is
on a condition (a message gone), with a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from healthbus.bus import StateStream, ensure_stream
from healthbus.coordinator import CoordinatorService, is_refresh
from healthbus.protocol import (
    ControlRequest,
    StateChanged,
    StreamSettings,
    Subjects,
    decode_state_changed,
    encode,
    load_config_text,
    utcnow,
)
from healthbus.protocol.testing import ManualClock
from tests.helpers import wait_until

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")
CONFIG = """
[coordinator]
tick = "50ms"
lease_ttl = "0s"
stream_max_age = "4s"
refresh_after = "1s"
duplicate_window = "1s"

[[targets]]
name = "db"
kind = "tcp"
url = "tcp://127.0.0.1:1"
features = ["orders"]
"""


async def refresh(service: CoordinatorService, clock: ManualClock) -> int:
    """Move the coordinator's clock on by ``refresh_after`` (plus one ``tick``, the timer's
    granularity); wait until the one refresh that makes is in the stream."""
    seq = service.decider.state("db")[2]
    await clock.advance(1.0 + 0.05)
    await service.wait_published("db", seq + 1, timeout=5.0)
    return seq + 1


async def refresh_until(
    service: CoordinatorService, clock: ManualClock, check: Callable[[], Awaitable[bool]], what: str
) -> None:
    """Refresh db (one ``refresh_after`` of the coordinator's clock at a time) until the server says ``check``."""

    async def refreshed_and_checked() -> bool:
        await refresh(service, clock)
        return await check()

    await wait_until(refreshed_and_checked, 15.0, what, seen=lambda: service.decider.state("db"))


async def test_state_outlives_stream_max_age_and_restart_continues_seq(nc: Client) -> None:
    """An unchanged target's last message survives past max_age (its history does not); a restart continues its seq."""
    config = load_config_text(CONFIG, source="test")
    js = nc.jetstream()
    settings = StreamSettings.for_prefix("healthbus", max_age_s=4.0, duplicate_window_s=1.0)
    await ensure_stream(js, settings)
    seen: list[StateChanged] = []
    arrived = asyncio.Event()

    def collect(event: StateChanged) -> None:
        seen.append(event)
        arrived.set()

    follower = await StateStream(nc).follow(collect, start="all")
    # A message nobody refreshes (an unconfigured target): proof that max_age expires at this scale.
    ghost = StateChanged(
        target="ghost", seq=1, at=utcnow(), previous="unknown", state="healthy", breaker="closed", reason="x"
    )
    await js.publish(SUBJECTS.state("ghost"), encode(ghost), headers={"Nats-Msg-Id": "ghost:1"})

    async def gone(subject: str) -> bool:
        try:
            await js.get_last_msg(settings.name, subject)
        except NotFoundError:
            return True
        return False

    async def first_seq_expired() -> bool:
        try:
            await js.get_msg(settings.name, 2)  # db's seq 1 (stream sequence 2, after the ghost)
        except NotFoundError:
            return True
        return False

    clock = ManualClock()
    try:
        async with CoordinatorService(config, nc, clock=clock) as first:
            reply = await first.handle_control("force-open", encode(ControlRequest(target="db", reason="maintenance")))
            assert reply.ok
            assert reply.event is not None
            assert reply.event.seq == 1
            assert first.decider.state("db")[2] == 1  # no time passed on its clock: no refresh yet
            # nothing changes from here on: only refreshes keep db in the stream
            await refresh_until(first, clock, lambda: gone(SUBJECTS.state("ghost")), "the unrefreshed message expired")
            await refresh_until(first, clock, first_seq_expired, "db's first event expired")
            raw = await js.get_last_msg(settings.name, SUBJECTS.state("db"))
            assert raw.data is not None
            last = decode_state_changed(raw.data)
            assert last.seq == first.decider.state("db")[2] >= 3  # one refresh per refresh_after of its clock
            assert (last.state, last.breaker, last.previous) == ("unavailable", "forced_open", "unavailable")
            assert is_refresh(last)
            assert "forced open by operator: maintenance" in last.reason
            assert raw.headers is not None
            assert raw.headers["Nats-Msg-Id"] == f"db:{last.seq}"
            # (a) a subscriber starting now still sees db
            current = await StateStream(nc).current()
            assert set(current) == {"db"}
            assert current["db"].breaker == "forced_open"
        stopped_at = first.decider.state("db")[2]

        # (b) a restart restores db and continues its seq (refreshing the restored event
        # within refresh_after of its ``at``: well before max_age drops it)
        later = ManualClock(start=clock.now())
        async with CoordinatorService(config, nc, clock=later) as second:
            assert second.restored == 1
            restored_seq = second.decider.state("db")[2]
            assert restored_seq == stopped_at  # every refresh was acked before the next
            assert await refresh(second, later) == restored_seq + 1
            nxt = second.decider.current("db")
            assert nxt is not None
            assert nxt.seq >= restored_seq + 1
            assert is_refresh(nxt)
            assert (nxt.state, nxt.breaker) == ("unavailable", "forced_open")
            assert "forced open by operator: maintenance" in nxt.reason
        async with asyncio.timeout(5.0):
            while max((e.seq for e in seen if e.target == "db"), default=0) < restored_seq + 1:
                arrived.clear()
                await arrived.wait()
    finally:
        await follower.stop()

    chain = [e for e in seen if e.target == "db"]
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))  # never repeated, never skipped
    for before, after in itertools.pairwise(chain):
        assert after.previous == before.state
        assert is_refresh(after)
