"""Suite ``client``: the subscriber library's hot paths, each against a plain baseline.

* ``is_available()`` per call, against a plain Python function that does one dict
  lookup (the least any such check can cost), both timed in the same loop shape with the
  empty loop subtracted; best of several repeats (as ``timeit`` does, since noise only
  ever adds time). The same for ``SyncHealthClient.is_available()`` (the synchronous
  client, following the same stream from its own thread), beside the async client's.
* The Redis adapter's GET against plain redis-py GET on the same redis-server (one this
  suite starts), in interleaved batches of 100 (order alternating); the median batch of
  each is reported.

The HealthClient is connected to an embedded nats-server whose state stream holds one
healthy StateChanged for the target, published directly (no coordinator needed).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._measure import machine_description
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._servers import BenchRedis, embedded_nats
from healthbus.protocol import (
    GroupChanged,
    GroupMember,
    StateChanged,
    StreamSettings,
    Subjects,
    encode,
    utcnow,
)

__all__ = ["run"]

PREFIX = "benchclient"
TARGET = "redis-main"
FEATURE = "cache"
GROUP = "redis-group"
MEMBERS = (TARGET, "redis-replica-1", "redis-replica-2")
_REPEATS = 5
_BATCH = 100


def _loop_ns(fn: Callable[[str], object], arg: str, calls: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(arg)
    return time.perf_counter_ns() - start


def _empty_ns(arg: str, calls: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(calls):
        pass
    return time.perf_counter_ns() - start


def per_call_ns(fn: Callable[[str], object], arg: str, calls: int) -> float:
    """Best-of-repeats nanoseconds per ``fn(arg)``, loop overhead subtracted."""
    # Best of each separately: noise only ever adds time, to either loop.
    loop = min(_loop_ns(fn, arg, calls) for _ in range(_REPEATS))
    empty = min(_empty_ns(arg, calls) for _ in range(_REPEATS))
    return max(loop - empty, 0) / calls


async def _seed_state(url: str) -> None:
    from healthbus.bus import ensure_stream

    nc = await bench_connect(url, "bench-seed")
    try:
        js = nc.jetstream()
        await ensure_stream(js, StreamSettings.for_prefix(PREFIX))
        subjects = Subjects(PREFIX)
        for target in MEMBERS:
            event = StateChanged(
                target=target, seq=1, at=utcnow(), previous="unknown", state="healthy", breaker="closed",
                reason="seeded by the benchmark", features=[FEATURE] if target == TARGET else [],
            )  # fmt: skip
            await js.publish(subjects.state(target), encode(event), headers={"Nats-Msg-Id": event.msg_id})
        group = GroupChanged(
            group=GROUP, seq=1, at=utcnow(), previous="unknown", state="healthy", policy="round-robin",
            members=[GroupMember(target=t, state="healthy", available=True) for t in MEMBERS], available=len(MEMBERS),
        )  # fmt: skip
        await js.publish(subjects.group(GROUP), encode(group), headers={"Nats-Msg-Id": group.msg_id})
    finally:
        await nc.close()


async def _get_us(get: Callable[[str], Any], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        await get("bench-key")
    return (time.perf_counter_ns() - start) / calls / 1000


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the suite and return its figures."""
    from healthbus.bench._harness import (
        open_health_client,
        open_sync_health_client,
        redis_adapter,
        require_health_client,
    )

    require_health_client()
    calls: int = opts.pick("calls", smoke=100_000, full=1_000_000)
    gets = max(50, calls // 50)
    machine = machine_description()
    lookup: dict[str, bool] = {TARGET: True}

    def plain_lookup(name: str) -> bool:
        return lookup.get(name, False)

    redis = BenchRedis(opts.workdir / "redis").start()
    try:
        async with embedded_nats(opts.workdir) as server:
            await _seed_state(server.url)
            async with open_health_client(server.url, PREFIX) as health:
                if not health.is_available(TARGET):
                    raise RuntimeError(f"the seeded state of {TARGET} did not reach the HealthClient")
                await _wait_group(health)
                is_available_ns = per_call_ns(health.is_available, TARGET, calls)
                pick_ns = per_call_ns(health.pick, GROUP, calls)
                feature_ns = per_call_ns(health.feature_available, FEATURE, calls)
                baseline_ns = per_call_ns(plain_lookup, TARGET, calls)
                async with open_sync_health_client(server.url, PREFIX) as sync_health:
                    if not sync_health.is_available(TARGET):
                        raise RuntimeError(f"the seeded state of {TARGET} did not reach the SyncHealthClient")
                    sync_is_available_ns = per_call_ns(sync_health.is_available, TARGET, calls)
                    sync_feature_ns = per_call_ns(sync_health.feature_available, FEATURE, calls)
                    await _wait_group(sync_health)
                    sync_pick_ns = per_call_ns(sync_health.pick, GROUP, calls)
                plain = aioredis.Redis(host="127.0.0.1", port=redis.port, socket_timeout=5, socket_connect_timeout=5)
                try:
                    await plain.set("bench-key", b"x" * 64)
                    async with redis_adapter(health, redis.url, TARGET) as wrapped:
                        await _get_us(plain.get, 20)  # connect and warm both
                        await _get_us(wrapped.get, 20)
                        # Small batches, interleaved and in alternating order, so load
                        # changes on the shared machine hit both sides alike.
                        plain_batches: list[float] = []
                        adapter_batches: list[float] = []
                        for i in range(max(2, gets // _BATCH)):
                            first, second = (plain, wrapped) if i % 2 == 0 else (wrapped, plain)
                            a = await _get_us(first.get, _BATCH)
                            b = await _get_us(second.get, _BATCH)
                            plain_batches.append(a if first is plain else b)
                            adapter_batches.append(b if first is plain else a)
                finally:
                    await plain.aclose()
    finally:
        redis.stop()
    get_plain = statistics.median(plain_batches)
    get_adapter = statistics.median(adapter_batches)
    data: dict[str, Any] = {
        "calls": calls,
        "is_available_ns": round(is_available_ns, 1),
        "feature_available_ns": round(feature_ns, 1),
        "dict_lookup_fn_ns": round(baseline_ns, 1),
        "is_available_vs_dict_lookup": round(is_available_ns / baseline_ns, 2) if baseline_ns else None,
        "sync_is_available_ns": round(sync_is_available_ns, 1),
        "sync_feature_available_ns": round(sync_feature_ns, 1),
        "sync_vs_async_is_available": round(sync_is_available_ns / is_available_ns, 2) if is_available_ns else None,
        "pick_ns": round(pick_ns, 1),
        "pick_vs_is_available": round(pick_ns / is_available_ns, 2) if is_available_ns else None,
        "sync_pick_ns": round(sync_pick_ns, 1),
        "gets_per_side": len(plain_batches) * _BATCH,
        "get_plain_us": round(get_plain, 2),
        "get_adapter_us": round(get_adapter, 2),
        "adapter_overhead_us": round(get_adapter - get_plain, 2),
        "adapter_overhead_pct": round(100 * (get_adapter - get_plain) / get_plain, 1) if get_plain else None,
    }
    goals = [
        Goal("is_available() is O(1) and cheap (< 1 µs)", is_available_ns < 1000, f"{data['is_available_ns']} ns"),
        Goal(
            "SyncHealthClient.is_available() is as cheap (< 1 µs)",
            sync_is_available_ns < 1000,
            f"{data['sync_is_available_ns']} ns",
        ),
        Goal("pick(group) is O(1) and cheap (< 500 ns)", pick_ns < 500, f"{data['pick_ns']} ns"),
    ]
    return SuiteResult("client", opts.size, data, goals, [], machine)


async def _wait_group(health: Any) -> None:
    """Until every member of the seeded group is usable by ``health`` (it loads them on connect)."""
    for _ in range(500):
        try:
            if len({health.pick(GROUP) for _ in MEMBERS}) == len(MEMBERS):
                return
        except ConnectionError:
            pass
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the seeded group {GROUP} did not reach the client with every member usable")
