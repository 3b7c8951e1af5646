"""Fuzzing what comes off the wire: 100,000+ generated messages through a running
coordinator and a running probe worker (real processes) on a real nats-server.

The messages (tests/coordinator/_fuzz.py) are ProbeResult variants, control requests,
worker heartbeats, oversized payloads, wrong types, wrong subjects, unicode and extreme
timestamps. Afterwards both processes are alive and still deciding correctly, no state
exists for a target that is not configured, resident memory grew by less than 10 MB
from the end of a warm-up, and every drop is counted by reason, exactly as expected.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client

from healthbus.bus import StateStream
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import ControlRequest, decode_control_reply, encode
from tests.coordinator._fuzz import Fuzzer
from tests.e2e._stack import Stack
from tests.helpers import wait_until

pytestmark = pytest.mark.nats

WARMUP = 10_000
MESSAGES = 100_000
CHUNK = 1_000


def _config(nats_port: int, closed_port: int) -> str:
    return f"""
[defaults]
interval = "200ms"
timeout = "150ms"
failure_threshold = 2
success_threshold = 2
backoff = {{ base = "300ms", multiplier = 1.0, max = "300ms", jitter = "none" }}
flap = {{ enabled = false }}

[coordinator]
tick = "50ms"

[probes]
heartbeat = "500ms"

[[targets]]
name = "alive"
kind = "tcp"
url = "tcp://127.0.0.1:{nats_port}"

[[targets]]
name = "down"
kind = "tcp"
url = "tcp://127.0.0.1:{closed_port}"
"""


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def _counters(text: str, family: str) -> dict[str, float]:
    """``{reason: value}`` of a ``family{reason="..."} value`` counter in Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(family + "{"):
            labels, _, value = line.rpartition(" ")
            reason = re.search(r'reason="([^"]*)"', labels)
            if reason:
                out[reason.group(1)] = float(value)
    return out


async def test_fuzzed_wire_leaves_both_processes_deciding(
    nats_server: EmbeddedNats, nc: Client, tmp_path: Path
) -> None:
    """100,000 generated messages: alive, deciding, no stray state, < 10 MB, drops counted."""
    stack = await Stack(nats_server.url, _config(nats_server.port, free_port()), tmp_path, probes=1).start()
    try:
        assert stack.coordinator is not None
        assert stack.coordinator.proc is not None
        worker = stack.workers[0]
        assert worker.proc is not None
        pids = {"coordinator": stack.coordinator.proc.pid, "w1": worker.proc.pid}
        stream = StateStream(nc)

        async def states() -> dict[str, str]:
            return {name: event.state for name, event in (await stream.current(timeout=5.0)).items()}

        last_states: dict[str, str] = {}

        async def settled() -> bool:
            now = await states()
            last_states.clear()
            last_states.update(now)
            return now.get("alive") == "healthy" and now.get("down") == "unavailable"

        await wait_until(
            settled, 30.0, "alive healthy and down unavailable before the fuzz", seen=lambda: dict(last_states)
        )

        fuzzer = Fuzzer("healthbus", ("alive", "down"), seed=20261130)
        expected: Counter[str] = Counter()

        async def send(count: int) -> None:
            for sent, (subject, payload, expect) in enumerate(fuzzer.messages(count), 1):
                await nc.publish(subject, payload)
                if expect is not None:
                    expected[expect] += 1
                if sent % CHUNK == 0:
                    await nc.flush(timeout=30)
            await nc.flush(timeout=30)

        seen: dict[str, object] = {}

        async def all_counted() -> bool:
            for name in ("coordinator", "w1"):
                got = _counters(await stack.metrics(name), _family(name))
                owner = "coordinator:" if name == "coordinator" else "worker:"
                want = {k.split(":", 1)[1]: v for k, v in expected.items() if k.startswith(owner)}
                seen[name] = (got, want)
                if any(got.get(reason, 0.0) < n for reason, n in want.items()):
                    return False
            return True

        await send(WARMUP)
        await wait_until(all_counted, 60.0, "the warm-up's drops counted", seen=lambda: seen)
        rss_before = {name: _rss_kb(pid) for name, pid in pids.items()}

        await send(MESSAGES)
        await wait_until(all_counted, 60.0, "every drop counted", seen=lambda: seen)  # (counted, expected)
        rss_after = {name: _rss_kb(pid) for name, pid in pids.items()}

        # Both alive; every drop counted under the reason expected, none unaccounted for.
        assert stack.coordinator.proc.returncode is None, stack.logs()
        assert worker.proc.returncode is None, stack.logs()
        coordinator_drops = _counters(await stack.metrics("coordinator"), "healthbus_dropped_messages_total")
        worker_drops = _counters(await stack.metrics("w1"), "healthbus_probe_dropped_messages_total")
        assert coordinator_drops == {
            k.split(":", 1)[1]: float(v) for k, v in expected.items() if k.startswith("coordinator:")
        }
        assert worker_drops == {k.split(":", 1)[1]: float(v) for k, v in expected.items() if k.startswith("worker:")}
        assert sum(expected.values()) > MESSAGES // 2

        # No state for an unknown target, in the stream or in the coordinator's metrics.
        assert set(await states()) == {"alive", "down"}
        text = await stack.metrics("coordinator")
        assert set(re.findall(r'healthbus_target_state\{[^}]*target="([^"]*)"', text)) == {"alive", "down"}

        # Still deciding: the worker's real checks keep both verdicts, and the coordinator
        # still answers: a reset of the down target half-opens it and its trial re-opens it
        # (an open breaker's failed trials alone announce nothing).
        before = (await stream.current(target="down"))["down"].seq
        request = encode(ControlRequest(target="down", reason="still deciding after the fuzz"))
        assert decode_control_reply((await nc.request("healthbus.ctl.reset", request, timeout=10)).data).ok
        await wait_until(
            lambda: _seq_after(stream, before),
            30.0,
            "a new verdict for the down target after the fuzz",
            seen=lambda: stack.logs()[-2000:],
        )
        await wait_until(
            settled, 30.0, "alive healthy and down unavailable after the fuzz", seen=lambda: dict(last_states)
        )

        grown = {name: (rss_after[name] - rss_before[name]) / 1024 for name in pids}
        assert all(mb < 10.0 for mb in grown.values()), grown
    finally:
        codes = await stack.stop()
    assert codes == {"w1": 0, "coordinator": 0}, stack.logs()


def _family(name: str) -> str:
    return "healthbus_dropped_messages_total" if name == "coordinator" else "healthbus_probe_dropped_messages_total"


async def _seq_after(stream: StateStream, seq: int) -> bool:
    current = await stream.current(target="down", timeout=5.0)
    return "down" in current and current["down"].seq > seq


def test_fuzzer_is_deterministic() -> None:
    """The same seed gives the same messages (a failure can be replayed)."""
    now = datetime.now(UTC)
    a = list(Fuzzer("healthbus", ("alive", "down"), seed=7, now=now).messages(500))
    b = list(Fuzzer("healthbus", ("alive", "down"), seed=7, now=now).messages(500))
    assert a == b
