"""FakeHealthClient (test mode) and the shared callback / changes() / wait_for plumbing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from healthbus.protocol import StateChanged
from healthbus.subscribers import BusStatus, HealthView
from healthbus.subscribers.testing import FakeHealthClient, state_changed


def test_fake_is_a_health_view() -> None:
    """The fake satisfies the protocol the adapters are typed against."""
    assert isinstance(FakeHealthClient(), HealthView)


def test_initial_states_and_set_state() -> None:
    """Initial states answer at once; set_state builds the next proper StateChanged."""
    health = FakeHealthClient({"redis-main": "healthy"}, features={"redis-main": ["cache"]})
    assert health.is_available("redis-main")
    assert health.feature_available("cache")
    ev = health.set_state("redis-main", "unavailable")
    assert (ev.seq, ev.previous, ev.state, ev.breaker, ev.features) == (2, "healthy", "unavailable", "open", ["cache"])
    assert not health.is_available("redis-main")
    assert not health.feature_available("cache")
    state = health.state("redis-main")
    assert state is not None
    assert state.seq == 2
    assert state.failures == 1
    assert health.state("other") is None
    assert not health.is_available("other")
    assert health.feature_available("never-heard-of")


def test_set_state_rejects_invalid_target() -> None:
    """Target names follow the wire rule even in tests."""
    with pytest.raises(ValueError, match="invalid target name"):
        FakeHealthClient().set_state("Redis Main", "healthy")


def test_state_is_updated_before_sync_callbacks() -> None:
    """Inside a callback, is_available already answers with the new state."""
    health = FakeHealthClient({"pg": "healthy"})
    seen: list[tuple[str, bool]] = []
    health.on_change(lambda ev: seen.append((ev.state, health.is_available("pg"))))
    health.set_state("pg", "unavailable")
    health.set_state("pg", "healthy")
    assert seen == [("unavailable", False), ("healthy", True)]


async def test_failing_callbacks_are_logged_and_do_not_stop_delivery(caplog: pytest.LogCaptureFixture) -> None:
    """A raising sync or async callback is logged; other callbacks and later events still arrive."""
    health = FakeHealthClient()
    got: list[int] = []

    def bad_sync(ev: StateChanged) -> None:
        raise RuntimeError("boom-sync")

    async def bad_async(ev: StateChanged) -> None:
        raise RuntimeError("boom-async")

    async def good_async(ev: StateChanged) -> None:
        await asyncio.sleep(0)
        got.append(ev.seq)

    health.on_change(bad_sync)
    health.on_change(bad_async)
    health.on_change(good_async)
    with caplog.at_level(logging.ERROR, logger="healthbus.subscribers"):
        health.set_state("pg", "healthy")
        health.set_state("pg", "unavailable")
        await health.drain()
    assert got == [1, 2]
    assert "boom-sync" in caplog.text
    assert "boom-async" in caplog.text
    await health.close()


async def test_async_callbacks_run_in_order_without_blocking_updates() -> None:
    """A slow async callback sees events in order while the state moves on immediately."""
    health = FakeHealthClient()
    release = asyncio.Event()
    order: list[str] = []

    async def slow(ev: StateChanged) -> None:
        await release.wait()
        order.append(ev.state)

    health.on_change(slow)
    health.set_state("pg", "unavailable")
    health.set_state("pg", "recovering")
    health.set_state("pg", "healthy")
    assert health.is_available("pg")  # not held back by the callback
    release.set()
    await health.drain()
    assert order == ["unavailable", "recovering", "healthy"]
    await health.close()


async def test_unsubscribe_stops_callbacks() -> None:
    """The function on_change returns removes the callback."""
    health = FakeHealthClient()
    seen: list[int] = []
    unsubscribe = health.on_change(lambda ev: seen.append(ev.seq))
    health.set_state("pg", "healthy")
    unsubscribe()
    health.set_state("pg", "unavailable")
    assert seen == [1]


async def test_changes_iterator_yields_each_change() -> None:
    """changes() yields events in order, and ignored duplicates never appear."""
    health = FakeHealthClient()
    received: list[StateChanged] = []

    async def consume() -> None:
        async for ev in changes:
            received.append(ev)
            if len(received) == 2:
                return

    changes = health.changes()
    task = asyncio.create_task(consume())
    first = health.set_state("pg", "unavailable")
    assert health.deliver(first) is False  # duplicate by seq: ignored
    health.set_state("pg", "healthy")
    await asyncio.wait_for(task, 5)
    assert [(e.seq, e.state) for e in received] == [(1, "unavailable"), (2, "healthy")]


async def test_refreshes_reach_only_those_who_ask() -> None:
    """A refresh updates the state (seq, at) but reaches on_change / changes() only with refreshes=True."""
    health = FakeHealthClient()
    plain: list[int] = []
    everything: list[int] = []
    health.on_change(lambda ev: plain.append(ev.seq))
    health.on_change(lambda ev: everything.append(ev.seq), refreshes=True)
    changes = health.changes()
    all_changes = health.changes(refreshes=True)
    first = health.set_state("pg", "healthy")
    refresh = state_changed("pg", 2, "healthy", previous="healthy", reason=first.reason, unchanged_since=first.at)
    assert health.deliver(refresh)
    state = health.state("pg")
    assert state is not None
    assert (state.seq, state.at) == (2, refresh.at)
    health.set_state("pg", "unavailable")
    assert (plain, everything) == ([1, 3], [1, 2, 3])
    assert [(await anext(changes)).seq for _ in range(2)] == [1, 3]
    assert [(await anext(all_changes)).seq for _ in range(3)] == [1, 2, 3]


async def test_changes_registers_at_the_call() -> None:
    """Events delivered between the call and the first iteration are not missed; aclose() unregisters."""
    health = FakeHealthClient()
    changes = health.changes()
    health.set_state("pg", "unavailable")  # before anyone iterates
    health.set_state("pg", "healthy")
    got = [await anext(changes), await anext(changes)]
    assert [(e.seq, e.state) for e in got] == [(1, "unavailable"), (2, "healthy")]
    await changes.aclose()  # type: ignore[attr-defined]
    assert not health._queues
    dropped = health.changes()
    assert len(health._queues) == 1
    del dropped  # a dropped iterator unregisters too
    assert not health._queues


async def test_wait_for_returns_now_or_on_change_or_times_out() -> None:
    """wait_for answers at once when already there, wakes on change, and raises TimeoutError."""
    health = FakeHealthClient({"pg": "unavailable"})
    assert (await health.wait_for("pg", "unavailable", timeout=0)).state == "unavailable"
    waiter = asyncio.create_task(health.wait_for("pg", ["healthy", "degraded"], timeout=5))
    await asyncio.sleep(0)
    health.set_state("pg", "recovering")
    assert not waiter.done()
    health.set_state("pg", "degraded")
    assert (await waiter).state == "degraded"
    with pytest.raises(TimeoutError, match="pg did not become healthy"):
        await health.wait_for("pg", "healthy", timeout=0.01)
    assert not health._waiters  # no leftovers
    with pytest.raises(ValueError, match="invalid state healty"):
        await health.wait_for("pg", "healty", timeout=1)


async def test_bus_loss_simulation_applies_policy_and_notifies() -> None:
    """set_bus_lost marks states stale, applies the policy, tells bus listeners, and undoes it."""
    health = FakeHealthClient({"pg": "healthy", "redis-main": "unavailable"}, on_bus_loss="assume_unavailable")
    statuses: list[BusStatus] = []
    health.on_bus_change(statuses.append)
    health.set_bus_lost()
    assert not health.is_available("pg")
    state = health.state("pg")
    assert state is not None
    assert state.stale
    assert health.bus.stale
    assert not health.bus.connected
    health.set_bus_lost(False)
    assert health.is_available("pg")
    assert not health.is_available("redis-main")
    assert [(s.connected, s.stale) for s in statuses] == [(False, True), (True, False)]


async def test_a_stuck_async_callback_has_a_bounded_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """An async callback that never returns keeps at most CHANGES_QUEUE_SIZE events queued, newest kept."""
    from healthbus.subscribers import _view

    monkeypatch.setattr(_view, "CHANGES_QUEUE_SIZE", 5)
    health = FakeHealthClient()
    release = asyncio.Event()
    seen: list[int] = []

    async def stuck(ev: StateChanged) -> None:
        await release.wait()
        seen.append(ev.seq)

    health.on_change(stuck)
    for n in range(20):
        health.set_state("pg", "healthy" if n % 2 else "unavailable")
    listener = health._listeners[0]
    assert listener.queue is not None
    assert listener.queue.qsize() <= 5
    release.set()
    await health.drain()
    assert seen[-5:] == [16, 17, 18, 19, 20]  # the newest events survive, in order
    await health.close()


async def test_changes_iterators_end_when_the_client_closes() -> None:
    """A consumer looping over changes() finishes on close() instead of hanging at shutdown."""
    health = FakeHealthClient()
    got: list[str] = []

    async def consume() -> None:
        async for event in changes:
            got.append(event.state)

    changes = health.changes()
    task = asyncio.create_task(consume())
    health.set_state("pg", "healthy")
    await health.close()
    await asyncio.wait_for(task, 5)
    assert got == ["healthy"]
    assert [e async for e in health.changes()] == []  # after close: ends at once
