"""Publishing the StateDigest (``<prefix>.digest``, docs/contract.md §6c).

The active coordinator (and the ``fleet`` bench, which plays it) runs one
:class:`DigestPublisher`: a StateDigest every ``interval`` seconds while connected, and
one at once when the connection comes back (nats-py's reconnect count moved), then every
``BURST_INTERVAL`` for ``BURST_FOR`` seconds, so the subscribers reconnecting with it
learn within moments whether they missed anything (each takes one digest and unsubscribes:
the burst costs the server a subject match per digest, and a message per subscriber that
was waiting anyway).

Nobody listens on the subject while the fleet follows live (a subscriber subscribes only
while it catches up), so a digest nobody waits for costs the server one subject match.
With ``events``, a digest also carries the last StateChanged of the targets that changed
most recently (stored ones only), so a subscriber that missed just those reads nothing.
A digest larger than ``MAX_MESSAGE_BYTES`` (tens of thousands of targets) is sent as
several parts (``split_digest``: the same ``at``, ``part`` 1..``parts``), published back to
back; subscribers merge them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from nats.aio.client import Client

from healthbus.protocol import MAX_MESSAGE_BYTES, StateChanged, Subjects, encode, split_digest
from healthbus.protocol.clock import Clock, SystemClock

log = logging.getLogger("healthbus.bus")

#: How often the publisher checks the connection for a reconnect (seconds).
RECONNECT_POLL: Final = 0.1
#: After its connection comes back, the publisher sends a digest this often (seconds)...
BURST_INTERVAL: Final = 0.1
#: ...for this long (seconds): as long as a subscriber waits for one before reloading.
BURST_FOR: Final = 5.0


class DigestPublisher:
    """Sends ``seqs()`` as a StateDigest every ``interval`` and right after each reconnect.

    ``seqs`` returns every configured target's highest sent ``seq``; it is called for
    each digest. ``events`` (optional) returns the last StateChanged of the targets that
    changed most recently, oldest first, each already stored in the stream (acked): the
    newest of them go into the digest (``split_digest``). ``await run()`` until
    cancelled; :meth:`publish` sends one now.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        seqs: Callable[[], Mapping[str, int]],
        *,
        interval: float,
        clock: Clock | None = None,
        events: Callable[[], Sequence[StateChanged]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"invalid digest interval {interval!r}: expected seconds > 0")
        self.nc = nc
        self.subject = subjects.digest
        self.seqs = seqs
        self.events = events
        self.interval = float(interval)
        self.clock: Clock = clock or SystemClock()
        self.sent = 0
        """Digests published so far (a split one counts once)."""
        self.parts = 0
        """Messages the last digest published took (1 unless it was split)."""

    async def publish(self) -> bool:
        """Publish one digest now (all its parts); False when it was not sent (the connection refused it)."""
        events = self.events() if self.events is not None else ()
        parts = split_digest(self.clock.now(), self.seqs(), limit=MAX_MESSAGE_BYTES, events=events)
        try:
            for part in parts:
                await self.nc.publish(self.subject, encode(part))
        except Exception as exc:  # closed, or the reconnect buffer is full: the next one will do
            log.debug("state digest not published: %s", type(exc).__name__)
            return False
        self.sent += 1
        self.parts = len(parts)
        return True

    async def run(self) -> None:
        """Publish every ``interval``, and after a reconnect at once and then every
        ``BURST_INTERVAL`` for ``BURST_FOR`` seconds, until cancelled."""
        reconnects = self.nc.stats["reconnects"]
        due = self.clock.monotonic()
        burst_until = 0.0
        while True:
            now = self.clock.monotonic()
            if self.nc.is_connected:
                if self.nc.stats["reconnects"] != reconnects:
                    reconnects = self.nc.stats["reconnects"]
                    due = now  # the bus came back: tell the fleet reconnecting with us now
                    burst_until = now + BURST_FOR  # and keep telling those that come back later
                if now >= due:
                    await self.publish()
                    step = min(self.interval, BURST_INTERVAL) if now < burst_until else self.interval
                    due = now + step
            await self.clock.sleep(max(0.0, min(RECONNECT_POLL, due - now)) or RECONNECT_POLL)
