"""Leader lease: one active coordinator per prefix, standbys take over when it dies.

The lease is one key in a JetStream key-value bucket whose entries expire after ``ttl``
(the bucket's max age). The holder writes its id there and renews it every ``ttl / 4``
with a compare-and-set on the revision it last wrote. Invariants:

* Only the holder of the key decides and publishes. A standby takes the key only once
  it is gone (expired after the holder stopped renewing, or released on a clean stop),
  so a new leader starts — and restores from the state stream — after the old one has
  stopped, and continues every ``seq``.
* A holder publishes only while its lease is *locally valid*: until ``0.6 × ttl`` after
  the start of its last successful renewal, by the monotonic clock. A holder that was
  paused or cut off past that point stops publishing before the key can expire for the
  others, so two coordinators never publish at once.
* An unreachable NATS is not a lost lease: the holder keeps deciding, holds its events,
  and renews when NATS is back. The lease is lost when the key holds someone else's id,
  or when it expired and another coordinator wrote it before this one took it back (the
  bucket's revisions are its stream sequence, so a write in between shows as a gap):
  that one may have published, so this one's state is stale. It then steps down and
  drops what it had not published (the new leader decides from fresh results).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from typing import Any, Final

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)

from healthbus.bus import DirectGetError, StoredMessage, last_per_subject
from healthbus.protocol.clock import Clock, SystemClock

log = logging.getLogger("healthbus.coordinator")

LEASE_KEY: Final = "leader"
#: Share of the ttl after a renewal during which the holder may publish.
VALID_SHARE: Final = 0.6


def default_holder_id() -> str:
    """``<host>-<pid>``: unique enough among the coordinators of one deployment."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lease_key(partition: int, partitions: int) -> str:
    """The lease key of one partition: ``leader`` with one partition (as before
    partitions), ``leader.<p>`` with several (``[coordinator] partitions``)."""
    return LEASE_KEY if partitions <= 1 else f"{LEASE_KEY}.{partition}"


#: The ``KV-Operation`` header values of a key's delete and purge markers: not held.
_REMOVED: Final = frozenset({"DEL", "PURGE"})


def held_leases(messages: Iterable[StoredMessage], bucket: str) -> dict[str, tuple[str, int]]:
    """The lease keys held in ``messages`` (the last message of each key of ``bucket``):
    key → (holder id, revision). A key whose last message is a delete or purge marker
    (``KV-Operation: DEL`` / ``PURGE``: a released lease) or has no value is not held."""
    prefix = f"$KV.{bucket}."
    out: dict[str, tuple[str, int]] = {}
    for message in messages:
        if not message.subject.startswith(prefix):
            continue
        if message.headers.get("KV-Operation", "").upper() in _REMOVED or not message.data:
            continue
        out[message.subject.removeprefix(prefix)] = (message.data.decode(errors="replace"), message.stream_seq)
    return out


async def leaders(nc: Client, bucket: str, *, timeout: float = 5.0) -> dict[str, tuple[str, int]]:
    """Every lease key held now in ``bucket``: key → (holder id, revision). Empty when the
    bucket does not exist or holds no key (nobody leads, or no election).

    One batched direct get (``multi_last`` over ``$KV.<bucket>.leader`` and
    ``$KV.<bucket>.leader.*``): no consumer, and all a reader needs is publishing to
    ``$JS.API.DIRECT.GET.KV_<bucket>`` (deploy/'s viewer and operator may). A bucket made
    by an older coordinator answers no direct get until a coordinator of this version has
    started (:meth:`Lease.setup` turns ``allow_direct`` on): until then it reads as empty,
    like a missing bucket — a reader cannot tell the two apart without the stream-info API,
    which the viewer and operator roles may not use (docs/operations.md, "Partitions").
    Raises :class:`~healthbus.bus.DirectGetError` on other failures."""
    prefix = f"$KV.{bucket}.{LEASE_KEY}"
    try:
        found = await last_per_subject(nc, f"KV_{bucket}", [prefix, f"{prefix}.*"], timeout=timeout)
    except DirectGetError as exc:
        if exc.kind != "no_responders":
            raise
        return {}  # no bucket (no election), or one without direct gets (not upgraded yet)
    return held_leases(found, bucket)


def bucket_for(stream_name: str) -> str:
    """The lease bucket of a state stream (``HEALTHBUS_STATE`` → ``HEALTHBUS_STATE_LEADER``)."""
    return f"{stream_name}_LEADER"


