"""Backoff of a failed re-admission: one clamped, overflow-safe function for four jitter modes.

Invariants (tested in tests/coordinator/test_backoff.py):

* the result is a finite float in ``[0, max]`` for every attempt, however large;
* ``none``: exactly ``min(max, base * multiplier**(attempt-1))``;
* ``full``: uniform in ``[0, cap]`` (the "Exponential Backoff and Jitter" analysis:
  spreads a herd of retries the most);
* ``equal``: uniform in ``[cap/2, cap]`` (never retries almost at once);
* ``decorrelated``: uniform in ``[base, 3 × previous]``, clamped to ``[base, max]``;
  it needs the previous delay (``base`` when there is none).

Jitter comes from the injected ``random.Random``, never the global one, so a seeded RNG
makes every delay reproducible.
"""

from __future__ import annotations

import math
import random

from healthbus.protocol import BackoffSettings


def exponential_cap(base: float, multiplier: float, maximum: float, attempt: int) -> float:
    """``min(maximum, base * multiplier**(attempt-1))`` without overflow (attempt >= 1)."""
    n = max(0, attempt - 1)
    if multiplier <= 1.0 or n == 0:
        return min(base, maximum)
    # base * m**n >= maximum  <=>  n >= log(maximum/base) / log(m): decide before computing
    # m**n, which raises OverflowError for a large n.
    if n >= math.log(maximum / base) / math.log(multiplier):
        return maximum
    return min(maximum, base * multiplier**n)


def backoff_delay(
    settings: BackoffSettings,
    attempt: int,
    rng: random.Random,
    previous: float | None = None,
) -> float:
    """Seconds to wait before the next re-admission after ``attempt`` (>= 1) failed ones."""
    base = float(settings.base)
    maximum = float(settings.max)
    jitter = settings.jitter
    if jitter == "decorrelated":
        prev = base if previous is None else min(max(previous, base), maximum)
        delay = rng.uniform(base, prev * 3.0)
        return min(maximum, max(base, delay))
    cap = exponential_cap(base, float(settings.multiplier), maximum, attempt)
    if jitter == "none":
        return cap
    # equal: half fixed, half random; full: all random.
    delay = cap / 2.0 + rng.uniform(0.0, cap / 2.0) if jitter == "equal" else rng.uniform(0.0, cap)
    return min(cap, max(0.0, delay))
