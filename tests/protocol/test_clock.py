"""The shared clock: the system clock, the manual clock tests drive, and the helpers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from healthbus.protocol.clock import Clock, Nap, SystemClock, earliest, require_clock, sleep_until_set
from healthbus.protocol.testing import ManualClock


def test_both_clocks_are_clocks() -> None:
    """The system and the manual clock satisfy the one protocol."""
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(), Clock)


async def test_manual_time_moves_only_when_told_and_wall_follows() -> None:
    """monotonic and now move together, by advance or skip, never by themselves or backwards."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ManualClock(start=start, monotonic=50.0)
    assert (clock.monotonic(), clock.now()) == (50.0, start)
    await asyncio.sleep(0.01)
    assert clock.monotonic() == 50.0
    await clock.advance(2.5)
    clock.skip(0.5)
    assert (clock.monotonic(), clock.now()) == (53.0, start + timedelta(seconds=3))
    with pytest.raises(ValueError, match="back"):
        await clock.advance(-1)
    with pytest.raises(ValueError, match="back"):
        clock.skip(-1)


async def test_advance_wakes_sleepers_in_deadline_order_and_rearming_timers_fire_again() -> None:
    """A timer that sleeps again when woken fires once per period within one advance."""
    clock = ManualClock(monotonic=0.0)
    fired: list[tuple[str, float]] = []

    async def every(name: str, period: float) -> None:
        while True:
            await clock.sleep(period)
            fired.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(every("a", 1.0)), asyncio.create_task(every("b", 1.5))]
    await clock.wait_sleepers(2)
    await clock.advance(3.0)
    # at 3.0 both are due: the one that went to sleep first wakes first
    assert fired == [("a", 1.0), ("b", 1.5), ("a", 2.0), ("b", 3.0), ("a", 3.0)]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_skip_wakes_nobody_until_the_next_advance() -> None:
    """Time that passed while the process was frozen: due sleepers wake only when the clock is advanced."""
    clock = ManualClock(monotonic=0.0)
    woke = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep(1.0)
        woke.set()

    task = asyncio.create_task(sleeper())
    await clock.wait_sleepers(1)
    clock.skip(5.0)
    await asyncio.sleep(0)
    assert not woke.is_set()
    await clock.advance(0)
    assert woke.is_set()
    await task


async def test_sleep_until_set_returns_on_the_event_or_on_the_clock() -> None:
    """The wait of a schedule loop: the event ends it early, the clock ends it otherwise."""
    clock = ManualClock(monotonic=0.0)
    event = asyncio.Event()
    early = asyncio.create_task(sleep_until_set(clock, event, 10.0))
    await clock.wait_sleepers(1)
    event.set()
    assert await early is True
    assert clock.sleepers == 0  # the clock sleep was cancelled, not left behind
    event.clear()
    late = asyncio.create_task(sleep_until_set(clock, event, 10.0))
    await clock.wait_sleepers(1)
    await clock.advance(10.0)
    assert await late is False


async def test_a_nap_s_moment_moves_while_it_waits_on_a_manual_clock() -> None:
    """Put off, a nap does not end at its first moment; brought forward, it ends at the new one;
    with no nap under way there is nothing to move."""
    clock = ManualClock(monotonic=0.0)
    event = asyncio.Event()
    nap = Nap(clock, event)
    assert nap.move_to(5.0) is False
    task = asyncio.create_task(nap.until(1.0))
    await clock.wait_sleepers(1)
    assert nap.move_to(3.0) is True
    await clock.wait_sleepers(1)
    await clock.advance(2.0)
    assert not task.done()
    assert nap.move_to(2.5) is True  # earlier than its last moment, still ahead of the clock
    await clock.wait_sleepers(1)
    await clock.advance(0.5)
    assert await task is False
    assert nap.deadline == 2.5
    assert clock.sleepers == 0
    task = asyncio.create_task(nap.until(10.0))
    await clock.wait_sleepers(1)
    event.set()
    assert await task is True


async def test_a_nap_s_moment_moves_while_it_waits_on_the_system_clock() -> None:
    clock = SystemClock()
    event = asyncio.Event()
    nap = Nap(clock, event)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(nap.until(clock.monotonic() + 5.0))
    await asyncio.sleep(0)  # waiting, on a timeout 5 s ahead
    assert nap.move_to(clock.monotonic() + 60.0) is True
    assert nap._timeout is not None
    ends = nap._timeout.when()
    assert ends is not None
    assert ends > loop.time() + 50  # put off: its one timer now ends it 60 s ahead
    assert nap.deadline > clock.monotonic() + 50
    assert not task.done()
    assert nap.move_to(clock.monotonic()) is True
    assert await asyncio.wait_for(task, 10) is False  # brought forward: over now
    assert nap.move_to(clock.monotonic() + 1) is False
    task = asyncio.create_task(nap.until(clock.monotonic() + 60.0))
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.wait_for(task, 10) is True


def test_earliest_of_optional_moments() -> None:
    """None means never: the other moment wins; two moments give the smaller."""
    assert earliest(None, None) is None
    assert earliest(3.0, None) == 3.0
    assert earliest(None, 2.0) == 2.0
    assert earliest(3.0, 2.0) == 2.0


def test_require_clock_refuses_a_bare_function_with_the_way_out() -> None:
    """A Clock passes, None is the system clock, a bare function is a TypeError naming the fix."""
    manual = ManualClock()
    assert require_clock(manual, "X(clock=...)") is manual
    assert isinstance(require_clock(None, "X(clock=...)"), SystemClock)
    with pytest.raises(TypeError, match=r"X\(clock=\.\.\.\) expects .*Clock.*bare function.*ManualClock"):
        require_clock(time.monotonic, "X(clock=...)")
    with pytest.raises(TypeError, match=r"got float$"):
        require_clock(12.5, "X(clock=...)")
