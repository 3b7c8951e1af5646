"""The re-admission ramp: each instance's place in it, computed alike by every client.

When a breaker closes, the coordinator announces a :class:`~healthbus.protocol.Ramp` in
the StateChanged. No per-instance message exists: each instance computes, once per ramp,

- its **place** in ``[0, 1)``: the first 8 bytes of BLAKE2b (digest size 8) of the UTF-8
  text ``"<target>\\n<instance>"``, read as a big-endian unsigned integer and divided by
  2**64 (:func:`ramp_place`). Stable for a given instance id and target, spread evenly
  over a fleet, and different per target (the same instances are not always first);
- its **wait**: how long after the ramp started the admitted share reaches its place.
  The share grows linearly, ``from + (1 - from) × elapsed / duration``, so the wait is
  ``0`` for a place below ``from`` and ``(place - from) / (1 - from) × duration``
  otherwise (:func:`ramp_wait`).

The share only grows, so an instance admitted once stays admitted for the rest of the
ramp (it never flips back and forth); how the wait is turned into a moment on the
instance's own clock is the subscriber's business (docs/contract.md).
"""

from __future__ import annotations

import hashlib

from healthbus.protocol._messages import Ramp


def ramp_place(instance: str, target: str) -> float:
    """The instance's place in ``target``'s ramps: a stable number in ``[0, 1)``."""
    digest = hashlib.blake2b(f"{target}\n{instance}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def ramp_share(ramp: Ramp, elapsed: float) -> float:
    """The share of the fleet admitted ``elapsed`` seconds into ``ramp`` (0 to 1, never less than ``from``)."""
    if elapsed >= ramp.duration_s:
        return 1.0
    progress = max(0.0, elapsed) / ramp.duration_s
    return min(1.0, ramp.from_share + (1.0 - ramp.from_share) * progress)


def ramp_wait(ramp: Ramp, place: float) -> float:
    """Seconds after the ramp's start at which an instance at ``place`` is admitted."""
    if place < ramp.from_share:
        return 0.0
    # from_share < 1 here (place < 1); clamped against float rounding at the top end.
    return min(ramp.duration_s, (place - ramp.from_share) / (1.0 - ramp.from_share) * ramp.duration_s)
