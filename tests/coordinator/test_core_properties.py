"""Property tests of the decision core: invariants that hold for any input sequence."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from healthbus.coordinator._core import Decider, Rejected, is_refresh, quorum_need
from healthbus.protocol import BackoffSettings, Duration, FlapSettings, Outcome, StateChanged

from ._sim import T0, Sim, at, result, target

outcomes = st.sampled_from(["pass", "pass", "warn", "fail", "fail"])


def steps_among(probes: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """One step of :func:`run`, by vantage points ``p0`` to ``p<probes - 1>``."""
    probe = st.integers(0, probes - 1)
    results = st.tuples(st.just("result"), probe, outcomes, st.floats(0.0, 8.0))
    # Runs of one outcome from one vantage point cross the hysteresis thresholds more
    # often than independent draws would.
    runs = st.tuples(st.just("run"), probe, outcomes, st.floats(0.0, 4.0), st.integers(1, 5))
    return st.one_of(
        results,
        runs,
        runs,
        runs,
        st.tuples(st.just("tick"), st.floats(0.0, 30.0)),
        st.tuples(st.just("control"), st.sampled_from(["force-open", "disable", "reset", "reset", "status"])),
        st.tuples(st.just("stale"), probe),
    )


op = steps_among(3)
ops = st.lists(op, min_size=5, max_size=80)
configs = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(1, 4),
        "success_threshold": st.integers(1, 3),
        "quorum": st.sampled_from(["majority", "any", "all", 1, 2, 5]),
        # 1 (the default) most often; 4 is more than the three vantage points drawn (capped)
        "degraded_quorum": st.sampled_from([1, 1, 2, 3, 4]),
        "backoff": st.builds(
            BackoffSettings,
            base=st.sampled_from([Duration(0.5), Duration(1.0), Duration(5.0)]),
            multiplier=st.sampled_from([1.0, 2.0, 3.0]),
            max=st.sampled_from([Duration(5.0), Duration(60.0)]),
            jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
        ),
        "flap": st.builds(FlapSettings, enabled=st.booleans(), window=st.sampled_from([5, 21])),
    }
)


def run(
    config: dict[str, Any],
    steps: list[tuple[Any, ...]],
    seed: int,
    refresh_after: float | None = None,
    decider: Callable[..., Any] = Decider,
) -> tuple[Sim, dict[int, list[float]]]:
    """Drive the core (or ``decider``); return it and, per event index, the times results were heard before it.

    After every step the decider's state, breaker and seq are those of the last event it
    announced (a state never changes silently, e.g. a breaker closed without an event).
    """
    sim = Sim(target(**config), seed=seed, refresh_after=refresh_after, decider=decider)
    heard: dict[str, float] = {}
    heard_at_event: dict[int, list[float]] = {}

    def note(out: list[StateChanged]) -> None:
        for e in out:
            heard_at_event[e.seq - 1] = list(heard.values())

    def announced_as_decided(step: object) -> None:
        if sim.events:
            last = sim.events[-1]
            assert sim.decider.state("db") == (last.state, last.breaker, last.seq), (step, last)

    for step in steps:
        announced_as_decided(step)
        kind = step[0]
        if kind in ("result", "run"):
            _, p, outcome, dt, *rest = step
            for _ in range(rest[0] if rest else 1):
                note(sim.advance(dt))
                heard[f"p{p}"] = sim.t
                note(sim.feed(outcome, probe=f"p{p}", dt=0.0))
        elif kind == "tick":
            note(sim.advance(step[1]))
        elif kind == "control":
            note(sim.control(step[1]))
        elif kind == "report":  # a failure report from instance i<k>, seen by it `back` s ago
            _, k, dt, back = step
            note(sim.report(f"i{k}", dt=dt, seen=sim.t + dt - back))
        elif kind == "maintenance":
            note(sim.control_for("maintenance", step[1]))
        elif kind == "reload":  # new settings, or (None) retired and configured again
            if step[1] is None:
                note(sim.reload())
                note(sim.reload(target(**config)))
            else:
                note(sim.reload(target(**step[1])))
        else:  # a replayed old result is rejected and changes nothing
            before = sim.decider.state("db")
            try:
                sim.decider.on_result(result(sim.t - 1000.0, "fail", probe=f"p{step[1]}"), at(sim.t))
            except Rejected:
                pass
            else:
                raise AssertionError("an absurdly old result was accepted")
            assert sim.decider.state("db") == before
    announced_as_decided("end")
    return sim, heard_at_event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, steps=ops, seed=st.integers(0, 1000))
def test_invariants(config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int) -> None:
    """seq never skips or repeats; open never closes without a trial; unknown never healthy; backoff in bounds."""
    sim, heard_at_event = run(config, steps, seed)
    stale = 15.0
    backoff: BackoffSettings = config["backoff"]
    prev: StateChanged | None = None
    needs_trial = False
    for i, e in enumerate(sim.events):
        # seq is contiguous from 1 and previous is the state last announced
        assert e.seq == (prev.seq + 1 if prev else 1)
        assert e.previous == (prev.state if prev else "unknown")
        # an event means something changed
        if prev is not None:
            assert (e.state, e.breaker, e.attempt, e.flapping) != (
                prev.state,
                prev.breaker,
                prev.attempt,
                prev.flapping,
            )
        # a forced-open breaker only closes after a half-open trial; an open one only by
        # trials received from its retry_at on (or a half-open trial)
        if e.breaker == "forced_open":
            needs_trial = True
        elif e.breaker == "half_open":
            needs_trial = False
        elif e.breaker == "closed":
            assert not needs_trial, f"closed without a trial: {[x.breaker for x in sim.events[: i + 1]]}"
            if prev is not None and prev.breaker == "open":
                assert prev.retry_at is not None
                assert e.at >= prev.retry_at, "closed before its retry_at"
        # healthy only with a vantage point heard within stale_after
        if e.state == "healthy":
            now = (e.at - T0).total_seconds()
            assert any(now - h < stale for h in heard_at_event[i])
        # state/breaker pairs that make sense
        if e.breaker == "open":
            assert e.state == "unavailable"
            assert e.attempt >= 1
            assert e.retry_at is not None
            delay = (e.retry_at - e.at).total_seconds()
            # a fresh outage: trial_interval (0.5 s); a failed re-admission: backed off
            assert -1e-6 <= delay <= max(0.5, float(backoff.max)) + 1e-6
        else:
            assert e.retry_at is None
        if e.breaker == "half_open":
            assert e.state in ("recovering", "unknown")
        if e.breaker == "closed":
            assert e.state in ("healthy", "degraded", "unknown")
            assert e.attempt == 0
        if e.breaker == "forced_open":
            assert e.state == "unavailable"
        if e.breaker == "disabled":
            assert e.state == "unknown"
        prev = e


@settings(max_examples=50, deadline=None)
@given(config=configs, steps=ops, seed=st.integers(0, 1000))
def test_deterministic(config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int) -> None:
    """The same inputs, times and seed give exactly the same events."""
    a, _ = run(config, steps, seed)
    b, _ = run(config, steps, seed)
    assert a.events == b.events


@settings(max_examples=100, deadline=None)
@given(config=configs, steps=ops, seed=st.integers(0, 1000), cut=st.integers(0, 120))
def test_restore_continues_without_gap(
    config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int, cut: int
) -> None:
    """Restoring from the last event at any point gives a next seq exactly one higher."""
    sim, _ = run(config, steps[:cut], seed)
    if not sim.events:
        return
    last = sim.events[-1]
    fresh = Sim(target(**config), seed=seed, start=sim.t)
    assert fresh.decider.restore(last, at(sim.t))
    assert fresh.decider.state("db") == (last.state, last.breaker, last.seq)
    for step in steps[cut:]:
        if step[0] in ("result", "run"):
            for _ in range(step[4] if step[0] == "run" else 1):
                fresh.feed(step[2], probe=f"p{step[1]}", dt=step[3])
        elif step[0] == "tick":
            fresh.advance(step[1])
    events = fresh.events
    if events:
        assert events[0].seq == last.seq + 1
        assert events[0].previous == last.state
    for a, b in itertools.pairwise(events):
        assert b.seq == a.seq + 1
        assert b.previous == a.state


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, steps=ops, seed=st.integers(0, 1000), refresh_after=st.sampled_from([7.0, 20.0, 45.0]))
def test_refresh_keeps_the_chain(
    config: dict[str, Any], steps: list[tuple[Any, ...]], seed: int, refresh_after: float
) -> None:
    """With refresh: seq stays contiguous; an event changes something or is a refresh of an unchanged state."""
    sim, _ = run(config, steps, seed, refresh_after)
    prev: StateChanged | None = None
    for e in sim.events:
        assert e.seq == (prev.seq + 1 if prev else 1)
        assert e.previous == (prev.state if prev else "unknown")
        if prev is not None:
            same = (e.state, e.breaker, e.attempt, e.flapping) == (
                prev.state,
                prev.breaker,
                prev.attempt,
                prev.flapping,
            )
            assert same == is_refresh(e)
            if same:
                assert (e.at - prev.at).total_seconds() >= refresh_after - 1e-6
                assert (e.retry_at, e.features) == (prev.retry_at, prev.features)
        prev = e
    # a timer, with no traffic, announces something once refresh_after passed since the last event
    if prev is not None:
        (tail,) = sim.advance(refresh_after)
        assert tail.seq == prev.seq + 1


# ---------------------------------------------------------------- degraded_quorum

quorums = st.sampled_from(["majority", "any", "all", 2, 3, 5])
thresholds = st.tuples(st.integers(1, 3), st.integers(1, 3))
# One step of the fleet below: the honest points pass, then bad point ``index`` (modulo
# their number) says ``outcome`` (None: nothing, so bad points also fall silent).
noise = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["fail", "fail", "warn", "pass", None]), st.floats(0.0, 4.0)),
    min_size=1,
    max_size=60,
)


def _healthy_fleet(honest: int, bad: int, **config: Any) -> tuple[Sim, list[str], list[str]]:
    """``honest`` + ``bad`` vantage points, all passing until the target is healthy."""
    sim = Sim(target(**config))
    honest_ids = [f"h{i}" for i in range(honest)]
    bad_ids = [f"b{i}" for i in range(bad)]
    for _ in range(config["success_threshold"]):
        for p in honest_ids + bad_ids:
            sim.feed("pass", probe=p, dt=0.1)
    assert sim.states() == ["healthy"]
    return sim, honest_ids, bad_ids


def _below_quorum(quorum: Any, honest: int, failing: int) -> bool:
    """``failing`` (or fewer) failing points can never open the breaker, with ``honest``
    live points besides however many bad ones are live (the quorum grows with them)."""
    return all(f < quorum_need(quorum, honest + f) for f in range(failing + 1))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(2, 4),
    honest=st.integers(1, 3),
    bad=st.integers(0, 3),
    quorum=quorums,
    thresholds=thresholds,
    flap=st.booleans(),
    steps=noise,
)
def test_fewer_impaired_points_than_degraded_quorum_never_leave_healthy(
    k: int,
    honest: int,
    bad: int,
    quorum: Any,
    thresholds: tuple[int, int],
    flap: bool,
    steps: list[tuple[int, Any, float]],
) -> None:
    """degraded_quorum k, fewer than k bad points (failing, warn, passing or silent as they
    like, fewer than the quorum) and passing honest ones: a healthy target announces nothing
    more, neither degraded, unavailable nor flapping (the flap history records healthy)."""
    assume(bad < k and _below_quorum(quorum, honest, bad))
    fail_t, success_t = thresholds
    sim, honest_ids, bad_ids = _healthy_fleet(
        honest,
        bad,
        degraded_quorum=k,
        quorum=quorum,
        failure_threshold=fail_t,
        success_threshold=success_t,
        flap=FlapSettings(enabled=flap, window=5),
    )
    for index, outcome, dt in steps:
        sim.advance(dt)
        for p in honest_ids:
            sim.feed("pass", probe=p, dt=0.0)
        if bad_ids and outcome is not None:
            sim.feed(outcome, probe=bad_ids[index % bad], dt=0.0)
    assert sim.states() == ["healthy"], [(e.state, e.reason) for e in sim.events]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 4),
    unset=st.booleans(),
    honest=st.integers(0, 3),  # 0: every live point may turn, where the cap at live matters
    kinds=st.lists(st.sampled_from(["fail", "warn"]), min_size=1, max_size=3),
    passing_bad=st.integers(0, 2),
    quorum=quorums,
    thresholds=thresholds,
)
def test_degraded_from_degraded_quorum_impaired_points_on(
    k: int,
    unset: bool,
    honest: int,
    kinds: list[Outcome],
    passing_bad: int,
    quorum: Any,
    thresholds: tuple[int, int],
) -> None:
    """A healthy target with ``len(kinds)`` points turning failing or warn (fewer failing than
    the quorum) is degraded exactly when they are min(k, live) or more; with k = 1 (the
    default, unset or set) any one degrades it, as before degraded_quorum existed."""
    failing = kinds.count("fail")
    live = honest + len(kinds) + passing_bad
    assume(failing < quorum_need(quorum, live))
    if unset:
        k = 1
    fail_t, success_t = thresholds
    settings_: dict[str, Any] = {"quorum": quorum, "failure_threshold": fail_t, "success_threshold": success_t}
    if not unset:
        settings_["degraded_quorum"] = k
    sim, honest_ids, bad_ids = _healthy_fleet(honest, len(kinds) + passing_bad, **settings_)
    assert target(**settings_).degraded_quorum == k
    for _ in range(max(fail_t, success_t)):
        for p in honest_ids:
            sim.feed("pass", probe=p, dt=0.1)
        for i, p in enumerate(bad_ids):
            sim.feed(kinds[i] if i < len(kinds) else "pass", probe=p, dt=0.1)
    expected = "degraded" if len(kinds) >= min(k, live) else "healthy"
    assert (sim.last().state, sim.last().breaker) == (expected, "closed")
    assert sim.states() == (["healthy", "degraded"] if expected == "degraded" else ["healthy"])