class Lease:
    """The leader key of one state stream, as seen by one coordinator."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        *,
        holder: str | None = None,
        ttl: float = 5.0,
        replicas: int = 1,
        clock: Clock | None = None,
        key: str = LEASE_KEY,
    ) -> None:
        self.js = js
        self.bucket = bucket
        self.key = key
        """The key in the bucket: ``leader``, or ``leader.<p>`` for partition ``p``."""
        self.holder = holder or default_holder_id()
        self.ttl = ttl
        self.replicas = replicas
        self._clock = clock or SystemClock()
        self._kv: Any = None
        self._revision = 0
        self.term = 0
        """The revision at which this holder took the key (0 until then): its term as
        leader. Renewals keep it; taking the key anew (after it expired or was taken)
        gives a new, higher one — the bucket's revisions are its stream sequence."""
        self._valid_until = 0.0
        self.interrupted = False
        """The last :meth:`acquire` took the key back after another coordinator had written it."""

    @property
    def held(self) -> bool:
        """True once acquired, until lost or released (validity aside)."""
        return self._revision > 0

    def valid(self) -> bool:
        """Held, and renewed recently enough that nobody else can have it yet."""
        return self._revision > 0 and self._clock.monotonic() < self._valid_until

    async def setup(self) -> None:
        """Open (or create) the lease bucket, with direct gets allowed (:func:`leaders`
        reads it so); a bucket made before that gets ``allow_direct`` turned on."""
        try:
            self._kv = await self.js.key_value(self.bucket)
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=self.bucket,
                ttl=self.ttl,
                history=1,
                storage=StorageType.FILE,
                replicas=self.replicas,
                direct=True,
            )
            self._kv = await self.js.create_key_value(config)
            return
        info = await self.js.stream_info(f"KV_{self.bucket}")
        if not info.config.allow_direct:
            log.warning("lease bucket %s: turning on allow_direct (status and the dashboard read it)", self.bucket)
            info.config.allow_direct = True
            await self.js.update_stream(info.config)
            self._kv = await self.js.key_value(self.bucket)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or we still do); False if someone else does."""
        started = self._clock.monotonic()
        value = self.holder.encode()
        self.interrupted = False
        previous = self._revision
        try:
            self._revision = self.term = await self._kv.create(self.key, value)
            # Created anew after our own write at ``previous``: any other revision in
            # between was another coordinator's.
            self.interrupted = previous > 0 and self._revision != previous + 1
        except KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(self.key)
            except (KeyNotFoundError, KeyDeletedError):
                return False  # expired in between: try again next round
            if entry.value != value:
                return False
            self._revision = await self._kv.update(self.key, value, last=entry.revision)
            if not previous:  # ours from an earlier run of this holder id: a new term all the same
                self.term = self._revision
        self._valid_until = started + VALID_SHARE * self.ttl
        return True

    async def renew(self) -> bool | None:
        """Renew: True renewed, False lost to someone else, None NATS unreachable (try later).

        False also when the key expired and another coordinator held it before this one
        took it back: this one still holds the key then, but must restore before deciding.
        """
        started = self._clock.monotonic()
        try:
            self._revision = await self._kv.update(self.key, self.holder.encode(), last=self._revision)
        except KeyWrongLastSequenceError:
            # Gone (expired while we could not renew) or taken: take it back if still free.
            try:
                if await self.acquire():
                    if self.interrupted:
                        # Someone led while we could not renew: hold everything until
                        # the caller has stepped down and restored (we keep the key).
                        self._valid_until = 0.0
                        return False
                    return True
            except Exception:
                return None
            self._revision = 0
            return False
        except Exception:  # timeouts, disconnected: the lease is not lost, just not renewed
            return None
        self._valid_until = started + VALID_SHARE * self.ttl
        return True

    async def release(self) -> None:
        """Give the lease up (clean stop) so a standby takes over at once."""
        if self._revision and self._kv is not None:
            try:
                await self._kv.delete(self.key, last=self._revision)
            except Exception as exc:  # it will expire by itself
                log.info("could not release the leader lease (%s); it expires in %gs", exc, self.ttl)
        self._revision = 0
        self._valid_until = 0.0

    async def current_holder(self) -> str | None:
        """Who holds the lease now, if anyone."""
        try:
            entry = await self._kv.get(self.key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return bytes(entry.value).decode(errors="replace") if entry.value else None
