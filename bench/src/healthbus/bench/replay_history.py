"""How fast does ``healthbus replay`` read a long history? Before and after a change, same run.

Stores ``--events`` StateChanged (1,000 targets, published as the coordinator publishes
them, with ``Nats-Msg-Id``) in a throwaway nats-server and times ``healthbus replay --since
-1h --json`` and the table form, each as its own process, ``--rounds`` times. With
``--before DIR`` (a source checkout of another revision, e.g. ``git worktree add /tmp/main
main``) the same commands run with that revision's code too (its package directories
first on ``PYTHONPATH``), interleaved with this one's, and both outputs must be identical.
Prints one JSON object. Run: ``python -m healthbus.bench.replay_history [--before DIR]``
(docs/performance.md, "Reading the history without consumers").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from healthbus.bench._measure import machine_description
from healthbus.bus import connect, ensure_stream
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import BusSettings, StateChanged, StreamSettings, encode, utcnow

TARGETS = 1000
PACKAGES = ("src", "bench/src", "bus/src", "coordinator/src", "probes/src", "protocol/src", "subscribers/src")


async def _store(url: str, events: int) -> None:
    nc = await connect(BusSettings(url=url), name="bench-replay-store")
    js = nc.jetstream()
    await ensure_stream(js, StreamSettings.for_prefix())
    now = utcnow()
    seqs = [0] * TARGETS
    pending = []
    for i in range(events):
        t = i % TARGETS
        seqs[t] += 1
        up = seqs[t] % 2 == 1
        event = StateChanged(
            target=f"t{t:04d}",
            seq=seqs[t],
            at=now - timedelta(seconds=(events - i) / 100),
            previous="unavailable" if up else "healthy",
            state="healthy" if up else "unavailable",
            breaker="closed" if up else "open",
            reason="stored by the replay benchmark",
        )
        pending.append(
            js.publish(f"healthbus.state.{event.target}", encode(event), headers={"Nats-Msg-Id": event.msg_id})
        )
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


def _run(argv: list[str], pythonpath: str | None) -> tuple[float, bytes]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m healthbus.bench.replay_history")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="DIR", help="a source checkout of the revision to compare with")
    args = parser.parse_args()
    variants: dict[str, str | None] = {"after": None}
    if args.before:
        root = Path(args.before).absolute()
        variants = {"before": ":".join(str(root / p) for p in PACKAGES), "after": None}
    healthbus = str(Path(sys.executable).parent / "healthbus")
    result: dict[str, object] = {"events": args.events, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as work, EmbeddedNats(Path(work)) as server:
        asyncio.run(_store(server.url, args.events))
        for form, extra in (("json", ["--json"]), ("table", [])):
            times: dict[str, list[float]] = {name: [] for name in variants}
            outputs: dict[str, bytes] = {}
            for _ in range(args.rounds):
                for name, path in variants.items():
                    argv = [healthbus, "replay", "--since", "-1h", *extra, "--nats", server.url]
                    elapsed, outputs[name] = _run(argv, path)
                    times[name].append(round(elapsed, 3))
            result[f"{form}_lines"] = outputs["after"].count(b"\n")
            for name in variants:
                result[f"{form}_{name}_s"] = times[name]
                result[f"{form}_{name}_median_s"] = round(statistics.median(times[name]), 3)
            if "before" in variants:
                result[f"{form}_identical_output"] = outputs["before"] == outputs["after"]
                ratio = statistics.median(times["after"]) / statistics.median(times["before"])
                result[f"{form}_after_vs_before"] = round(ratio, 2)
    result["machine"] = machine_description()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
