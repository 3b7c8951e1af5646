"""The one drop-the-oldest rule of the client's bounded queues (asyncio and thread queues)."""

from __future__ import annotations

import asyncio
import queue

import pytest

from healthbus.subscribers._queues import put_dropping_oldest


def _drain(pending: asyncio.Queue[int] | queue.Queue[int]) -> list[int]:
    items = []
    while not pending.empty():
        items.append(pending.get_nowait())
    return items


@pytest.mark.parametrize("kind", ["asyncio", "thread"])
async def test_full_queue_drops_the_oldest_and_keeps_the_newest(kind: str) -> None:
    """Room: nothing dropped. Full: the oldest gives way, the order of the rest is kept, and
    the dropped item is marked done (``join()`` does not wait for it)."""
    pending: asyncio.Queue[int] | queue.Queue[int] = asyncio.Queue(3) if kind == "asyncio" else queue.Queue(3)
    assert [put_dropping_oldest(pending, i) for i in (1, 2, 3)] == [[], [], []]
    assert put_dropping_oldest(pending, 4) == [1]
    assert put_dropping_oldest(pending, 5) == [2]
    assert _drain(pending) == [3, 4, 5]
    for _ in range(3):
        pending.task_done()
    # join() returns: every item put was either handled or dropped (and marked done).
    if isinstance(pending, queue.Queue):
        await asyncio.wait_for(asyncio.to_thread(pending.join), 10)
    else:
        await asyncio.wait_for(pending.join(), 10)
