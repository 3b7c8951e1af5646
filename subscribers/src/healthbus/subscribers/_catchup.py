"""Catching up after a reconnect: what to read, and the counts of what it cost.

Pure: no I/O, no clock. A subscriber that reconnects compares the seqs it knows with the
coordinator's StateDigest (``<prefix>.digest``, docs/contract.md §6c) and reads from the
state stream only the targets that changed meanwhile, instead of every current state.

Why that misses nothing: the digest is received on a subscription made after the
subscription to ``<prefix>.state.*`` was back in place (same connection, in order), so it
was sent after every later event reaches the subscriber live. It names, per configured
target, the highest seq the coordinator had sent by then; a target whose known seq is
lower missed something and is read again. A read may find less than the digest names (the
event is on its way, or a replica is behind): then the subscriber waits for the next
digest and reads again, still listening live.

A digest may carry the last events of the targets that changed most recently (each stored
in the stream): those a subscriber lacks it applies from the digest, so a subscriber that
missed only recent changes sends no request at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class ResyncStats:
    """What catching up with the state stream cost one subscriber so far (``HealthClient.resync``)."""

    requests: int = 0
    """Requests sent to the state stream to read current states: loads (one per page of
    ``batch`` targets), single-target reads after a digest, gap repairs."""
    timeouts: int = 0
    """Of those, the ones nothing answered within the timeout."""
    digests: int = 0
    """StateDigests received while catching up."""
    skipped: int = 0
    """Catch-ups after a reconnect that needed no read at all (the digest said nothing changed)."""
    reloads: int = 0
    """Catch-ups that read every current state (no digest came, or messages were lost locally)."""
    applied: int = 0
    """Events taken from a digest's ``events`` instead of read from the state stream."""


def behind(known: Mapping[str, int], digest: Mapping[str, int], *, absent: bool = True) -> list[str]:
    """The targets to read again, in name order.

    A target is behind when the digest names a higher seq than ``known`` (or one not known
    at all); with ``absent``, also a known target the digest does not name (it was
    retired meanwhile: its last message says so).
    """
    out = {target for target, seq in digest.items() if known.get(target, 0) < seq}
    if absent:
        out.update(target for target in known if target not in digest)
    return sorted(out)


def pages(messages: int, batch: int) -> int:
    """Requests a batched load of ``messages`` last messages took (the last page says nothing is pending)."""
    return max(1, -(-messages // batch))
