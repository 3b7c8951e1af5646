"""Backoff: one clamped, overflow-safe function for the four jitter modes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthbus.coordinator._core import backoff_delay, exponential_cap
from healthbus.protocol import BackoffSettings, Duration, Jitter


def settings(
    base: float = 1.0, multiplier: float = 2.0, maximum: float = 60.0, jitter: str = "full"
) -> BackoffSettings:
    """BackoffSettings from plain floats."""
    mode: Jitter = jitter  # type: ignore[assignment]
    return BackoffSettings(base=Duration(base), multiplier=multiplier, max=Duration(maximum), jitter=mode)


def test_exponential_without_jitter() -> None:
    """With jitter none the delays are base, base*m, base*m², ... capped at max."""
    s = settings(jitter="none")
    rng = random.Random(1)
    assert [backoff_delay(s, a, rng) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_huge_attempt_does_not_overflow() -> None:
    """An attempt number far beyond float range still gives max, not an OverflowError."""
    assert exponential_cap(1.0, 2.0, 60.0, 10**9) == 60.0
    assert exponential_cap(0.001, 1e300, 5.0, 50) == 5.0
    assert backoff_delay(settings(jitter="equal"), 10**12, random.Random(0)) <= 60.0


def test_multiplier_one_is_constant() -> None:
    """A multiplier of 1 keeps every delay at base."""
    assert {exponential_cap(3.0, 1.0, 60.0, a) for a in (1, 2, 100)} == {3.0}


def test_attempt_below_one_is_first_attempt() -> None:
    """Attempt 0 or negative is treated as the first attempt, never as a negative power."""
    assert exponential_cap(1.0, 2.0, 60.0, 0) == 1.0
    assert exponential_cap(1.0, 2.0, 60.0, -5) == 1.0


def test_seeded_rng_is_reproducible() -> None:
    """The same seed gives the same delays: jitter comes only from the injected RNG."""
    s = settings(jitter="full")
    a = [backoff_delay(s, n, random.Random(7)) for n in range(1, 6)]
    b = [backoff_delay(s, n, random.Random(7)) for n in range(1, 6)]
    assert a == b


def test_decorrelated_grows_from_previous() -> None:
    """Decorrelated jitter draws from [base, 3 × previous], so it can grow past base."""
    s = settings(base=1.0, maximum=1000.0, jitter="decorrelated")
    rng = random.Random(3)
    prev = None
    seen = []
    for _ in range(20):
        prev = backoff_delay(s, 1, rng, prev)
        seen.append(prev)
    assert max(seen) > 3.0
    assert all(1.0 <= d <= 1000.0 for d in seen)


@given(
    base=st.floats(min_value=0.001, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=1e6),
    extra=st.floats(min_value=0.0, max_value=1e6),
    attempt=st.integers(min_value=-3, max_value=10**6),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
    previous=st.none() | st.floats(min_value=0.0, max_value=1e9),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_always_within_bounds(
    base: float, multiplier: float, extra: float, attempt: int, jitter: str, previous: float | None, seed: int
) -> None:
    """Every delay is finite and within the bounds its jitter mode promises."""
    maximum = base + extra
    s = settings(base, multiplier, maximum, jitter)
    d = backoff_delay(s, attempt, random.Random(seed), previous)
    cap = exponential_cap(base, multiplier, maximum, attempt)
    assert 0.0 <= d <= maximum
    assert base <= cap <= maximum or cap == pytest.approx(min(base, maximum))
    if jitter == "none":
        assert d == cap
    elif jitter == "equal":
        assert cap / 2 <= d <= cap
    elif jitter == "full":
        assert d <= cap
    else:
        assert min(base, maximum) <= d <= maximum
