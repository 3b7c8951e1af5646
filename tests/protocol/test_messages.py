"""The wire messages: round trips and rejections (docs/contract.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthbus.protocol import (
    BREAKER_STATES,
    ERROR_KINDS,
    MAX_MESSAGE_BYTES,
    OUTCOMES,
    STATES,
    Evidence,
    ProbeResult,
    ProtocolError,
    StateChanged,
    decode_probe_result,
    decode_state_changed,
    encode,
    format_timestamp,
    is_refresh,
    parse_timestamp,
    refresh_origin,
)

#: Optional fields of StateChanged (with defaults: an older reader ignores them), each in docs/contract.md.
EXTENSIONS = {"flapping", "unchanged_since", "retired", "ramp", "coordinator", "term"}

T0 = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)


def _result(**changes: object) -> ProbeResult:
    base = ProbeResult(
        target="redis-main",
        probe="worker-1",
        outcome="fail",
        latency_ms=12.5,
        observed_at=T0,
        error_kind="refused",
        error="connection refused",
        details={"version": "7.0.15", "clients": 3, "ratio": 0.5, "replica": False},
    )
    return msgspec.structs.replace(base, **changes)


def _event(**changes: object) -> StateChanged:
    base = StateChanged(
        target="redis-main",
        seq=7,
        at=T0,
        previous="healthy",
        state="unavailable",
        breaker="open",
        reason="3/3 probes failed: refused",
        failures=3,
        attempt=1,
        retry_at=T0 + timedelta(seconds=2),
        features=["cache"],
        evidence={"worker-1": Evidence(outcome="fail", error_kind="refused", at=T0)},
    )
    return msgspec.structs.replace(base, **changes)


def test_probe_result_round_trip() -> None:
    """A ProbeResult survives encode → decode unchanged."""
    result = _result()
    assert decode_probe_result(encode(result), subject_target="redis-main") == result


def test_state_changed_round_trip() -> None:
    """A StateChanged survives encode → decode unchanged."""
    event = _event()
    assert decode_state_changed(encode(event), subject_target="redis-main") == event


def test_wire_shape_is_the_contract() -> None:
    """The JSON carries exactly the contract's field names, v=1 and RFC 3339 UTC timestamps."""
    wire = msgspec.json.decode(encode(_event()))
    contract = {
        "v",
        "target",
        "seq",
        "at",
        "previous",
        "state",
        "breaker",
        "reason",
        "failures",
        "attempt",
        "retry_at",
        "features",
        "evidence",
    }
    assert contract <= set(wire)
    assert set(wire) - contract <= EXTENSIONS
    assert wire["v"] == 1
    assert wire["at"] == "2026-11-25T12:00:00.123000Z"
    assert wire["evidence"]["worker-1"] == {
        "outcome": "fail",
        "error_kind": "refused",
        "at": "2026-11-25T12:00:00.123000Z",
    }
    probe = msgspec.json.decode(encode(_result()))
    assert set(probe) == {
        "v",
        "target",
        "probe",
        "outcome",
        "latency_ms",
        "observed_at",
        "error_kind",
        "error",
        "details",
    }


def test_refresh_is_an_explicit_field() -> None:
    """A refresh carries ``unchanged_since`` (on the wire too); a change carries null; older events decode."""
    change = _event()
    assert msgspec.json.decode(encode(change))["unchanged_since"] is None
    assert not is_refresh(change)
    assert refresh_origin(change) is None
    refresh = _event(previous="unavailable", at=T0 + timedelta(days=15), unchanged_since=T0)
    assert msgspec.json.decode(encode(refresh))["unchanged_since"] == "2026-11-25T12:00:00.123000Z"
    assert decode_state_changed(encode(refresh)) == refresh
    assert is_refresh(refresh)
    assert refresh_origin(refresh) == (T0, "3/3 probes failed: refused")
    older = msgspec.json.decode(encode(change))
    del older["unchanged_since"]  # as published before the field existed
    assert decode_state_changed(msgspec.json.encode(older)) == change


def test_only_unchanged_since_marks_a_refresh() -> None:
    """A reason that reads like a refresh does not make an event one: ``unchanged_since`` alone does."""
    lookalike = _event(
        previous="unavailable",
        reason="unchanged since 2026-11-25T12:00:00.123Z (re-announced so the state stream keeps it): 3/3 failed",
    )
    assert not is_refresh(lookalike)
    assert refresh_origin(lookalike) is None


