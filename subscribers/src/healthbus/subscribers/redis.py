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
- after a call fails here with an error redis-py's table in ``healthbus.subscribers._errors``
  says trips (connection refused or lost, timeout, ``LOADING``, ``MASTERDOWN``, ``READONLY``,
  auth errors; not ``OOM``, a wrong type or bad arguments), before the bus verdict arrives: that call is served
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

``HealthyRedisGroup`` does this for a group of Redis servers (``[[groups]]``: replicas or
several servers holding the same data): one ``HealthyRedis`` per member (its own local
trip and counters; one shared local cache). Reads (GET, HGET, EXISTS) go to the member
``health.pick(group, read_only=True)`` gives; a read that fails there with a connection
error trips that member and is tried at once on the next usable one (fail-over), and only
with no member usable is it answered from the local cache. Writes go to the group's
primary (a group without one: ``pick(group)``, so with no member usable a write raises
``DependencyUnavailable``). ``SyncHealthyRedisGroup`` is the same for ``redis.Redis``
(one routing, ``_HealthyRedisGroupBase``; each member a ``SyncHealthyRedis``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar

try:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis
    from redis.exceptions import DataError, ResponseError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.redis needs redis-py: pip install 'healthbus-subscribers[redis]'") from exc

from healthbus.protocol.clock import Clock
from healthbus.subscribers._cache import LocalCache
from healthbus.subscribers._errors import ErrorClass, classify
from healthbus.subscribers._route import check_members, choose
from healthbus.subscribers._trip import LocalTrip
from healthbus.subscribers._view import DependencyUnavailable, GroupHealthView, HealthView, clock_of

__all__ = ["HealthyRedis", "HealthyRedisGroup", "LocalCache", "SyncHealthyRedis", "SyncHealthyRedisGroup"]

log = logging.getLogger("healthbus.subscribers.redis")

R = TypeVar("R")
C = TypeVar("C")


def _trips(exc: BaseException) -> ErrorClass | None:
    """The table row (``healthbus.subscribers._errors``, redis-py's) when ``exc`` sends the adapter local."""
    found = classify(exc, attribute=False)  # everything inside a call is Redis's
    if found is None or not found.trips or found.driver not in ("redis", "builtin"):
        return None
    return found


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
        clock: Clock | None = None,
    ) -> None:
        self.redis = redis
        self.health = health
        self.target = target
        self.clock = clock_of(health, clock, f"{type(self).__name__}(clock=...)")
        """The clock of the local trip and of the default cache: ``clock=``, else ``health``'s own."""
        self.cache = cache if cache is not None else LocalCache(clock=self.clock)
        self._encoder = redis.get_encoder()  # type: ignore[attr-defined]
        self._trip = LocalTrip(health, target, local_cooldown, self.clock)
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
        """Go local after ``exc`` if the table says it trips; else raise it (a wrong type, OOM, bad arguments)."""
        found = _trips(exc)
        if found is None:
            raise exc
        self._trip.trip(found.kind, exc, report=found.reports)
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
            except Exception as exc:
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
            except Exception as exc:
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


A = TypeVar("A", HealthyRedis, SyncHealthyRedis)


