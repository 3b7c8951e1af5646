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
    """Who is live, from heartbeats, with time passed in.

    A member's lifetime is three of *its own* heartbeat periods when its heartbeat says
    what they are, else three of ours.
    """

    def __init__(self, me: str, *, heartbeat: float) -> None:
        self.me = me
        self.ttl = MISSED_HEARTBEATS * heartbeat
        self._expires: dict[str, float] = {}

    def heard(self, worker: str, now: float, *, stopping: bool = False, heartbeat: float | None = None) -> bool:
        """Record a heartbeat; True when the live set changed."""
        if worker == self.me:
            return False
        if stopping:
            return self._expires.pop(worker, None) is not None
        was_live = worker in self._expires
        ttl = MISSED_HEARTBEATS * heartbeat if heartbeat and heartbeat > 0 else self.ttl
        self._expires[worker] = now + ttl
        return not was_live

    def expire(self, now: float) -> bool:
        """Drop members not heard within their lifetime; True when any was dropped."""
        dead = [w for w, until in self._expires.items() if now > until]
        for w in dead:
            del self._expires[w]
        return bool(dead)

    def live(self) -> list[str]:
        """Live members, this worker included, sorted."""
        return sorted({*self._expires, self.me})
