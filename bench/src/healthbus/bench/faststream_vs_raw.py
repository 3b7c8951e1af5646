"""Can FastStream's per-message path carry the result stream? Measure it against raw nats-py.

Publishes N ProbeResults from a separate process to a throwaway nats-server and times
(a) a raw nats-py subscription callback that decodes each with msgspec and (b) a
FastStream NATS subscriber (logging off, async msgspec decoder) doing the same, twice
each, alternating. Run: ``python -m healthbus.bench.faststream_vs_raw`` (needs the
``[faststream]`` extra of healthbus-bench; docs/coordinator.md has the figures).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import ProbeResult, decode_probe_result

N = 100_000
PUBLISHER = f"""
import asyncio, sys, nats
from healthbus.protocol import ProbeResult, encode, utcnow
async def main():
    nc = await nats.connect(sys.argv[1])
    data = [encode(ProbeResult(target=f"t{{i % 1000}}", probe="p", outcome="pass", latency_ms=1.0,
                               observed_at=utcnow())) for i in range({N})]
    for i, d in enumerate(data):
        await nc.publish(f"bench.probe.t{{i % 1000}}", d)
    await nc.flush()
    await nc.close()
asyncio.run(main())
"""


async def _timed(url: str, done: asyncio.Event) -> float:
    started = time.perf_counter()
    publisher = await asyncio.create_subprocess_exec(sys.executable, "-c", PUBLISHER, url)
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    await publisher.wait()
    return N / elapsed


async def raw(url: str) -> float:
    """Messages per second through a raw nats-py callback with msgspec decoding."""
    import nats

    nc = await nats.connect(url)
    done = asyncio.Event()
    count = 0

    async def cb(msg: object) -> None:
        nonlocal count
        decode_probe_result(msg.data)  # type: ignore[attr-defined]
        count += 1
        if count == N:
            done.set()

    await nc.subscribe("bench.probe.*", cb=cb, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await nc.flush()
    try:
        return await _timed(url, done)
    finally:
        await nc.close()


async def faststream(url: str) -> float:
    """Messages per second through a FastStream subscriber (no logging, msgspec decoder)."""
    from faststream.nats import NatsBroker, NatsMessage

    broker = NatsBroker(url, logger=None)
    done = asyncio.Event()
    count = 0

    async def decoder(msg: NatsMessage) -> ProbeResult:
        return decode_probe_result(msg.body)

    @broker.subscriber("bench.probe.*", decoder=decoder)
    async def handle(result: ProbeResult) -> None:
        nonlocal count
        count += 1
        if count == N:
            done.set()

    await broker.start()
    try:
        return await _timed(url, done)
    finally:
        await broker.stop()


async def main() -> None:
    """Run both twice, alternating, and print messages per second."""
    server = EmbeddedNats(Path(tempfile.mkdtemp()) / "nats").start()
    try:
        for fn in (raw, faststream, raw, faststream):
            print(f"{fn.__name__:>10}: {await fn(server.url):>9,.0f} msg/s")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
