"""Differential check: the decision core decides exactly like the plain reference decider.

The real core is tuned for speed (shared settings, run counters, a bit-mask flap history,
a timer heap, a fast path for results that change no verdict, reasons built only when
emitted); the reference in ``_reference`` is the same rules written plainly. For random
configurations and random streams of results, silences, replayed old results, operator
commands, maintenance windows and live reloads (new settings, or the target retired and
configured again), both must emit the same events, compared as encoded bytes. Refresh and
restore are not part of it (their own tests are in test_core_refresh.py and
test_core_edges.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthbus.protocol import Duration, encode

from ._reference import Decider as ReferenceDecider
from .test_core_properties import configs, run, steps_among

# A shorter stale_after as well: verdicts lapse and points fall silent between the results
# drawn far more often, where the stale-evidence rules have their corner cases. Every
# degraded_quorum from 1 to 4 as often: with four vantage points, failing and warn ones
# below it (ignored, named in the reason) and at it are both common.
settings_ = st.builds(
    lambda c, s, k: {**c, "stale_after": Duration(s), "degraded_quorum": k},
    configs,
    st.sampled_from([4.0, 9.0, 15.0]),
    st.integers(1, 4),
)
maintenance = st.tuples(st.just("maintenance"), st.sampled_from([0.5, 5.0, 40.0, 600.0]))
reloads = st.tuples(st.just("reload"), st.none() | configs)
inputs = st.lists(st.one_of(steps_among(4), maintenance, reloads), min_size=5, max_size=80)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=settings_, steps=inputs, seed=st.integers(0, 1000))
def test_core_decides_like_the_reference(config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int) -> None:
    """Same inputs, times and seed: byte-identical events from the core and the reference."""
    fast, _ = run(config, steps, seed)
    plain, _ = run(config, steps, seed, decider=ReferenceDecider)
    assert [encode(e) for e in fast.events] == [encode(e) for e in plain.events]
    assert fast.decider.state("db") == plain.decider.state("db")
