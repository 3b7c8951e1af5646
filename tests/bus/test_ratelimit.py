"""RateLimitedLog: one line per reason per interval, on the injected clock."""

from __future__ import annotations

import logging
import time

import pytest

from healthbus.bus import DROP_LOG_INTERVAL, RateLimitedLog
from healthbus.protocol.testing import ManualClock


def test_one_line_per_reason_per_interval_on_the_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    """Within the interval (by the clock given) lines are counted, not logged; the next line says how many."""
    clock = ManualClock()
    logger = logging.getLogger("healthbus.test.ratelimit")
    drop = RateLimitedLog("dropped (%s): %s%s", clock, logger=logger)
    caplog.set_level(logging.WARNING, logger=logger.name)
    for i in range(5):
        drop("malformed", f"message {i}")
    drop("oversized", "one")
    clock.skip(DROP_LOG_INTERVAL - 0.001)
    drop("malformed", "late")
    assert [r.getMessage() for r in caplog.records] == [
        "dropped (malformed): message 0",
        "dropped (oversized): one",
    ]
    clock.skip(0.001)
    drop("malformed", "next")
    assert caplog.records[-1].getMessage() == "dropped (malformed): next (5 more since the last such message)"


def test_a_bare_function_is_not_a_clock() -> None:
    """The clock is a Clock (monotonic, now, sleep), not a monotonic function."""
    with pytest.raises(TypeError, match="bare function"):
        RateLimitedLog("%s%s%s", time.monotonic)  # type: ignore[arg-type]
