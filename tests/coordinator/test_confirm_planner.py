"""ConfirmPlanner: reports to confirmation rounds (pure; time passed in)."""

from __future__ import annotations

import random

import pytest
from nats.aio.client import Client

from healthbus.coordinator import CoordinatorService
from healthbus.coordinator._core import ConfirmPlanner, Decider
from healthbus.coordinator._counters import Counters
from healthbus.coordinator._reports import ReportIntake
from healthbus.protocol import (
    MAX_MESSAGE_BYTES,
    FailureReport,
    Outcome,
    StateChanged,
    Subjects,
    encode,
    load_config_text,
)
from healthbus.protocol.testing import ManualClock

from ._sim import at, result, target


def test_one_round_per_target_per_window_however_many_reports() -> None:
    """The first report starts a round; others within the window are coalesced; each target has its own."""
    p = ConfirmPlanner(window=1.0, flood_gap=0.5)
    assert p.on_report("redis", "a", 10.0, held=False) == "round"
    assert [p.on_report("redis", f"i{n}", 10.0 + n / 100, held=False) for n in range(50)] == ["coalesced"] * 50
    assert p.on_report("pg", "a", 10.2, held=False) == "round"  # another target is not slowed down
    assert p.take_pending("redis") == 51
    assert p.on_report("redis", "a", 11.0, held=False) == "round"
    assert p.rounds == {"redis": 2, "pg": 1}
    assert p.reports == {"redis": 52, "pg": 1}
    assert p.instances("redis") == 51
    assert p.round_number("redis") == 2
    assert p.take_pending("redis") == 1


def test_floods_are_dropped_and_held_targets_get_no_round() -> None:
    """Faster than flood_gap from one instance is a flood (not counted as a report); held: counted, no round."""
    p = ConfirmPlanner(window=1.0, flood_gap=0.5)
    assert p.on_report("redis", "a", 0.0, held=True) == "held"
    assert p.on_report("redis", "a", 0.1, held=False) == "flood"
    assert p.on_report("redis", "a", 0.6, held=False) == "round"
    assert p.outcomes == {("redis", "held"): 1, ("redis", "flood"): 1, ("redis", "round"): 1}
    assert p.reports == {"redis": 2}
    assert p.rounds == {"redis": 1}


def test_memory_is_bounded_and_forget_drops_a_target() -> None:
    """At most max_pairs (target, instance) pairs and max_instances per target; forget clears a target."""
    p = ConfirmPlanner(window=1.0, flood_gap=0.5, max_pairs=10, max_instances=5)
    for n in range(100):
        p.on_report("redis", f"i{n}", float(n), held=False)
    assert len(p._last_pair) == 10
    assert p.instances("redis") == 5
    p.forget("redis")
    assert p.instances("redis") == 0
    assert p.reports == {}
    assert p.outcomes == {}
    with pytest.raises(ValueError, match=">= 0"):
        ConfirmPlanner(window=-1)


async def test_report_intake_drops_bad_input_and_holds_during_maintenance() -> None:
    """Unknown target, oversized, malformed, mismatched: dropped and counted; maintenance holds.

    No NATS here: the intake's round goes to a connection it does not have (counted as not
    published), which is enough to see the decisions; the wire path is in tests/e2e/test_reports.py.
    """
    clock = [100.0]
    decider = Decider([target("db")], rng=random.Random(0), now=at(clock[0]))
    counters = Counters(ManualClock())
    intake = ReportIntake(ConfirmPlanner(), counters, subjects=Subjects("hb"), now=lambda: at(clock[0]))
    intake.bind(decider, None, list)  # type: ignore[arg-type]

    def report(subject_target: str, body_target: str = "db", instance: str = "i1") -> None:
        intake.handle_report(
            f"hb.report.{subject_target}",
            encode(FailureReport(target=body_target, instance=instance, kind="refused", at=at(clock[0]).wall)),
        )

    report("nope", "nope")
    intake.handle_report("hb.report.db", b"{not json")
    intake.handle_report("hb.report.db", b" " * (MAX_MESSAGE_BYTES + 1))
    report("db", "other")
    assert counters.dropped == {
        "report_unknown_target": 1,
        "report_malformed": 2,
        "report_oversized": 1,
    }
    report("db")
    assert intake.planner.rounds == {"db": 1}
    assert intake.publish_errors == 1  # no connection: counted, never raised
    report("db")
    assert counters.dropped["report_flood"] == 1
    decider.control("maintenance", "db", "planned", at(clock[0]), duration=60.0)
    clock[0] += 2.0
    report("db", instance="i2")
    assert intake.planner.outcomes[("db", "held")] == 1
    assert intake.planner.rounds == {"db": 1}


def test_report_intake_reopens_a_ramp_from_reports() -> None:
    """Reports of two instances during a re-admission ramp: the decider re-opens the breaker
    and the intake hands the event on to be published; no round is sent for an open target."""
    clock = [100.0]
    decider = Decider([target("db")], rng=random.Random(0), now=at(clock[0]))
    emitted: list[StateChanged] = []
    intake = ReportIntake(ConfirmPlanner(), Counters(ManualClock()), subjects=Subjects("hb"), now=lambda: at(clock[0]))
    intake.bind(decider, None, emitted.extend)  # type: ignore[arg-type]

    def step(outcome: Outcome) -> None:
        clock[0] += 0.2
        emitted.extend(decider.tick(at(clock[0])))
        emitted.extend(decider.on_result(result(clock[0], outcome), at(clock[0])))

    def report(instance: str) -> None:
        clock[0] += 0.01
        body = FailureReport(target="db", instance=instance, kind="refused", at=at(clock[0]).wall)
        intake.handle_report("hb.report.db", encode(body))

    for outcome in ("pass", "pass", "fail", "fail", "fail"):
        step(outcome)
    assert emitted[-1].breaker == "open"
    report("i1")
    report("i2")
    assert intake.planner.outcomes == {("db", "held"): 2}  # open: the trials look, reports add no round
    for _ in range(5):
        step("pass")
    readmitted = emitted[-1]
    assert readmitted.ramp is not None
    report("i1")
    assert emitted[-1] is readmitted  # one instance is not enough
    report("i3")
    assert (emitted[-1].breaker, emitted[-1].attempt) == ("open", 2)
    assert "2 instances reported failures (refused)" in emitted[-1].reason


def test_the_window_is_a_coordinator_setting() -> None:
    """``[coordinator] confirm_window`` (default 1 s) is the planner's window; 0 starts a round per report."""
    assert load_config_text("").coordinator.confirm_window == 1.0
    config = load_config_text('[coordinator]\nlease_ttl = "0s"\nconfirm_window = "250ms"\n')
    assert CoordinatorService(config, Client()).reports.planner.window == 0.25
    p = ConfirmPlanner(window=0.0, flood_gap=0.5)
    assert [p.on_report("redis", f"i{n}", 10.0, held=False) for n in range(3)] == ["round"] * 3
