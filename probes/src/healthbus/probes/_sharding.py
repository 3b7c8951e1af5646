"""Sharing targets among probe workers: rendezvous hashing over live members. Pure.

Rules:

* Every worker scores every (target, worker) pair with a stable hash (BLAKE2b, never
  Python's per-process ``hash()``); a target is checked by the ``replicas`` workers with
  the highest scores among the live members (all of them when fewer are live).
* So when a worker joins, only the targets it now wins move to it; when one dies, only
  its targets move, each to the next-highest scorer. No other target changes hands.
* A member is live while heard within ``3 × heartbeat`` (``ttl``); a worker always counts
  itself live. A member announcing ``stopping`` is dropped at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

#: Heartbeats that may be missed before a member is considered dead.
MISSED_HEARTBEATS: Final = 3


def score(target: str, worker: str) -> int:
    """The rendezvous score of ``worker`` for ``target`` (64 bits, stable everywhere)."""
    digest = hashlib.blake2b(f"{target}\x00{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owners(target: str, members: Iterable[str], replicas: int) -> list[str]:
    """The ``replicas`` members that check ``target``, best score first."""
    ranked = sorted(set(members), key=lambda w: (score(target, w), w), reverse=True)
    return ranked[: max(replicas, 1)]


def assigned(targets: Iterable[str], members: Iterable[str], replicas: int, me: str) -> set[str]:
    """The targets ``me`` checks, with ``members`` live (``me`` included whatever is passed)."""
    live = {*members, me}
    return {t for t in targets if me in owners(t, live, replicas)}


class Membership:
    """Who is live, from heartbeats, with time passed in."""

    def __init__(self, me: str, *, heartbeat: float) -> None:
        self.me = me
        self.ttl = MISSED_HEARTBEATS * heartbeat
        self._last_heard: dict[str, float] = {}

    def heard(self, worker: str, now: float, *, stopping: bool = False) -> bool:
        """Record a heartbeat; True when the live set changed."""
        if worker == self.me:
            return False
        if stopping:
            return self._last_heard.pop(worker, None) is not None
        was_live = worker in self._last_heard
        self._last_heard[worker] = now
        return not was_live

    def expire(self, now: float) -> bool:
        """Drop members not heard within ``ttl``; True when any was dropped."""
        dead = [w for w, at in self._last_heard.items() if now - at > self.ttl]
        for w in dead:
            del self._last_heard[w]
        return bool(dead)

    def live(self) -> list[str]:
        """Live members, this worker included, sorted."""
        return sorted({*self._last_heard, self.me})
