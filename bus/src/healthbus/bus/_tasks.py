"""Long-running loops that stop when cancelled, even when a library swallowed the cancel.

On Python 3.11 ``asyncio.wait_for`` returns a result that arrived in the same loop turn as
a cancel of the waiting task and drops the cancel. nats-py waits for every request reply,
JetStream ack and key-value write that way, so a loop cancelled at that moment carries on
(and the ``await task`` of whoever stopped it hangs). A loop that awaits such a call
checks :func:`raise_if_cancelled` once per round: the task still counts the cancel it
was sent (``Task.cancelling()``), so the check re-raises it.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was cancelled and the cancel got lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
