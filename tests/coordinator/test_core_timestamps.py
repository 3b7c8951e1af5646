"""A vantage point keeps its latest ``observed_at`` as POSIX seconds when it is in UTC
(memory), and the datetime itself otherwise: the evidence must still repeat every
timestamp exactly as received, and ordering must hold to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from healthbus.coordinator._core import Rejected
from healthbus.protocol import Evidence, ProbeResult, StateChanged, encode

from ._sim import T0, Sim, at

PLUS_TWO = timezone(timedelta(hours=2))


def _result(observed_at: datetime, probe: str = "p1", outcome: str = "pass") -> ProbeResult:
    return ProbeResult(target="db", probe=probe, outcome=outcome, latency_ms=1.0, observed_at=observed_at)  # type: ignore[arg-type]


@pytest.mark.parametrize("micro", [0, 1, 123_456, 999_999, 500_000, 654_321])
def test_evidence_repeats_utc_and_offset_timestamps_exactly(micro: int) -> None:
    """The event's evidence has the very instants (and offsets) the results carried."""
    sim = Sim()
    utc = T0 + timedelta(seconds=1, microseconds=micro)
    offset = (T0 + timedelta(seconds=1, microseconds=micro)).astimezone(PLUS_TWO)
    events = []
    for step in range(2):  # success_threshold 2: p1's second result decides healthy
        sim.t = 1.0 + step * 0.5
        events += sim.decider.on_result(_result(utc + timedelta(seconds=step * 0.5), "p1"), at(sim.t))
        events += sim.decider.on_result(_result(offset + timedelta(seconds=step * 0.5), "p2"), at(sim.t))
    (event,) = events
    assert event.state == "healthy"
    want = {"p1": utc + timedelta(seconds=0.5), "p2": offset}  # p2's round-1 result, then
    ev = event.evidence
    assert ev["p1"].at == want["p1"]
    assert ev["p1"].at.tzinfo is UTC
    assert ev["p2"].at == want["p2"]
    assert ev["p2"].at.utcoffset() == timedelta(hours=2)
    # The same bytes on the wire as the results' own timestamps.
    wire = msgspec.json.decode(encode(event))["evidence"]
    sent = {p: msgspec.json.decode(encode(_result(t)))["observed_at"] for p, t in want.items()}
    assert {p: wire[p]["at"] for p in sent} == sent


@pytest.mark.parametrize("tz", [UTC, PLUS_TWO])
def test_one_microsecond_older_is_out_of_order(tz: timezone) -> None:
    """Ordering is kept to the microsecond, whichever form the latest one is kept in."""
    sim = Sim()
    first = (T0 + timedelta(seconds=1, microseconds=700_001)).astimezone(tz)
    sim.decider.on_result(_result(first), at(1.0))
    with pytest.raises(Rejected) as caught:
        sim.decider.on_result(_result(first - timedelta(microseconds=1)), at(1.1))
    assert caught.value.reason == "out_of_order"
    sim.decider.on_result(_result(first), at(1.2))  # the same instant is not older
    sim.decider.on_result(_result(first + timedelta(microseconds=1)), at(1.3))


def test_a_restored_degraded_targets_evidence_keeps_its_timestamps_and_offsets() -> None:
    """After a restart, a restored ``degraded`` target's impaired vantage points (seeded
    from the stored event) are evidence of its next event: it repeats their timestamps as
    the stored event had them, a ``+02:00`` one with its offset, a UTC one in UTC."""
    offset = (T0 + timedelta(seconds=90, microseconds=123_457)).astimezone(PLUS_TWO)
    utc = T0 + timedelta(seconds=91, microseconds=654_321)
    stored = StateChanged(
        target="db",
        seq=7,
        at=T0 + timedelta(seconds=95),
        previous="healthy",
        state="degraded",
        breaker="closed",
        reason="1/3 probes failing (refused); 1/3 probes warn",
        features=["cache"],
        evidence={
            "p1": Evidence(outcome="pass", error_kind=None, at=T0 + timedelta(seconds=92)),
            "p2": Evidence(outcome="fail", error_kind="refused", at=offset),
            "p3": Evidence(outcome="warn", error_kind=None, at=utc),
        },
    )
    sim = Sim(start=100.0)
    assert sim.decider.restore(stored, at(100.0))
    (event,) = sim.control("force-open")  # the next event, before any worker is heard again
    ev = event.evidence
    assert set(ev) == {"p2", "p3"}  # the impaired points the restore seeded
    assert ev["p2"].at == offset
    assert ev["p2"].at.utcoffset() == timedelta(hours=2)
    assert ev["p3"].at == utc
    assert ev["p3"].at.tzinfo is UTC
    # The same bytes on the wire as the stored event's.
    wire = msgspec.json.decode(encode(event))["evidence"]
    was = msgspec.json.decode(encode(stored))["evidence"]
    assert {p: wire[p]["at"] for p in ("p2", "p3")} == {p: was[p]["at"] for p in ("p2", "p3")}
