"""Redis adapter: serve GET/SET/DELETE/EXISTS/EXPIRE/HGET/HSET from a local cache while Redis is down.

``pip install 'healthbus-subscribers[redis]'``::

    from healthbus.subscribers.redis import HealthyRedis, LocalCache, SyncHealthyRedis

    cache = HealthyRedis(redis.asyncio.Redis.from_url(url), health, target="redis-main")
    await cache.set("k", "v", ex=60)
    await cache.get("k")

    cache = SyncHealthyRedis(redis.Redis.from_url(url), health, target="redis-main")
    cache.set("k", "v", ex=60)   # the same rules and return values, for synchronous code

Both classes share one implementation of the rules below (``_HealthyRedisBase``: the
routing, the fast-trip, the cache updates and the local answers of every command); they
differ only in how they call Redis (awaiting ``redis.asyncio.Redis`` or calling
``redis.Redis``).

When Redis is used (the target is available and no local trip is active), every call
goes to Redis and its result also updates the local cache (write-through on writes,
read-through on reads), so a fallback has recent data. The local cache is used instead:

- while the health client says the target is not available (unavailable, recovering,
  unknown, or the bus-loss policy says so), and
- after a call fails here with a connection error or timeout (``redis.exceptions.ConnectionError``
  / ``TimeoutError``, ``OSError``), before the bus verdict arrives: that call is served
  from the cache and the adapter stays local for ``local_cooldown`` seconds, or until
  the bus publishes a *newer* verdict saying the target is available.

Consistency in degraded mode (what you get, exactly):

- Reads return what this process last read from or wrote to Redis, or wrote locally
  during the outage, at most ``default_ttl`` old (and never past a TTL it knew about). A
  key this process never touched is a miss: GET/HGET return None, like a missing key.
  Values may be older than Redis's; a key Redis already expired (with a TTL this process
  did not see, e.g. set by another service) may still be returned until ``default_ttl``.
- Writes (SET, DELETE, EXPIRE, HSET) during the outage change only this process's
  cache. They are **not** written to Redis later and are **not** seen by other
  processes. When Redis is back, the keys written locally are dropped from the cache
  (they never were in Redis, so a later outage must not serve them); Redis still has
  whatever it had before the outage.
- A write that failed with a timeout may or may not have reached Redis.
- Other commands are not wrapped: use ``.redis`` for them, and handle errors yourself.

Metrics: ``hits``, ``misses``, ``evictions`` (from the cache), ``fallback_calls`` (calls
served locally), ``local_trips`` (connection errors that sent us local; each also sends a
failure report through the health client, see docs/subscribers.md), ``redis_calls``;
``metrics()`` returns them as a dict, ``register_metrics(registry)`` exports them to a
prometheus_client registry.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar

try:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis
    from redis.exceptions import AuthenticationError, DataError, ResponseError
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.redis needs redis-py: pip install 'healthbus-subscribers[redis]'") from exc

from healthbus.subscribers._cache import LocalCache
from healthbus.subscribers._trip import LocalTrip
from healthbus.subscribers._view import HealthView

__all__ = ["HealthyRedis", "LocalCache", "SyncHealthyRedis"]

log = logging.getLogger("healthbus.subscribers.redis")

#: Errors that mean "Redis is not reachable from here", as opposed to a bad command.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (_RedisConnectionError, _RedisTimeoutError, OSError)

R = TypeVar("R")
C = TypeVar("C")


def _failure_kind(exc: BaseException) -> str:
    """The error kind of a connection-level Redis failure, for the failure report."""
    if isinstance(exc, _RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, AuthenticationError):
        return "auth"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "connection refused" in str(seen).lower():
            return "refused"
        if isinstance(seen, socket.gaierror) or "name or service not known" in str(seen).lower():
            return "dns"
        seen = seen.__cause__ or seen.__context__
    return "other"


Expiry = int | timedelta  # as redis-py types them


def _set_ttl(ex: Any, px: Any, keepttl: bool, nx: bool, xx: bool) -> float | None:
    """The TTL a SET asks for, in seconds; DataError for what redis-py refuses before sending."""
    if sum((ex is not None, px is not None, bool(keepttl))) > 1:
        raise DataError("``ex``, ``px``, ``exat``, ``pxat``, and ``keepttl`` are mutually exclusive.")
    if nx and xx:
        raise DataError("``nx``, ``xx``, ``ifeq``, ``ifne``, ``ifdeq``, ``ifdne`` are mutually exclusive.")
    if ex is not None:
        if isinstance(ex, timedelta):
            return float(int(ex.total_seconds()))
        if isinstance(ex, int) or (isinstance(ex, str) and ex.isdigit()):
            return float(int(ex))
        raise DataError("ex must be datetime.timedelta or int")
    if px is not None:
        if isinstance(px, timedelta):
            return int(px.total_seconds() * 1000) / 1000.0
        if isinstance(px, int):
            return px / 1000.0
        raise DataError("px must be datetime.timedelta or int")
    return None


def _expire_seconds(time: Any) -> float | None:
    """EXPIRE's ``time`` in seconds as the server reads it (None: the server would refuse it)."""
    if isinstance(time, timedelta):
        return float(int(time.total_seconds()))
    if isinstance(time, int) and not isinstance(time, bool):
        return float(time)
    if isinstance(time, str | bytes):
        try:
            return float(int(time))
        except ValueError:
            return None
    return None


