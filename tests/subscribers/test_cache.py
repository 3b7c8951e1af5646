"""LocalCache: TTL with an injected clock, LRU bound, Redis-like options."""

from __future__ import annotations

import pytest

from healthbus.protocol.testing import ManualClock
from healthbus.subscribers._cache import LocalCache


def test_get_set_hits_and_misses() -> None:
    """A stored value is a hit; a missing key is a miss returning None."""
    cache = LocalCache(clock=ManualClock())
    assert cache.set(b"k", b"v")
    assert cache.get(b"k") == b"v"
    assert cache.get(b"nope") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_ttl_and_default_ttl_cap() -> None:
    """An entry expires at its TTL, and never later than default_ttl."""
    clock = ManualClock()
    cache = LocalCache(default_ttl=100, clock=clock)
    cache.set(b"short", b"1", ttl=5)
    cache.set(b"long", b"2", ttl=1000)
    cache.set(b"none", b"3")
    clock.skip(5)
    assert cache.get(b"short") is None
    assert cache.get(b"long") == b"2"
    clock.skip(95)
    assert cache.get(b"long") is None
    assert cache.get(b"none") is None


def test_lru_eviction_counts() -> None:
    """Past max_entries the least recently used key goes, and evictions count it."""
    cache = LocalCache(max_entries=2, clock=ManualClock())
    cache.set(b"a", 1)
    cache.set(b"b", 2)
    cache.get(b"a")  # a is now most recently used
    cache.set(b"c", 3)
    assert cache.get(b"b") is None
    assert cache.get(b"a") == 1
    assert cache.get(b"c") == 3
    assert cache.evictions == 1
    assert len(cache) == 2


def test_expired_entries_are_purged_before_evicting() -> None:
    """Expired entries make room before a live one is evicted."""
    clock = ManualClock()
    cache = LocalCache(max_entries=2, clock=clock)
    cache.set(b"old", 1, ttl=1)
    cache.set(b"live", 2)
    clock.skip(2)
    cache.set(b"new", 3)
    assert cache.evictions == 0
    assert cache.get(b"live") == 2


def test_nx_xx_keepttl() -> None:
    """NX only creates, XX only replaces, KEEPTTL keeps the expiry."""
    clock = ManualClock()
    cache = LocalCache(clock=clock)
    assert not cache.set(b"k", 1, xx=True)
    assert cache.set(b"k", 1, nx=True, ttl=10)
    assert not cache.set(b"k", 2, nx=True)
    assert cache.set(b"k", 3, xx=True, keepttl=True)
    clock.skip(10)
    assert cache.get(b"k") is None


def test_delete_exists_expire() -> None:
    """DEL and EXISTS count like Redis; EXPIRE honours NX/XX/GT/LT and <= 0 deletes."""
    clock = ManualClock()
    cache = LocalCache(default_ttl=None, clock=clock)
    cache.set(b"a", 1)
    cache.set(b"b", 2)
    assert cache.exists([b"a", b"a", b"x"]) == 2
    assert cache.delete([b"a", b"x"]) == 1
    assert not cache.expire(b"x", 10)
    assert not cache.expire(b"b", 10, xx=True)  # no TTL yet
    assert cache.expire(b"b", 10, nx=True)
    assert not cache.expire(b"b", 5, gt=True)
    assert cache.expire(b"b", 20, gt=True)
    assert not cache.expire(b"b", 30, lt=True)
    assert cache.expire(b"b", 0)
    assert cache.exists([b"b"]) == 0


def test_hashes() -> None:
    """HSET counts new fields; HGET finds fields; a string key read as hash is a miss."""
    cache = LocalCache(clock=ManualClock())
    assert cache.hset(b"h", {b"f": b"1", b"g": b"2"}) == 2
    assert cache.hset(b"h", {b"f": b"3"}) == 0
    assert cache.hget(b"h", b"f") == b"3"
    assert cache.hget(b"h", b"zz") is None
    assert cache.get(b"h") is None
    cache.hput(b"h", b"f", None)
    assert cache.hget(b"h", b"f") is None


def test_invalid_settings() -> None:
    """Nonsense sizes and TTLs are refused with a clear message."""
    with pytest.raises(ValueError, match="max_entries"):
        LocalCache(max_entries=0)
    with pytest.raises(ValueError, match="default_ttl"):
        LocalCache(default_ttl=0)


def test_expire_conditions_see_the_redis_ttl_not_the_age_cap() -> None:
    """With default_ttl set, a key written without a TTL has none for NX/XX/GT/LT (as in Redis)."""
    clock = ManualClock()
    cache = LocalCache(default_ttl=100, clock=clock)
    cache.set(b"k", 1)
    assert not cache.expire(b"k", 10, xx=True)
    assert not cache.expire(b"k", 10, gt=True)
    assert cache.expire(b"k", 50, nx=True)
    assert cache.set(b"k", 2, keepttl=True)
    assert not cache.expire(b"k", 60, nx=True)  # KEEPTTL kept the TTL
    clock.skip(50)
    assert cache.get(b"k") is None


def test_expire_never_extends_the_age_cap() -> None:
    """A longer EXPIRE does not keep a value past default_ttl after it was written."""
    clock = ManualClock()
    cache = LocalCache(default_ttl=100, clock=clock)
    cache.put(b"k", b"v")
    clock.skip(90)
    assert cache.expire(b"k", 1000)
    clock.skip(10)
    assert cache.get(b"k") is None


def test_a_read_keeps_the_ttl_this_process_set() -> None:
    """GET after SET EX 10 refreshes the value but not past the 10 s TTL this process knows about."""
    clock = ManualClock()
    cache = LocalCache(default_ttl=300, clock=clock)
    cache.set(b"k", b"v", ttl=10)
    clock.skip(5)
    cache.put(b"k", b"v")  # read back from Redis: same key, same TTL there
    clock.skip(6)
    assert cache.get(b"k") is None
