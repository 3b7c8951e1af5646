"""Differential check against an independent model: two statements of the same rules.

``_model`` restates docs/coordinator.md (rules 1-6, operator control, refresh) without
the core's structure: it keeps every result, phase and verdict as a list and derives
verdicts, liveness, trial marks, the probation and the flap share by scanning them.
For random configurations and random streams of results, silences, replayed old
results, operator commands, maintenance windows, live reloads and refreshes, the real
:class:`~healthbus.coordinator.Decider` and the model must announce the same events,
field by field: target, seq, previous, state, breaker, attempt, failures, flapping,
retry_at, ramp, retired, evidence, unchanged_since and at.

``reason`` is left out: it is free text, and matching it would mean copying the core's
wording. The exact reasons are pinned by the pure example tests
(tests/coordinator/test_core_rules.py, test_core_integrity.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthbus.protocol import StateChanged

from ._model import Model
from .test_core_properties import run
from .test_core_reference import inputs, settings_

FORGET_AFTER = 10  # docs/coordinator.md, "Fixed limits"
COMPARED = (
    "target",
    "seq",
    "at",
    "previous",
    "state",
    "breaker",
    "attempt",
    "failures",
    "flapping",
    "retry_at",
    "ramp",
    "retired",
    "evidence",
    "unchanged_since",
)


def fields(e: StateChanged, stale_after: float) -> dict[str, Any]:
    """The compared fields; a refresh's evidence without points silent for more than
    10 x stale_after (see test_a_late_refresh_names_no_forgotten_point)."""
    out = {k: getattr(e, k) for k in COMPARED}
    if e.unchanged_since is not None:
        out["evidence"] = {
            p: v for p, v in e.evidence.items() if (e.at - v.at).total_seconds() <= FORGET_AFTER * stale_after
        }
    return out


def compare(config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int, refresh_after: float | None) -> None:
    real, _ = run(config, steps, seed, refresh_after)
    model, _ = run(config, steps, seed, refresh_after, decider=Model)
    for i, (a, b) in enumerate(zip(real.events, model.events, strict=False)):
        stale = float(config["stale_after"])
        assert fields(a, stale) == fields(b, stale), (i, a.reason, b.reason)
    assert len(real.events) == len(model.events), [e.reason for e in real.events[len(model.events) :]] or [
        e.reason for e in model.events[len(real.events) :]
    ]
    assert real.decider.state("db") == model.decider.state("db")


@settings(
    max_examples=max(300, settings().max_examples),
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    config=settings_,
    steps=inputs,
    seed=st.integers(0, 1000),
    refresh_after=st.none() | st.sampled_from([7.0, 20.0, 45.0]),
)
def test_core_decides_like_the_model(
    config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int, refresh_after: float | None
) -> None:
    """Same inputs, times and seed: the same events from the core and the model."""
    compare(config, steps, seed, refresh_after)
