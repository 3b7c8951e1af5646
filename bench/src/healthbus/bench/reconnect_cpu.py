"""What does one reconnect cost, in the client and in nats-server? One process, no contention.

Opens ``--instances`` HealthClients (``--design healthbus``) or plain nats-py core subscribers
of the state subjects (``--design plain``), each on its own connection, in this one process,
against a throwaway nats-server, with a StateDigest published as the coordinator does (the
``fleet`` suite's publisher and openers). Then restarts nats-server ``--restarts`` times; after
each return one transition is published, and the restart is done when every HealthClient has
it (a plain subscriber: when every one has reconnected). Per restart: this process's CPU per
instance from just before the stop (``client_ms``; ``client_down_ms`` of it until the server
was back), nats-server's CPU per instance from its return (``server_ms``) and the wall time from
its return (``wall_s``). Prints one JSON object with every restart and the medians.

Where ``bench fleet`` plays 10,000 instances in 20 processes on two shared cores (the figure
the issue asks for, and the noise that comes with it), this measures one design's reconnect
alone, repeatably enough to compare two revisions: run it in each checkout, alternating.
Run: ``python -m healthbus.bench.reconnect_cpu [--design healthbus|plain] [--instances 1000]
[--restarts 7]`` (docs/performance.md, "A leaner reconnect").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from healthbus.bench._fleet import OPENERS, PREFIX, Instances, Publisher, Seen, ServerProbe
from healthbus.bench._fleet import raise_nofile as _raise_nofile
from healthbus.bench._measure import machine_description, now_ns
from healthbus.bench._natsutil import bench_connect
from healthbus.bench._servers import embedded_nats
from healthbus.bench._workload import target_names
from healthbus.bus import connect, ensure_stream
from healthbus.protocol import BusSettings, StreamSettings

TARGETS = 10
CONNECT_CONCURRENCY = 20
ROUND_TIMEOUT = 120.0


async def measure(design: str, instances: int, restarts: int) -> dict[str, Any]:
    """Open the instances, restart nats-server ``restarts`` times; the figures of each restart."""
    _raise_nofile()
    names = target_names(TARGETS)
    publisher = Publisher(names)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="healthbus-reconnect-cpu-") as workdir:
        async with embedded_nats(Path(workdir)) as server:
            admin = await bench_connect(server.url, "bench-reconnect-admin")
            await ensure_stream(admin.jetstream(), StreamSettings.for_prefix(PREFIX))
            for name in names:
                await publisher.publish(admin, name)
            coordinator = await connect(BusSettings(url=server.url), name="bench-reconnect-coordinator")
            digest_task = asyncio.create_task(publisher.digests(coordinator).run())
            seen, opened = Seen(), Instances()
            gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

            async def open_one() -> None:
                async with gate:
                    await OPENERS[design](server.url, seen, opened)

            try:
                await asyncio.gather(*(open_one() for _ in range(instances)))
                await admin.close()  # each restart publishes from a connection of its own
                gc.collect()
                gc.freeze()  # as the fleet suite's workers: no full collection over every instance
                for index in range(restarts):
                    await asyncio.sleep(1.0)  # settled: nothing of the last round still running
                    rows.append(await _restart(server, publisher, seen, opened, design, instances, index))
            finally:
                digest_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await digest_task
                for i in range(0, len(opened.closers), 50):
                    await asyncio.gather(*(close() for close in opened.closers[i : i + 50]), return_exceptions=True)
                await coordinator.close()
                await admin.close()
    medians = {f"median_{key}": round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}
    return {"design": design, "instances": instances, "restarts": rows, **medians}


async def _restart(
    server: Any, publisher: Publisher, seen: Seen, opened: Instances, design: str, instances: int, index: int
) -> dict[str, float]:
    started_ns = now_ns()
    cpu0 = time.process_time()
    await server.astop()
    await server.astart()
    back = time.monotonic()
    cpu_back = time.process_time()
    server_cpu0 = ServerProbe(server.pid).cpu_s()
    admin = await bench_connect(server.url, "bench-reconnect-admin")
    try:
        key, _ = await publisher.publish(admin, publisher.names[index % len(publisher.names)])
    finally:
        await admin.close()

    def done() -> bool:
        if design == "plain":
            return sum(1 for t in opened.reconnected_ns if t > started_ns) >= instances
        return seen.count.get(key, 0) >= instances

    while not done():
        if time.monotonic() - back > ROUND_TIMEOUT:
            raise TimeoutError(f"restart {index + 1}: not every instance was back within {ROUND_TIMEOUT:g}s")
        await asyncio.sleep(0.01)
    wall = time.monotonic() - back
    cpu1 = time.process_time()
    server_cpu = ServerProbe(server.pid).cpu_s() - server_cpu0
    per = 1000 / instances
    return {
        "wall_s": round(wall, 3),
        "client_ms": round((cpu1 - cpu0) * per, 3),
        "client_down_ms": round((cpu_back - cpu0) * per, 3),
        "server_ms": round(server_cpu * per, 3),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m healthbus.bench.reconnect_cpu``: print the figures as one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m healthbus.bench.reconnect_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--design", choices=("healthbus", "plain"), default="healthbus")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=7)
    args = parser.parse_args(argv)
    if args.instances < 1 or args.restarts < 1:
        parser.error("--instances and --restarts must be at least 1")
    result = asyncio.run(measure(args.design, args.instances, args.restarts))
    print(json.dumps({**result, "machine": machine_description()}))


if __name__ == "__main__":
    main()
