"""FailureReport and ConfirmRequest: the wire shape, validation, subjects."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from healthbus.protocol import (
    MAX_REPORT_ERROR,
    ConfirmRequest,
    FailureReport,
    ProtocolError,
    Subjects,
    decode_confirm_request,
    decode_failure_report,
    encode,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _report(**patch: object) -> dict[str, object]:
    body: dict[str, object] = {
        "target": "redis-main",
        "instance": "orders@web-1:42",
        "kind": "refused",
        "at": "2026-01-01T12:00:00Z",
        "error": "Connection refused",
        "v": 1,
    }
    body.update(patch)
    return body


def test_report_and_confirm_round_trip_with_the_contract_shape() -> None:
    """Both encode to the documented JSON fields and decode back unchanged."""
    report = FailureReport(target="redis-main", instance="orders@web-1:42", kind="refused", at=T0, error="x")
    assert json.loads(encode(report)) == {
        "target": "redis-main",
        "instance": "orders@web-1:42",
        "kind": "refused",
        "at": "2026-01-01T12:00:00Z",
        "error": "x",
        "v": 1,
    }
    assert decode_failure_report(encode(report), subject_target="redis-main") == report
    confirm = ConfirmRequest(target="redis-main", round=2, at=T0, reports=5, instances=3)
    assert json.loads(encode(confirm)) == {
        "target": "redis-main",
        "round": 2,
        "at": "2026-01-01T12:00:00Z",
        "reports": 5,
        "instances": 3,
        "v": 1,
    }
    assert decode_confirm_request(encode(confirm), subject_target="redis-main") == confirm


@pytest.mark.parametrize(
    ("patch", "why"),
    [
        ({"target": "Bad.Name"}, "target"),
        ({"kind": "meteor"}, "kind"),
        ({"instance": ""}, "instance"),
        ({"instance": "x" * 129}, "instance"),
        ({"error": "e" * (MAX_REPORT_ERROR + 1)}, "error"),
        ({"at": "2026-01-01T12:00:00"}, "at"),
        ({"v": 0}, "v"),
    ],
)
def test_report_rejects_bad_fields(patch: dict[str, object], why: str) -> None:
    """Every field is validated; the error names the message and the field."""
    with pytest.raises(ProtocolError, match=f"invalid FailureReport.*{why}"):
        decode_failure_report(json.dumps(_report(**patch)).encode())


def test_subject_mismatch_and_unknown_fields() -> None:
    """A report filed under another target's subject is refused; unknown fields are ignored."""
    data = json.dumps(_report(extra="later")).encode()
    assert decode_failure_report(data).target == "redis-main"
    with pytest.raises(ProtocolError, match="does not match subject token"):
        decode_failure_report(data, subject_target="pg-main")
    bad = json.dumps({"target": "a", "round": 0, "at": "2026-01-01T12:00:00Z"}).encode()
    with pytest.raises(ProtocolError, match="invalid ConfirmRequest"):
        decode_confirm_request(bad)


def test_report_and_confirm_subjects() -> None:
    """<prefix>.report.<target> and <prefix>.confirm.<target>, with parsers and wildcards."""
    s = Subjects("acme.hb")
    assert s.report("redis-main") == "acme.hb.report.redis-main"
    assert s.confirm("redis-main") == "acme.hb.confirm.redis-main"
    assert s.report_all == "acme.hb.report.*"
    assert s.confirm_all == "acme.hb.confirm.*"
    assert s.report_target("acme.hb.report.pg") == "pg"
    assert s.report_target("acme.hb.confirm.pg") is None
    assert s.confirm_target("acme.hb.confirm.pg") == "pg"
    assert s.confirm_target("acme.hb.confirm.Bad") is None
    with pytest.raises(ValueError, match="invalid target name"):
        s.report("a.b")
