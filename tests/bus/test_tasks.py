"""raise_if_cancelled: a loop whose awaited call swallowed the cancel still stops."""

from __future__ import annotations

import asyncio

import pytest

from healthbus.bus import raise_if_cancelled


class Rounds:
    """Counts a loop's rounds; ``reached(n)`` waits until it has done ``n`` more."""

    def __init__(self) -> None:
        self.done = 0
        self._changed = asyncio.Event()

    def tick(self) -> None:
        self.done += 1
        self._changed.set()

    async def reached(self, more: int) -> None:
        target = self.done + more
        async with asyncio.timeout(5):
            while self.done < target:
                self._changed.clear()
                await self._changed.wait()


async def loop_losing_one_cancel(rounds: Rounds, *, check: bool) -> None:
    """Awaits a call that drops the first cancel (as nats-py's wait_for does when the reply
    arrives in the same turn); a later cancel is raised as usual."""
    lost = False
    while True:
        if check:
            raise_if_cancelled()
        try:
            await asyncio.sleep(0)  # the library call
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # the library returned its result instead
        rounds.tick()


async def test_a_swallowed_cancel_is_raised_at_the_next_round() -> None:
    rounds = Rounds()
    task = asyncio.create_task(loop_losing_one_cancel(rounds, check=True))
    await rounds.reached(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()


async def test_without_the_check_the_cancelled_loop_runs_on() -> None:
    """What it guards against: the cancel is gone, the loop goes on until cancelled again."""
    rounds = Rounds()
    task = asyncio.create_task(loop_losing_one_cancel(rounds, check=False))
    await rounds.reached(3)
    task.cancel()
    await rounds.reached(10)  # ten more rounds after the cancel: it was lost
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
