"""The one rule every bounded event queue of the client keeps: when full, drop the oldest.

A consumer that falls behind (a stuck callback, a ``changes()`` loop that stopped reading)
must not make the client grow without bound, and the newest event is the one that tells
the current state: so the oldest queued item gives way. Works for :class:`asyncio.Queue`
(event-loop consumers) and :class:`queue.Queue` (the sync client's threads).
"""

from __future__ import annotations

import asyncio
import queue
from typing import Final, TypeVar

__all__ = ["put_dropping_oldest"]

T = TypeVar("T")

_FULL: Final = (asyncio.QueueFull, queue.Full)
_EMPTY: Final = (asyncio.QueueEmpty, queue.Empty)


def put_dropping_oldest(pending: asyncio.Queue[T] | queue.Queue[T], item: T) -> list[T]:
    """Put ``item``; when ``pending`` is full, first take out the oldest item (marked done).

    Returns what was dropped: nothing, the oldest item, or — when another thread filled
    the queue again in between — ``item`` too.
    """
    try:
        pending.put_nowait(item)
        return []
    except _FULL:
        pass
    dropped: list[T] = []
    try:
        dropped.append(pending.get_nowait())
        pending.task_done()
    except _EMPTY:
        pass
    try:
        pending.put_nowait(item)
    except _FULL:
        dropped.append(item)
    return dropped