def test_msg_id_is_target_and_seq() -> None:
    """The dedupe header value is <target>:<seq>."""
    assert _event(seq=42).msg_id == "redis-main:42"


@pytest.mark.parametrize(
    ("patch", "why"),
    [
        ({"outcome": "maybe"}, "$.outcome"),
        ({"latency_ms": "fast"}, "$.latency_ms"),
        ({"latency_ms": -1}, "$.latency_ms"),
        ({"target": "Redis_Main"}, "$.target"),
        ({"target": "-redis"}, "$.target"),
        ({"target": "a" * 65}, "$.target"),
        ({"error_kind": "boom"}, "$.error_kind"),
        ({"observed_at": "yesterday"}, "$.observed_at"),
        ({"observed_at": "2026-11-25T12:00:00"}, "$.observed_at"),
        ({"details": {"nested": {"no": 1}}}, "$.details"),
        ({"v": 0}, "$.v"),
    ],
)
def test_probe_result_rejects_bad_fields(patch: dict[str, object], why: str) -> None:
    """Wrong types, unknown enums, bad names and naive timestamps are rejected, naming the field."""
    wire = msgspec.json.decode(encode(_result()))
    wire.update(patch)
    with pytest.raises(ProtocolError, match=re.escape(f"at `{why}")):
        decode_probe_result(msgspec.json.encode(wire))


def test_missing_field_is_rejected() -> None:
    """A ProbeResult without an outcome is rejected."""
    wire = msgspec.json.decode(encode(_result()))
    del wire["outcome"]
    with pytest.raises(ProtocolError, match="outcome"):
        decode_probe_result(msgspec.json.encode(wire))


def test_target_subject_mismatch_is_rejected() -> None:
    """A result filed under another target's subject is rejected."""
    with pytest.raises(ProtocolError, match="does not match subject"):
        decode_probe_result(encode(_result()), subject_target="postgres-main")
    with pytest.raises(ProtocolError, match="does not match subject"):
        decode_state_changed(encode(_event()), subject_target="postgres-main")


@pytest.mark.parametrize("data", [b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"target": 1}'])
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    """Malformed bytes raise ProtocolError, never anything else."""
    with pytest.raises(ProtocolError):
        decode_probe_result(data)
    with pytest.raises(ProtocolError):
        decode_state_changed(data)


def test_oversized_message_is_rejected_unread() -> None:
    """A message larger than MAX_MESSAGE_BYTES is refused before decoding."""
    big = encode(_result(error="x" * 1000)) + b" " * MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_probe_result(big)


def test_unknown_fields_are_ignored() -> None:
    """Newer senders may add fields: older receivers ignore them (forward compatible)."""
    wire = msgspec.json.decode(encode(_result()))
    wire["added_in_v2"] = {"anything": [1, 2]}
    assert decode_probe_result(msgspec.json.encode(wire)) == _result()


def test_enums_match_the_contract() -> None:
    """The enumerations are exactly the contract's."""
    assert OUTCOMES == ("pass", "warn", "fail")
    assert ERROR_KINDS == (
        "timeout",
        "refused",
        "dns",
        "auth",
        "tls",
        "protocol",
        "unhealthy",
        "no_new_connections",
        "other",
    )
    assert STATES == ("unknown", "healthy", "degraded", "unavailable", "recovering")
    assert BREAKER_STATES == ("closed", "open", "half_open", "forced_open", "disabled")


def test_timestamps_format_and_parse() -> None:
    """format_timestamp gives RFC 3339 UTC with Z; parse_timestamp reads it and offsets back."""
    assert format_timestamp(T0) == "2026-11-25T12:00:00.123000Z"
    assert parse_timestamp("2026-11-25T12:00:00.123Z") == T0
    assert parse_timestamp("2026-11-25T13:00:00.123+01:00") == T0
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_timestamp("last tuesday")


@given(
    outcome=st.sampled_from(OUTCOMES),
    latency=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    kind=st.none() | st.sampled_from(ERROR_KINDS),
    text=st.none() | st.text(max_size=200),
    details=st.dictionaries(
        st.text(max_size=20),
        st.text(max_size=20)
        | st.integers(-(2**62), 2**62)
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False),
        max_size=5,
    ),
)
def test_any_valid_result_round_trips(
    outcome: str, latency: float, kind: str | None, text: str | None, details: dict[str, object]
) -> None:
    """Property: every valid ProbeResult round-trips exactly."""
    result = _result(outcome=outcome, latency_ms=latency, error_kind=kind, error=text, details=details)
    assert decode_probe_result(encode(result)) == result
