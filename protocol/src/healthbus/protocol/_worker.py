"""Probe-worker membership on ``<prefix>.worker.heartbeat.<worker-token>`` (core NATS).

Every probe worker publishes a :class:`WorkerHeartbeat` every ``heartbeat`` seconds
(config ``[probes] heartbeat``) and one with ``stopping=True`` when it shuts down. A
worker is live while heard within ``3 × heartbeat``. With sharding, workers hash targets
over the live members (rendezvous hashing), so membership alone decides who checks what.
``<worker-token>`` is the worker id with every character outside ``A-Za-z0-9_-``
replaced by ``_`` (a single NATS token); the message carries the real id.

After ``healthbus reload`` the active coordinator publishes a :class:`ReloadNotice`
on ``<prefix>.worker.reload``: every probe worker and standby coordinator re-reads its
configuration file (the sender ignores its own notice).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from healthbus.protocol._messages import (
    PROTOCOL_VERSION,
    ProbeId,
    Timestamp,
    Version,
    decode_with,
)
from healthbus.protocol._subjects import probe_token


def worker_token(worker_id: str) -> str:
    """The subject token of a worker id (``A-Za-z0-9_-`` only): :func:`probe_token`, the
    same token its ProbeResults are published under."""
    return probe_token(worker_id)


class WorkerHeartbeat(msgspec.Struct, kw_only=True, frozen=True):
    """A probe worker announcing itself (``<prefix>.worker.heartbeat.<token>``)."""

    worker: ProbeId
    at: Timestamp
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0)]
    """The sender's heartbeat period: it is live while heard within 3 of these."""
    sharding: bool = False
    targets: Annotated[int, msgspec.Meta(ge=0)] = 0
    """How many targets the sender checks now."""
    stopping: bool = False
    """True on the last heartbeat of a worker shutting down: drop it at once."""
    v: Version = PROTOCOL_VERSION


class ReloadNotice(msgspec.Struct, kw_only=True, frozen=True):
    """Re-read your configuration file (``<prefix>.worker.reload``, after ``healthbus reload``)."""

    sender: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    """Who reloaded and sends this (a coordinator's holder id): it ignores its own notice."""
    v: Version = PROTOCOL_VERSION


_heartbeat_decoder = msgspec.json.Decoder(WorkerHeartbeat)
_reload_decoder = msgspec.json.Decoder(ReloadNotice)


def decode_reload_notice(data: bytes | memoryview) -> ReloadNotice:
    """Decode and validate a ReloadNotice; ProtocolError says what is wrong."""
    return decode_with(_reload_decoder, data, "ReloadNotice")


def decode_worker_heartbeat(data: bytes | memoryview) -> WorkerHeartbeat:
    """Decode and validate a WorkerHeartbeat; ProtocolError says what is wrong."""
    return decode_with(_heartbeat_decoder, data, "WorkerHeartbeat")
