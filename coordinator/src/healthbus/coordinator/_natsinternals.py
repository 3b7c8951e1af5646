"""The one place that reaches into nats-py internals: batching a subscription's queue.

nats-py delivers each message of a callback subscription by awaiting the callback from a
per-subscription task that reads a private ``asyncio.Queue`` (``Subscription._pending_queue``)
and keeps a byte count (``_pending_size``) for its slow-consumer limit. The coordinator's
probe callback takes whatever else is already queued without a task switch per message,
doing exactly what that task would do (size accounting and ``task_done`` included).

These attributes are not public API, so :meth:`QueueBatcher.attach` uses them only with a
nats-py release this was written and tested against (:data:`TESTED_NATS_PY`) and only if
they have the expected types; otherwise it returns None and the caller handles one
message per callback, which is correct, only slower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from nats.aio.client import __version__ as _nats_py_version

log = logging.getLogger("healthbus.coordinator")

#: The installed nats-py release.
NATS_PY_VERSION: Final = str(_nats_py_version)

#: nats-py ``major.minor`` releases whose subscription internals this module matches
#: (from 2.14, the oldest release the coordinator accepts,
#: to 2.16, the locked one; a test checks the installed one is listed).
TESTED_NATS_PY: Final = frozenset(f"2.{minor}" for minor in range(14, 17))


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


class QueueBatcher:
    """Takes the messages already queued on one nats-py subscription, synchronously."""

    def __init__(self, sub: Any, queue: asyncio.Queue[Any]) -> None:
        self._sub = sub
        self._queue = queue

    @classmethod
    def attach(cls, sub: Any, *, version: str | None = None) -> QueueBatcher | None:
        """A batcher for ``sub``, or None when this nats-py's internals are not the known ones."""
        version = NATS_PY_VERSION if version is None else version
        if _minor(version) not in TESTED_NATS_PY:
            log.info("nats-py %s is not one this coordinator was tested with: results are handled one by one", version)
            return None
        queue = getattr(sub, "_pending_queue", None)
        if not isinstance(queue, asyncio.Queue) or not isinstance(getattr(sub, "_pending_size", None), int):
            return None
        return cls(sub, queue)

    def take(self, limit: int, handle: Callable[[str, bytes], None]) -> None:
        """Hand up to ``limit`` queued messages to ``handle(subject, data)``, stopping when empty."""
        queue = self._queue
        sub = self._sub
        for _ in range(limit):
            try:
                msg = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                sub._pending_size -= len(msg.data)
                handle(msg.subject, msg.data)
            finally:
                queue.task_done()
