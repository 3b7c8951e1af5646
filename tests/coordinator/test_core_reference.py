"""Differential check: the decision core decides exactly like the plain reference decider.

The real core is tuned for speed (shared settings, run counters, a bit-mask flap history,
reasons built only when emitted); the reference in ``_reference`` is the same rules
written plainly. For random configurations and random streams of results, silences,
replayed old results and operator commands, both must emit the same events, compared as
encoded bytes. Refresh and restore are not part of it (the reference predates them; their
own tests are in test_core_refresh.py and test_core_edges.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthbus.protocol import encode

from ._reference import Decider as ReferenceDecider
from .test_core_properties import configs, ops, run


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, steps=ops, seed=st.integers(0, 1000))
def test_core_decides_like_the_reference(config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int) -> None:
    """Same inputs, times and seed: byte-identical events from the core and the reference."""
    fast, _ = run(config, steps, seed)
    plain, _ = run(config, steps, seed, decider=ReferenceDecider)
    assert [encode(e) for e in fast.events] == [encode(e) for e in plain.events]
    assert fast.decider.state("db") == plain.decider.state("db")