class _HealthyRedisGroupBase(Generic[A, C]):
    """The routing of both group adapters (class docstrings); a subclass only calls its
    members. ``A``: the member adapter; ``C``: the redis-py client it wraps."""

    _adapter: Callable[..., A]  # the adapter class: built from a client of type C

    def __init__(
        self,
        clients: Mapping[str, C],
        health: GroupHealthView,
        group: str,
        *,
        primary: str | None = None,
        cache: LocalCache | None = None,
        local_cooldown: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        check_members(group, clients, primary, "a Redis client")
        self.health = health
        self.group = group
        self.primary = primary
        clock = clock_of(health, clock, f"{type(self).__name__}(clock=...)")
        self.cache = cache if cache is not None else LocalCache(clock=clock)
        self.members: dict[str, A] = {
            member: self._adapter(client, health, member, self.cache, local_cooldown=local_cooldown, clock=clock)
            for member, client in clients.items()
        }
        self.reads: dict[str, int] = dict.fromkeys(self.members, 0)
        """Reads answered by each member."""
        self.failovers = 0
        """Reads tried again on another member after a connection error."""

    def _usable(self, member: str) -> bool:
        adapter = self.members.get(member)
        return adapter is not None and not adapter.local

    def _route_read(self, failed: list[str]) -> tuple[str | None, A]:
        """The member the next try of a read goes to; None with the adapter that answers locally."""
        try:
            member = choose(
                self.health,
                self.group,
                list(self.members),
                self._usable,
                primary=self.primary,
                read_only=True,
                skip=failed,
            )
        except DependencyUnavailable:
            # No member usable: the local cache answers, through a member whose adapter
            # is local now (never a read on the primary the group keeps reads off).
            local = [m for m, a in self.members.items() if a.local and m != self.primary]
            return None, self.members[failed[-1] if failed else (local or list(self.members))[0]]
        return member, self.members[member]

    def _settle_read(self, member: str | None, adapter: A, trips: int, failed: list[str]) -> bool:
        """True when the try answered the read; False when it tripped its member (try the next)."""
        if member is None:
            return True
        if adapter.local_trips == trips:
            self.reads[member] += 1
            return True
        failed.append(member)
        self.failovers += 1
        return False

    def _writer(self) -> A:
        if self.primary is not None:
            return self.members[self.primary]
        member = choose(self.health, self.group, list(self.members), self._usable, primary=None, read_only=False)
        return self.members[member]

    def metrics(self) -> dict[str, dict[str, int]]:
        """Per member: its adapter's counters and the reads it answered."""
        return {m: {**a.metrics(), "reads": self.reads[m]} for m, a in self.members.items()}


class HealthyRedisGroup(_HealthyRedisGroupBase[HealthyRedis, Redis]):
    """Reads spread over a group's usable members, fail-over on a connection error, writes to the primary.

    ``clients`` maps each member (target name) to its ``redis.asyncio.Redis``; each is
    wrapped in a :class:`HealthyRedis` (``members[member]``) sharing one :class:`LocalCache`.
    """

    _adapter = HealthyRedis

    async def _read(self, command: str, *args: Any) -> Any:
        failed: list[str] = []
        while True:
            member, adapter = self._route_read(failed)
            trips = adapter.local_trips
            result = await getattr(adapter, command)(*args)
            if self._settle_read(member, adapter, trips, failed):
                return result

    async def get(self, name: Any) -> Any:
        """GET ``name`` from a usable member (see the class docstring)."""
        return await self._read("get", name)

    async def hget(self, name: Any, key: Any) -> Any:
        """HGET from a usable member."""
        return await self._read("hget", name, key)

    async def exists(self, *names: Any) -> int:
        """EXISTS on a usable member."""
        result: int = await self._read("exists", *names)
        return result

    async def set(self, name: Any, value: Any, **options: Any) -> bool | None:
        """SET on the primary (see :meth:`HealthyRedis.set` for the options and the outage rules)."""
        return await self._writer().set(name, value, **options)

    async def delete(self, *names: Any) -> int:
        """DELETE on the primary."""
        return await self._writer().delete(*names)


class SyncHealthyRedisGroup(_HealthyRedisGroupBase[SyncHealthyRedis, SyncRedis]):
    """:class:`HealthyRedisGroup` for redis-py's synchronous ``redis.Redis``: the same rules and answers.

    ``clients`` maps each member (target name) to its ``redis.Redis``; each is wrapped in a
    :class:`SyncHealthyRedis` (``members[member]``) sharing one :class:`LocalCache`.
    """

    _adapter = SyncHealthyRedis

    def _read(self, command: str, *args: Any) -> Any:
        failed: list[str] = []
        while True:
            member, adapter = self._route_read(failed)
            trips = adapter.local_trips
            result = getattr(adapter, command)(*args)
            if self._settle_read(member, adapter, trips, failed):
                return result

    def get(self, name: Any) -> Any:
        """GET ``name`` from a usable member (see :class:`HealthyRedisGroup`)."""
        return self._read("get", name)

    def hget(self, name: Any, key: Any) -> Any:
        """HGET from a usable member."""
        return self._read("hget", name, key)

    def exists(self, *names: Any) -> int:
        """EXISTS on a usable member."""
        result: int = self._read("exists", *names)
        return result

    def set(self, name: Any, value: Any, **options: Any) -> bool | None:
        """SET on the primary (see :meth:`SyncHealthyRedis.set` for the options and the outage rules)."""
        return self._writer().set(name, value, **options)

    def delete(self, *names: Any) -> int:
        """DELETE on the primary."""
        return self._writer().delete(*names)
