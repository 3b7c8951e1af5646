"""A bounded in-memory key/value cache with TTL and LRU eviction (the Redis adapter's fallback).

Pure: no I/O, no redis import, time comes from an injected :class:`~healthbus.protocol.clock.Clock`.

Invariants:

- Never more than ``max_entries`` keys (a hash counts as one key): inserting one more
  evicts the least recently used key (counted in ``evictions``).
- Every entry expires: at its own TTL if it has one, and never later than
  ``default_ttl`` after it was written (when ``default_ttl`` is not None; EXPIRE changes
  the TTL, never this age cap). Expired entries are never returned; they are removed
  when touched or when space is needed.
- The TTL Redis would report (set by ``ttl=``/EXPIRE, None = no TTL) is kept apart from
  the age cap, so EXPIRE NX/XX/GT/LT and KEEPTTL decide as Redis would: a key written
  without a TTL has none, even though the cache will drop it after ``default_ttl``.
- Keys and hash fields are bytes (the adapter encodes them the way redis-py does);
  values are stored as given (already in the form Redis would return them).
- ``hits`` / ``misses`` count lookups (GET, HGET) that found / did not find a value.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from healthbus.protocol.clock import Clock, earliest, require_clock

_MISSING: Any = object()


class _Entry:
    __slots__ = ("cap_at", "expires_at", "ttl_at", "value")

    def __init__(self, value: Any, ttl_at: float | None, cap_at: float | None) -> None:
        self.value = value
        self.ttl_at = ttl_at  # the key's TTL as Redis would see it (None: no TTL)
        self.cap_at = cap_at  # written + default_ttl: the age cap (None: no cap)
        self.expires_at = earliest(ttl_at, cap_at)

    def set_ttl(self, ttl_at: float | None) -> None:
        self.ttl_at = ttl_at
        self.expires_at = earliest(ttl_at, self.cap_at)


class LocalCache:
    """Bounded TTL + LRU cache with the operations of the Redis adapter's degraded mode."""

    def __init__(
        self,
        max_entries: int = 10_000,
        default_ttl: float | None = 300.0,
        *,
        clock: Clock | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"invalid max_entries {max_entries!r}: expected at least 1")
        if default_ttl is not None and default_ttl <= 0:
            raise ValueError(f"invalid default_ttl {default_ttl!r}: expected seconds > 0 or None")
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._clock = require_clock(clock, "LocalCache(clock=...)")
        self._data: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    # ------------------------------------------------------------ internals

    def _live(self, key: bytes) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def _store(self, key: bytes, value: Any, ttl: float | None, *, ttl_at: Any = _MISSING) -> None:
        """Write ``key``: its TTL is ``ttl`` seconds from now (or ``ttl_at``, kept); the age cap restarts."""
        now = self._clock.monotonic()
        if ttl_at is _MISSING:
            ttl_at = None if ttl is None else now + ttl
        entry = _Entry(value, ttl_at, None if self.default_ttl is None else now + self.default_ttl)
        if key in self._data:
            self._data[key] = entry
            self._data.move_to_end(key)
            return
        if len(self._data) >= self.max_entries:
            self._purge_expired()
        while len(self._data) >= self.max_entries:
            self._data.popitem(last=False)
            self.evictions += 1
        self._data[key] = entry

    def _purge_expired(self) -> None:
        now = self._clock.monotonic()
        for key in [k for k, e in self._data.items() if e.expires_at is not None and e.expires_at <= now]:
            del self._data[key]

    # ------------------------------------------------------------ strings

    def get(self, key: bytes) -> Any:
        """The value, or None when missing, expired or a hash (a miss)."""
        entry = self._live(key)
        if entry is None or isinstance(entry.value, dict):
            self.misses += 1
            return None
        self.hits += 1
        return entry.value

    def set(
        self,
        key: bytes,
        value: Any,
        *,
        ttl: float | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> bool:
        """SET with Redis's NX / XX / KEEPTTL meaning; False when NX/XX prevented it."""
        entry = self._live(key)
        if (nx and entry is not None) or (xx and entry is None):
            return False
        if keepttl and entry is not None and ttl is None:
            self._store(key, value, None, ttl_at=entry.ttl_at)
        else:
            self._store(key, value, ttl)
        return True

    def put(self, key: bytes, value: Any, *, ttl: float | None = None) -> None:
        """Remember a value read from Redis (None: the key does not exist there, forget it).

        A read does not tell the key's TTL: a TTL this cache already knows for the key
        (from SET EX / EXPIRE here) is kept, so the value is never served past it.
        """
        if value is None:
            self._data.pop(key, None)
            return
        entry = self._live(key) if ttl is None else None
        if entry is not None and entry.ttl_at is not None:
            self._store(key, value, None, ttl_at=entry.ttl_at)
        else:
            self._store(key, value, ttl)

    def delete(self, keys: Iterable[bytes]) -> int:
        """DEL: how many of ``keys`` existed."""
        removed = 0
        for key in keys:
            if self._live(key) is not None:
                del self._data[key]
                removed += 1
        return removed

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop ``keys`` without counting anything."""
        for key in keys:
            self._data.pop(key, None)

    def exists(self, keys: Iterable[bytes]) -> int:
        """EXISTS: how many of ``keys`` exist (a key named twice counts twice, as in Redis)."""
        return sum(1 for key in keys if self._live(key) is not None)

    def expire(
        self, key: bytes, ttl: float, *, nx: bool = False, xx: bool = False, gt: bool = False, lt: bool = False
    ) -> bool:
        """EXPIRE with NX/XX/GT/LT; False when the key is missing or a condition failed.

        ``ttl`` <= 0 deletes the key (as Redis does). The conditions look at the key's TTL
        as Redis would (a key written without one has none); the entry still goes at the
        latest ``default_ttl`` after it was written.
        """
        entry = self._live(key)
        if entry is None:
            return False
        new_expiry = self._clock.monotonic() + ttl
        current = entry.ttl_at
        if nx and current is not None:
            return False
        if xx and current is None:
            return False
        if gt and (current is None or new_expiry <= current):
            return False
        if lt and current is not None and new_expiry >= current:
            return False
        if ttl <= 0:
            del self._data[key]
            return True
        entry.set_ttl(new_expiry)
        return True

    # ------------------------------------------------------------ hashes

    def hget(self, key: bytes, field: bytes) -> Any:
        """The hash field's value, or None (a miss)."""
        entry = self._live(key)
        value = entry.value.get(field, _MISSING) if entry is not None and isinstance(entry.value, dict) else _MISSING
        if value is _MISSING:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def hset(self, key: bytes, fields: Mapping[bytes, Any]) -> int:
        """HSET: set ``fields`` in the hash at ``key``; how many fields were new.

        A string value at ``key`` is replaced (Redis would answer WRONGTYPE; a cache has
        no business failing the call). Keeps the hash's expiry when it exists.
        """
        entry = self._live(key)
        if entry is None or not isinstance(entry.value, dict):
            mapping: dict[bytes, Any] = {}
            self._store(key, mapping, None)
        else:
            mapping = entry.value
        added = sum(1 for f in fields if f not in mapping)
        mapping.update(fields)
        return added

    def hput(self, key: bytes, field: bytes, value: Any) -> None:
        """Remember a hash field read from Redis (None: it does not exist there, forget it)."""
        entry = self._live(key)
        if value is None:
            if entry is not None and isinstance(entry.value, dict):
                entry.value.pop(field, None)
            return
        self.hset(key, {field: value})

    def clear(self) -> None:
        """Drop everything (metrics are kept)."""
        self._data.clear()
