"""`healthbus ctl maintenance`: a planned outage, with real coordinator, probe worker and subscriber."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthbus.bus.embedded import EmbeddedNats
from healthbus.subscribers import HealthClient
from tests.cli._support import run_cli
from tests.e2e._stack import Stack, fast_config
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a /metrics page (0 when it is not there yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_maintenance_window_from_start_to_end(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """Services see the target unavailable with the reason, the probe worker stops checking it,
    the window ends by itself (a trial, then healthy), and the audit stream has start and end."""
    port = nats_server.url.rsplit(":", 1)[1]
    stack = Stack(nats_server.url, fast_config([("bus", "tcp", f"tcp://127.0.0.1:{port}")]), tmp_path / "s", probes=1)
    try:
        await stack.start()
        async with HealthClient.connect(nats_server.url) as health:
            await health.wait_for("bus", "healthy", timeout=30)
            done = await run_cli(
                "ctl", "maintenance", "bus", "--for", "4s", "--reason", "planned upgrade", "--nats", nats_server.url
            )
            assert done.code == 0, done.err
            assert done.out.startswith("maintenance bus: ok, now unavailable until ")
            state = await health.wait_for("bus", "unavailable", timeout=10)
            assert not health.is_available("bus")
            assert state.breaker == "forced_open"
            assert state.reason.startswith("maintenance until ")
            assert state.reason.endswith(": planned upgrade")
            assert state.retry_at is not None

            # The worker holds off: it counts skipped checks and runs none until the end.
            counted: list[float] = [0.0]

            async def skipped(at_least: float) -> bool:
                text = await stack.metrics("w1")
                counted[0] = sample(text, "healthbus_probe_skipped_total", target="bus", reason="breaker_open")
                return counted[0] >= at_least

            await wait_until(lambda: skipped(1), 10, "the worker to hold off", seen=lambda: counted[0])
            checks = sample(await stack.metrics("w1"), "healthbus_probe_checks_total", target="bus")
            await wait_until(lambda: skipped(4), 10, "more skipped checks", seen=lambda: counted[0])
            assert health.state("bus").state == "unavailable"  # type: ignore[union-attr]
            assert sample(await stack.metrics("w1"), "healthbus_probe_checks_total", target="bus") == checks

            # It ends by itself: a trial, then healthy again.
            await health.wait_for("bus", "healthy", timeout=30)
        replay = await run_cli("replay", "--target", "bus", "--json", "--nats", nats_server.url)
        assert replay.code == 0, replay.err
        events = [json.loads(line) for line in replay.lines]
        started = [e for e in events if e["reason"].startswith("maintenance until ")]
        ended = [e for e in events if e["reason"].startswith("maintenance ended")]
        assert len(started) == 1
        assert len(ended) == 1
        assert (ended[0]["state"], ended[0]["breaker"]) == ("recovering", "half_open")
        assert events[-1]["state"] == "healthy"
    except BaseException:
        print(stack.logs())
        raise
    finally:
        await stack.stop()


async def test_maintenance_can_end_early_with_reset(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """`ctl reset` ends a window before its time."""
    port = nats_server.url.rsplit(":", 1)[1]
    stack = Stack(nats_server.url, fast_config([("bus", "tcp", f"tcp://127.0.0.1:{port}")]), tmp_path / "s", probes=1)
    try:
        await stack.start()
        async with HealthClient.connect(nats_server.url) as health:
            await health.wait_for("bus", "healthy", timeout=30)
            ctl = ("--nats", nats_server.url)
            assert (await run_cli("ctl", "maintenance", "bus", "--for", "1h", *ctl)).code == 0
            await health.wait_for("bus", "unavailable", timeout=10)
            done = await run_cli("ctl", "reset", "bus", "--reason", "finished early", *ctl)
            assert done.code == 0, done.err
            await health.wait_for("bus", "healthy", timeout=30)
    finally:
        await stack.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ctl", "maintenance", "bus"], "maintenance needs --for DURATION"),
        (["ctl", "maintenance", "bus", "--for", "soon"], "--for: "),
        (["ctl", "maintenance", "bus", "--for", "0s"], "--for: expected a duration above 0"),
        (["ctl", "reset", "bus", "--for", "1h"], "--for applies to maintenance only"),
        (["ctl", "reload", "bus"], "reload takes no target"),
        (["reload", "bus"], "unrecognized arguments: bus"),
        (["ctl", "reset"], "reset needs a TARGET"),
    ],
)
async def test_maintenance_usage_errors(args: list[str], message: str) -> None:
    """A missing or malformed --for (or target) is a usage error (exit 2), before any connection."""
    done = await run_cli(*args, "--nats", "nats://127.0.0.1:1")
    assert done.code == 2
    assert message in done.err
