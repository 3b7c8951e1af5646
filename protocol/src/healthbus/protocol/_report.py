"""Failure reports from service instances and the coordinator's confirmation requests.

A service instance that sees a dependency fail at the connection level (an adapter's
local trip, or code calling ``report_failure``) publishes a :class:`FailureReport` on
``<prefix>.report.<target>`` (core NATS, at most one per target per instance per
second). A report is a hint, never a verdict: the coordinator only asks the probe
workers that check the target to look now, with a :class:`ConfirmRequest` on
``<prefix>.confirm.<target>`` (one round per target per short window however many
reports arrive). The workers answer with ordinary ProbeResults, which the usual quorum
and hysteresis rules decide on.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from healthbus.protocol._messages import (
    PROTOCOL_VERSION,
    ErrorKind,
    ProbeId,
    TargetName,
    Timestamp,
    Version,
    _check_subject,
    decode_with,
)

#: Longest error text a report carries (it is redacted and cut to this before sending).
MAX_REPORT_ERROR: Final = 512


class FailureReport(msgspec.Struct, kw_only=True, frozen=True):
    """A service instance saw ``target`` fail (``<prefix>.report.<target>``, core NATS)."""

    target: TargetName
    instance: ProbeId
    """Who saw it: the reporting instance (default ``<client name>@<host>:<pid>``)."""
    kind: ErrorKind
    """What kind of failure: the ProbeResult error kinds (``other`` when none fits)."""
    at: Timestamp
    error: Annotated[str, msgspec.Meta(max_length=MAX_REPORT_ERROR)] | None = None
    """The error text, redacted (no credential ever), at most 512 characters."""
    v: Version = PROTOCOL_VERSION


class ConfirmRequest(msgspec.Struct, kw_only=True, frozen=True):
    """Check ``target`` now, outside the schedule (``<prefix>.confirm.<target>``, core NATS).

    Sent by the active coordinator after failure reports. Every probe worker that checks
    the target runs one check at once (unless the breaker holds it until ``retry_at``) and
    publishes the result as usual; nobody replies to the request itself.
    """

    target: TargetName
    round: Annotated[int, msgspec.Meta(ge=1)]
    """The target's confirmation round, counted by the coordinator since it took over."""
    at: Timestamp
    reports: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Reports that led to this round."""
    instances: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Distinct instances among them."""
    v: Version = PROTOCOL_VERSION


_report_decoder = msgspec.json.Decoder(FailureReport)
_confirm_decoder = msgspec.json.Decoder(ConfirmRequest)


def decode_failure_report(data: bytes | memoryview, *, subject_target: str | None = None) -> FailureReport:
    """Decode and validate a FailureReport (its target must match the subject's token)."""
    report = decode_with(_report_decoder, data, "FailureReport")
    _check_subject("FailureReport", report.target, subject_target)
    return report


def decode_confirm_request(data: bytes | memoryview, *, subject_target: str | None = None) -> ConfirmRequest:
    """Decode and validate a ConfirmRequest (its target must match the subject's token)."""
    request = decode_with(_confirm_decoder, data, "ConfirmRequest")
    _check_subject("ConfirmRequest", request.target, subject_target)
    return request
