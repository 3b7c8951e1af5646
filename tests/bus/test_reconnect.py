"""bus.connect's reconnects: each try after a jittered wait whose cap doubles per failed try."""

from __future__ import annotations

from healthbus.bus._connect import RECONNECT_FIRST_MAX, RECONNECT_MAX, reconnect_delay


def test_reconnect_delay_is_full_jitter_with_a_doubling_cap() -> None:
    """Try n waits up to FIRST_MAX * 2**n, never more than RECONNECT_MAX, and may wait nearly 0."""
    top = [reconnect_delay(n, lambda low, high: high) for n in range(8)]
    assert top[0] == RECONNECT_FIRST_MAX
    assert top == sorted(top)
    assert max(top) == RECONNECT_MAX
    assert reconnect_delay(50, lambda low, high: low) == 0.0