class _Op(Generic[R]):
    """One wrapped command: how to call Redis, what to make of its answer, how to answer locally."""

    __slots__ = ("done", "local", "send")

    def __init__(self, send: Callable[[], Any], done: Callable[[Any], R], local: Callable[[], R]) -> None:
        self.send = send  # the redis-py call: its result (sync) or an awaitable of it (asyncio)
        self.done = done  # Redis answered: update the cache, return what the caller gets
        self.local = local  # served from the local cache instead


class _HealthyRedisBase(Generic[C]):
    """The rules of both Redis adapters; a subclass only calls Redis (see the module docstring)."""

    def __init__(
        self,
        redis: C,
        health: HealthView,
        target: str = "redis-main",
        cache: LocalCache | None = None,
        *,
        local_cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.health = health
        self.target = target
        self.cache = cache if cache is not None else LocalCache()
        self._clock = clock
        self._encoder = redis.get_encoder()  # type: ignore[attr-defined]
        self._trip = LocalTrip(health, target, local_cooldown, clock)
        self._local_writes: set[bytes] = set()
        self._was_local = False
        self.fallback_calls = 0
        self.redis_calls = 0

    # ------------------------------------------------------------ metrics

    @property
    def hits(self) -> int:
        """Cache lookups that found a value."""
        return self.cache.hits

    @property
    def misses(self) -> int:
        """Cache lookups that found nothing."""
        return self.cache.misses

    @property
    def local_trips(self) -> int:
        """Connection errors that sent calls to the local cache before the bus said so."""
        return self._trip.trips

    @property
    def evictions(self) -> int:
        """Entries pushed out of the cache by the size bound."""
        return self.cache.evictions

    def metrics(self) -> dict[str, int]:
        """Every counter, by name."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "fallback_calls": self.fallback_calls,
            "local_trips": self.local_trips,
            "redis_calls": self.redis_calls,
            "cache_entries": len(self.cache),
        }

    def register_metrics(self, registry: Any, prefix: str = "healthbus_redis_fallback") -> None:
        """Export the counters to a ``prometheus_client.CollectorRegistry`` (labelled by target)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        adapter = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                values = adapter.metrics()
                for name in ("hits", "misses", "evictions", "fallback_calls", "local_trips", "redis_calls"):
                    family = CounterMetricFamily(f"{prefix}_{name}", f"Redis adapter {name}", labels=["target"])
                    family.add_metric([adapter.target], values[name])
                    yield family
                gauge = GaugeMetricFamily(f"{prefix}_cache_entries", "Local cache entries", labels=["target"])
                gauge.add_metric([adapter.target], values["cache_entries"])
                yield gauge

        registry.register(_Collector())

    # ------------------------------------------------------------ routing

    @property
    def local(self) -> bool:
        """True when calls are served from the local cache right now."""
        return not self._use_redis()

    def _use_redis(self) -> bool:
        return self._trip.usable()

    def _trip_on(self, exc: BaseException) -> None:
        self._trip.trip(_failure_kind(exc), exc)
        log.warning(
            "%s: %s; serving from the local cache for %.1fs or until healthbus says it is back",
            self.target,
            type(exc).__name__,
            self._trip.cooldown,
        )

    def _answered(self, op: _Op[R], raw: Any) -> R:
        result = op.done(raw)
        self.redis_calls += 1
        return result

    def _fallback(self, op: _Op[R]) -> R:
        self._was_local = True
        self.fallback_calls += 1
        return op.local()

    def _pool_drop_failed(self, exc: BaseException) -> None:
        log.debug("%s: dropping idle connections failed: %s", self.target, type(exc).__name__)

    def _forget_local_writes(self) -> None:
        # (Idle pooled connections most likely died with the outage: the subclass drops them
        # first, so the first call after recovery does not fail on one and trip us back.)
        if self._local_writes:
            self.cache.forget(self._local_writes)
            log.info("%s: back to Redis; dropped %d locally written keys", self.target, len(self._local_writes))
            self._local_writes.clear()

    def _key(self, key: Any) -> bytes:
        return bytes(self._encoder.encode(key))

    def _value(self, value: Any) -> Any:
        # What Redis would hand back for this value: bytes, or str with decode_responses.
        return self._encoder.decode(self._encoder.encode(value))

    # ------------------------------------------------------------ commands (one _Op each)

    def _get(self, name: Any) -> _Op[Any]:
        key = self._key(name)

        def done(value: Any) -> Any:
            self.cache.put(key, value)
            return value

        return _Op(lambda: self.redis.get(name), done, lambda: self.cache.get(key))  # type: ignore[attr-defined]

    def _set(self, name: Any, value: Any, ex: Any, px: Any, nx: bool, xx: bool, keepttl: bool) -> _Op[bool | None]:
        key = self._key(name)
        ttl = _set_ttl(ex, px, keepttl, nx, xx)  # redis-py's own argument checks, in both modes
        stored = self._value(value)

        def done(result: Any) -> bool | None:
            if result:
                self.cache.set(key, stored, ttl=ttl, keepttl=keepttl)
            return bool(result) if result is not None else None

        def local() -> bool | None:
            if ttl is not None and ttl <= 0:  # what the server answers
                raise ResponseError("invalid expire time in 'set' command")
            self._local_writes.add(key)
            return True if self.cache.set(key, stored, ttl=ttl, nx=nx, xx=xx, keepttl=keepttl) else None

        def send() -> Any:
            return self.redis.set(name, value, ex=ex, px=px, nx=nx, xx=xx, keepttl=keepttl)  # type: ignore[attr-defined]

        return _Op(send, done, local)

    def _delete(self, names: tuple[Any, ...]) -> _Op[int]:
        keys = [self._key(n) for n in names]

        def done(count: Any) -> int:
            self.cache.forget(keys)
            return int(count)

        def local() -> int:
            if not keys:
                raise ResponseError("wrong number of arguments for 'del' command")
            self._local_writes.update(keys)
            return self.cache.delete(keys)

        return _Op(lambda: self.redis.delete(*names), done, local)  # type: ignore[attr-defined]

    def _exists(self, names: tuple[Any, ...]) -> _Op[int]:
        keys = [self._key(n) for n in names]

        def local() -> int:
            if not keys:
                raise ResponseError("wrong number of arguments for 'exists' command")
            return self.cache.exists(keys)

        return _Op(lambda: self.redis.exists(*names), int, local)  # type: ignore[attr-defined]

    def _expire(self, name: Any, time: Any, nx: bool, xx: bool, gt: bool, lt: bool) -> _Op[bool]:
        key = self._key(name)
        ttl = _expire_seconds(time)

        def done(raw: Any) -> bool:
            result = bool(raw)
            if result and ttl is not None:
                self.cache.expire(key, ttl)
            elif not (nx or xx or gt or lt):
                self.cache.forget([key])  # Redis says the key does not exist
            return result

        def local() -> bool:
            # The server's answers to arguments it refuses.
            if ttl is None:
                raise ResponseError("value is not an integer or out of range")
            if nx and (xx or gt or lt):
                raise ResponseError("NX and XX, GT or LT options at the same time are not compatible")
            if gt and lt:
                raise ResponseError("GT and LT options at the same time are not compatible")
            self._local_writes.add(key)
            return self.cache.expire(key, ttl, nx=nx, xx=xx, gt=gt, lt=lt)

        def send() -> Any:
            return self.redis.expire(name, time, nx=nx, xx=xx, gt=gt, lt=lt)  # type: ignore[attr-defined]

        return _Op(send, done, local)

    def _hget(self, name: Any, key: Any) -> _Op[Any]:
        hkey, field = self._key(name), self._key(key)

        def done(value: Any) -> Any:
            self.cache.hput(hkey, field, value)
            return value

        return _Op(lambda: self.redis.hget(name, key), done, lambda: self.cache.hget(hkey, field))  # type: ignore[attr-defined]

    def _hset(
        self, name: Any, key: Any, value: Any, mapping: Mapping[Any, Any] | None, items: Sequence[Any] | None
    ) -> _Op[int]:
        if key is None and not mapping and not items:
            raise DataError("'hset' with no key value pairs")  # as redis-py
        if items is not None and len(items) % 2:
            raise ResponseError("wrong number of arguments for 'hset' command")  # as the server
        hkey = self._key(name)
        fields: dict[bytes, Any] = {}
        if key is not None:
            fields[self._key(key)] = self._value(value)
        for k, v in (mapping or {}).items():
            fields[self._key(k)] = self._value(v)
        if items:
            for k, v in zip(items[::2], items[1::2], strict=True):
                fields[self._key(k)] = self._value(v)

        def done(added: Any) -> int:
            self.cache.hset(hkey, fields)
            return int(added)

        def local() -> int:
            self._local_writes.add(hkey)
            return self.cache.hset(hkey, fields)

        def send() -> Any:
            return self.redis.hset(name, key, value, mapping=mapping, items=items)  # type: ignore[attr-defined]

        return _Op(send, done, local)


class HealthyRedis(_HealthyRedisBase[Redis]):
    """A ``redis.asyncio.Redis`` wrapper that falls back to a :class:`LocalCache` (module docstring)."""

    async def _call(self, op: _Op[R]) -> R:
        if self._use_redis():
            if self._was_local:
                await self._back_to_redis()
            try:
                raw = await op.send()
            except CONNECTION_ERRORS as exc:
                self._trip_on(exc)
            else:
                return self._answered(op, raw)
        return self._fallback(op)

    async def _back_to_redis(self) -> None:
        self._was_local = False
        try:
            await self.redis.connection_pool.disconnect(inuse_connections=False)
        except Exception as exc:  # a failing cleanup must not fail the call
            self._pool_drop_failed(exc)
        self._forget_local_writes()

    async def get(self, name: Any) -> Any:
        """GET ``name``: the value, or None."""
        return await self._call(self._get(name))

    async def set(
        self,
        name: Any,
        value: Any,
        ex: Expiry | None = None,
        px: Expiry | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> bool | None:
        """SET with ``ex`` / ``px`` / ``nx`` / ``xx`` / ``keepttl``: True, or None when NX/XX prevented it."""
        return await self._call(self._set(name, value, ex, px, nx, xx, keepttl))

    async def delete(self, *names: Any) -> int:
        """DEL ``names``: how many existed."""
        return await self._call(self._delete(names))

    async def exists(self, *names: Any) -> int:
        """EXISTS ``names``: how many exist (locally: how many the cache holds)."""
        return await self._call(self._exists(names))

    async def expire(
        self, name: Any, time: Expiry, nx: bool = False, xx: bool = False, gt: bool = False, lt: bool = False
    ) -> bool:
        """EXPIRE ``name`` in ``time`` seconds (or a timedelta), with NX/XX/GT/LT."""
        return await self._call(self._expire(name, time, nx, xx, gt, lt))

    async def hget(self, name: Any, key: Any) -> Any:
        """HGET ``name`` ``key``: the field's value, or None."""
        return await self._call(self._hget(name, key))

    async def hset(
        self,
        name: Any,
        key: Any = None,
        value: Any = None,
        mapping: Mapping[Any, Any] | None = None,
        items: Sequence[Any] | None = None,
    ) -> int:
        """HSET ``name`` with ``key``/``value``, ``mapping`` and/or ``items``: how many fields were added."""
        return await self._call(self._hset(name, key, value, mapping, items))


class SyncHealthyRedis(_HealthyRedisBase[SyncRedis]):
    """A ``redis.Redis`` (synchronous) wrapper with :class:`HealthyRedis`'s rules and return values."""

    def _call(self, op: _Op[R]) -> R:
        if self._use_redis():
            if self._was_local:
                self._back_to_redis()
            try:
                raw = op.send()
            except CONNECTION_ERRORS as exc:
                self._trip_on(exc)
            else:
                return self._answered(op, raw)
        return self._fallback(op)

    def _back_to_redis(self) -> None:
        self._was_local = False
        try:
            self.redis.connection_pool.disconnect(inuse_connections=False)
        except Exception as exc:  # a failing cleanup must not fail the call
            self._pool_drop_failed(exc)
        self._forget_local_writes()

    def get(self, name: Any) -> Any:
        """GET ``name``: the value, or None."""
        return self._call(self._get(name))

    def set(
        self,
        name: Any,
        value: Any,
        ex: Expiry | None = None,
        px: Expiry | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> bool | None:
        """SET with ``ex`` / ``px`` / ``nx`` / ``xx`` / ``keepttl``: True, or None when NX/XX prevented it."""
        return self._call(self._set(name, value, ex, px, nx, xx, keepttl))

    def delete(self, *names: Any) -> int:
        """DEL ``names``: how many existed."""
        return self._call(self._delete(names))

    def exists(self, *names: Any) -> int:
        """EXISTS ``names``: how many exist (locally: how many the cache holds)."""
        return self._call(self._exists(names))

    def expire(
        self, name: Any, time: Expiry, nx: bool = False, xx: bool = False, gt: bool = False, lt: bool = False
    ) -> bool:
        """EXPIRE ``name`` in ``time`` seconds (or a timedelta), with NX/XX/GT/LT."""
        return self._call(self._expire(name, time, nx, xx, gt, lt))

    def hget(self, name: Any, key: Any) -> Any:
        """HGET ``name`` ``key``: the field's value, or None."""
        return self._call(self._hget(name, key))

    def hset(
        self,
        name: Any,
        key: Any = None,
        value: Any = None,
        mapping: Mapping[Any, Any] | None = None,
        items: Sequence[Any] | None = None,
    ) -> int:
        """HSET ``name`` with ``key``/``value``, ``mapping`` and/or ``items``: how many fields were added."""
        return self._call(self._hset(name, key, value, mapping, items))
