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
import time
from collections.abc import Callable
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

log = logging.getLogger("healthbus.coordinator")

LEASE_KEY: Final = "leader"
#: Share of the ttl after a renewal during which the holder may publish.
VALID_SHARE: Final = 0.6


def default_holder_id() -> str:
    """``<host>-<pid>``: unique enough among the coordinators of one deployment."""
    return f"{socket.gethostname()}-{os.getpid()}"


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.js = js
        self.bucket = bucket
        self.holder = holder or default_holder_id()
        self.ttl = ttl
        self.replicas = replicas
        self._monotonic = monotonic
        self._kv: Any = None
        self._revision = 0
        self._valid_until = 0.0
        self.interrupted = False
        """The last :meth:`acquire` took the key back after another coordinator had written it."""

    @property
    def held(self) -> bool:
        """True once acquired, until lost or released (validity aside)."""
        return self._revision > 0

    def valid(self) -> bool:
        """Held, and renewed recently enough that nobody else can have it yet."""
        return self._revision > 0 and self._monotonic() < self._valid_until

    async def setup(self) -> None:
        """Open (or create) the lease bucket."""
        try:
            self._kv = await self.js.key_value(self.bucket)
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=self.bucket, ttl=self.ttl, history=1, storage=StorageType.FILE, replicas=self.replicas
            )
            self._kv = await self.js.create_key_value(config)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or we still do); False if someone else does."""
        started = self._monotonic()
        value = self.holder.encode()
        self.interrupted = False
        previous = self._revision
        try:
            self._revision = await self._kv.create(LEASE_KEY, value)
            # Created anew after our own write at ``previous``: any other revision in
            # between was another coordinator's.
            self.interrupted = previous > 0 and self._revision != previous + 1
        except KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(LEASE_KEY)
            except (KeyNotFoundError, KeyDeletedError):
                return False  # expired in between: try again next round
            if entry.value != value:
                return False
            self._revision = await self._kv.update(LEASE_KEY, value, last=entry.revision)
        self._valid_until = started + VALID_SHARE * self.ttl
        return True

    async def renew(self) -> bool | None:
        """Renew: True renewed, False lost to someone else, None NATS unreachable (try later).

        False also when the key expired and another coordinator held it before this one
        took it back: this one still holds the key then, but must restore before deciding.
        """
        started = self._monotonic()
        try:
            self._revision = await self._kv.update(LEASE_KEY, self.holder.encode(), last=self._revision)
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
                await self._kv.delete(LEASE_KEY, last=self._revision)
            except Exception as exc:  # it will expire by itself
                log.info("could not release the leader lease (%s); it expires in %gs", exc, self.ttl)
        self._revision = 0
        self._valid_until = 0.0

    async def current_holder(self) -> str | None:
        """Who holds the lease now, if anyone."""
        try:
            entry = await self._kv.get(LEASE_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return bytes(entry.value).decode(errors="replace") if entry.value else None
