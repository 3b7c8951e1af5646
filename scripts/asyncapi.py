"""The AsyncAPI 3.0 document of the healthbus bus contract, built from the real schemas.

Every subject healthbus uses is a channel, every wire message a component whose payload
is the JSON Schema msgspec derives from the protocol Struct itself
(``msgspec.json.schema_components``), so the document can never drift from the code;
``tests/cli/test_asyncapi.py`` fails when the committed ``docs/asyncapi.json`` is
stale. Regenerate it with::

    python scripts/asyncapi.py -o docs/asyncapi.json

A development script, not part of any wheel: only the repository needs it.

Why not ``faststream docs gen``: FastStream 0.7.8 builds payload schemas through pydantic,
which cannot follow the ``$ref`` of one msgspec Struct to another (StateChanged ->
Evidence, ControlReply -> StateChanged) without pydantic internals, and its AsyncAPI
model has no channel parameters, message headers or operation replies, so it could not
state ``Nats-Msg-Id``, the ``{target}`` rule or the control request/reply. The document
written here still parses as FastStream's own AsyncAPI 3.0 model, so
``faststream docs serve docs/asyncapi.json`` renders it.

Invariants: the output is deterministic (same code, same bytes); the protocol package is
only read, never changed; nothing here touches the network.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from healthbus.protocol import (
    CONTROL_COMMANDS,
    DEFAULT_PREFIX,
    PROTOCOL_VERSION,
    TARGET_PATTERN,
    ConfirmRequest,
    ControlReply,
    ControlRequest,
    Evidence,
    FailureReport,
    GroupChanged,
    GroupMember,
    ProbeResult,
    ReloadNotice,
    StateChanged,
    StateDigest,
    StreamSettings,
    Subjects,
    WorkerHeartbeat,
    encode,
)

ASYNCAPI_VERSION: Final = "3.0.0"
DEFAULT_SERVER: Final = "127.0.0.1:4222"

#: The wire messages, in the order they appear in the document.
MESSAGE_TYPES: Final[tuple[type[msgspec.Struct], ...]] = (
    ProbeResult,
    StateChanged,
    ControlRequest,
    ControlReply,
    WorkerHeartbeat,
    ReloadNotice,
    FailureReport,
    ConfirmRequest,
    GroupChanged,
    StateDigest,
)

_SCHEMA_REF: Final = "#/components/schemas/{name}"

# Fixed example values: the document must be byte-for-byte reproducible.
_T0: Final = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
_T1: Final = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
_STATE_EXAMPLE: Final = StateChanged(
    target="redis-main",
    seq=7,
    at=_T1,
    previous="healthy",
    state="unavailable",
    breaker="open",
    reason="2/2 probes failed: refused",
    failures=3,
    attempt=1,
    retry_at=datetime(2026, 1, 1, 12, 0, 6, tzinfo=UTC),
    features=["cache"],
    evidence={
        "probe-a": Evidence(outcome="fail", error_kind="refused", at=_T0),
        "probe-b": Evidence(outcome="fail", error_kind="refused", at=_T0),
    },
    coordinator="coord-1-4242",
    term=118,
)
_EXAMPLES: Final[dict[str, msgspec.Struct]] = {
    "ProbeResult": ProbeResult(
        target="redis-main",
        probe="probe-a",
        outcome="fail",
        latency_ms=1.8,
        observed_at=_T0,
        error_kind="refused",
        error="connection refused",
    ),
    "StateChanged": _STATE_EXAMPLE,
    "ControlRequest": ControlRequest(target="redis-main", reason="maintenance window"),
    "ControlReply": ControlReply(ok=True, event=_STATE_EXAMPLE),
    "WorkerHeartbeat": WorkerHeartbeat(worker="probe-a", at=_T0, heartbeat_s=2.0, targets=5),
    "ReloadNotice": ReloadNotice(sender="coordinator-host-1:4242"),
    "FailureReport": FailureReport(
        target="redis-main",
        instance="orders-api@web-1:4242",
        kind="refused",
        at=_T0,
        error="ConnectionError: Error 111 connecting to 10.0.0.5:6379. Connection refused.",
    ),
    "ConfirmRequest": ConfirmRequest(target="redis-main", round=3, at=_T0, reports=12, instances=9),
    "GroupChanged": GroupChanged(
        group="pg",
        seq=4,
        at=_T1,
        previous="healthy",
        state="degraded",
        policy="least-latency",
        members=[
            GroupMember(target="pg-a", state="healthy", available=True, latency_ms=1.2),
            GroupMember(target="pg-b", state="healthy", available=True, latency_ms=3.4),
            GroupMember(target="pg-c", state="unavailable", available=False, latency_ms=1.9),
        ],
        available=2,
        min_healthy=3,
        primary="pg-a",
        reason="2/3 members in (min_healthy 3); out: pg-c",
    ),
    "StateDigest": StateDigest(at=_T1, seqs={"redis-main": 7, "postgres-main": 12}),
}

_SUMMARIES: Final[dict[str, str]] = {
    "ProbeResult": "One check of one target from one vantage point (a probe worker).",
    "StateChanged": "A coordinator verdict for one target: its state, breaker and why.",
    "ControlRequest": "An operator command for one target (the reason goes into the audit log).",
    "ControlReply": "Whether the command was applied, with the StateChanged it produced or the current one.",
    "WorkerHeartbeat": "A probe worker announcing itself; live while heard within 3 heartbeat periods.",
    "ReloadNotice": "Re-read your configuration file: sent by the coordinator after `healthbus reload`.",
    "FailureReport": "A service instance saw a dependency fail at the connection level: a hint, never a verdict.",
    "ConfirmRequest": "Check this target now, outside the schedule: the coordinator's answer to failure reports.",
    "GroupChanged": "A group of targets: its state, who is in and out, each member's recent latency.",
    "StateDigest": "Every configured target's latest seq: what a reconnecting subscriber compares with.",
}


def message_schemas() -> dict[str, Any]:
    """JSON Schema of every wire message (and what they nest), keyed by Struct name."""
    _, components = msgspec.json.schema_components(MESSAGE_TYPES, ref_template=_SCHEMA_REF)
    return {name: normalise_schema(schema) for name, schema in components.items()}


def normalise_schema(node: Any) -> Any:
    """The schema as every msgspec release would write it.

    How msgspec renders a schema has changed between releases: 0.23 keeps the indentation
    of class docstrings in ``description``, 0.19 lists ``null`` first in an ``anyOf``.
    Normalising here (descriptions as ``inspect.cleandoc`` leaves them, ``null`` last)
    keeps the document byte for byte the same whichever version is installed.
    """
    if isinstance(node, list):
        return [normalise_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            out[key] = inspect.cleandoc(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = sorted(normalise_schema(value), key=lambda option: option == {"type": "null"})
        else:
            out[key] = normalise_schema(value)
    return out


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(parts)}


def _channel(
    address: str | None,
    title: str,
    description: str,
    message: str,
    *,
    params: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One AsyncAPI channel: its address, title and description, the parameters named in its
    address and the one message it carries (all defined under ``components``)."""
    channel: dict[str, Any] = {"address": address, "title": title, "description": description}
    if params:
        channel["parameters"] = {name: _ref("components", "parameters", name) for name in params}
    channel["messages"] = {message: _ref("components", "messages", message)}
    return channel | (extra or {})


def _message(name: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": _SUMMARIES[name],
        "contentType": "application/json",
        "payload": _ref("components", "schemas", name),
    }
    if headers is not None:
        message["headers"] = headers
    example: dict[str, Any] = {"payload": json.loads(encode(_EXAMPLES[name]))}
    if name == "StateChanged":
        example["headers"] = {"Nats-Msg-Id": _STATE_EXAMPLE.msg_id}
    if name == "GroupChanged":
        example["headers"] = {"Nats-Msg-Id": _EXAMPLES[name].msg_id}  # type: ignore[attr-defined]
    message["examples"] = [example]
    return message


def build_document(prefix: str = DEFAULT_PREFIX, *, server: str = DEFAULT_SERVER) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bus under ``prefix`` (a JSON-ready dict)."""
    subjects = Subjects(prefix)
    stream = StreamSettings.for_prefix(prefix)
    target_rule = f"target name, one NATS token matching {TARGET_PATTERN}"
    msg_id_headers = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": (
                    "`<target>:<seq>`: a re-publish inside the stream's duplicate window "
                    "(after a coordinator crash) is dropped by JetStream."
                ),
                "examples": [_STATE_EXAMPLE.msg_id],
            }
        },
        "required": ["Nats-Msg-Id"],
    }
    group_id_headers = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "`group:<group>:<seq>`: a re-publish inside the duplicate window is dropped.",
                "examples": ["group:pg:4"],
            }
        },
        "required": ["Nats-Msg-Id"],
    }
    channels: dict[str, Any] = {
        "probe": _channel(
            f"{subjects.prefix}.probe.{{target}}.{{probe}}",
            "Probe results",
            (
                "Core NATS. Probe workers publish one ProbeResult per check on the subject of their "
                f"own probe id; the coordinator subscribes to `{subjects.probe_all}`. A result whose "
                "`target` differs from the target token is dropped (`subject_mismatch`), one whose "
                "`probe` does not map to the probe token is dropped (`probe_mismatch`): NATS "
                "permissions on this subject bind a credential to its own vantage point."
            ),
            "ProbeResult",
            params=("target", "probe"),
        ),
        "state": _channel(
            f"{subjects.prefix}.state.{{target}}",
            "State changes (audit log)",
            (
                f"JetStream stream `{stream.name}` (subjects `{subjects.state_all}`, file storage, "
                "limits retention by age). Only the coordinator publishes. The last message per "
                "subject is each target's current state (read with `deliver_policy=last_per_subject`, "
                "then stay live); the history is the audit log. `seq` is per target, from 1, +1 per "
                "event, never repeated or skipped."
            ),
            "StateChanged",
            params=("target",),
            extra={
                "x-nats-jetstream": {
                    "stream": stream.name,
                    "subjects": list(stream.subjects),
                    "storage": stream.storage,
                    "retention": "limits",
                    "max_age_s": stream.max_age_s,
                    "duplicate_window_s": stream.duplicate_window_s,
                }
            },
        ),
        "control": _channel(
            f"{subjects.prefix}.ctl.{{command}}",
            "Operator control",
            (
                "Core NATS request/reply. The coordinator subscribes to "
                f"`{subjects.ctl_all}` and answers every request with a ControlReply."
            ),
            "ControlRequest",
            params=("command",),
        ),
        "controlReply": _channel(
            None,
            "Control replies",
            "The requester's NATS reply inbox (the request's reply subject).",
            "ControlReply",
        ),
        "workerHeartbeat": _channel(
            f"{subjects.prefix}.worker.heartbeat.{{worker}}",
            "Probe-worker membership",
            (
                "Core NATS. Every probe worker publishes a WorkerHeartbeat each `[probes] heartbeat` "
                "and one with `stopping: true` on shutdown; workers subscribe to "
                f"`{subjects.worker('heartbeat', '*')}` (sharding hashes targets over the live members)."
            ),
            "WorkerHeartbeat",
            params=("worker",),
        ),
        "workerReload": _channel(
            subjects.worker("reload"),
            "Live reload",
            (
                "Core NATS. After `healthbus reload` the active coordinator publishes a ReloadNotice; "
                "every probe worker and standby coordinator re-reads its configuration file."
            ),
            "ReloadNotice",
        ),
        "report": _channel(
            f"{subjects.prefix}.report.{{target}}",
            "Failure reports",
            (
                "Core NATS. A service instance (HealthClient.report_failure, or the Redis and SQLAlchemy "
                "adapters on a connection-level error) publishes a FailureReport, at most one per target per "
                f"instance per second; the active coordinator subscribes to `{subjects.report_all}`. Reports "
                "never decide a state: they only start a confirmation round. Reports for unknown targets and "
                "floods from one instance are dropped and counted."
            ),
            "FailureReport",
            params=("target",),
        ),
        "confirm": _channel(
            f"{subjects.prefix}.confirm.{{target}}",
            "Confirmation requests",
            (
                "Core NATS. After failure reports the active coordinator publishes one ConfirmRequest per "
                "target per confirmation window; every probe worker that checks the target (subscribed to "
                f"`{subjects.confirm_all}`) checks it at once, unless an open breaker holds it until "
                "`retry_at`, and publishes an ordinary ProbeResult. Nobody replies to the request."
            ),
            "ConfirmRequest",
            params=("target",),
        ),
        "group": _channel(
            f"{subjects.prefix}.group.{{group}}",
            "Group changes",
            (
                f"JetStream stream `{stream.name}` (subjects `{subjects.group_all}`), with "
                "`Nats-Msg-Id: group:<group>:<seq>`. Only the coordinator publishes, when a `[[groups]]` "
                "entry's state changes, a member comes in or goes out or changes state, or a member's "
                "recent latency moved markedly. Each message is the whole group: a reader needs the last "
                "one per subject only (HealthClient.pick() reads them)."
            ),
            "GroupChanged",
            params=("group",),
        ),
        "digest": _channel(
            subjects.digest,
            "State digest",
            (
                "Core NATS. The active coordinator publishes a StateDigest (every configured target's highest "
                "sent seq) every `[coordinator] digest_interval` and at once when its connection comes back. "
                "A subscriber that reconnected listens here until it has one, then reads from the state "
                "stream only the targets whose seq it lacks; nobody listens while the fleet follows live. "
                "A digest over 64 KiB goes out as `parts` messages back to back (same `at`, `part` 1..`parts`), "
                "which a reader merges before it compares."
            ),
            "StateDigest",
        ),
    }

    def op(action: str, channel: str, message: str, summary: str, **extra: Any) -> dict[str, Any]:
        return {
            "action": action,
            "channel": _ref("channels", channel),
            "summary": summary,
            "messages": [_ref("channels", channel, "messages", message)],
            **extra,
        }

    control_reply = {
        "channel": _ref("channels", "controlReply"),
        "messages": [_ref("channels", "controlReply", "messages", "ControlReply")],
    }
    operations: dict[str, Any] = {
        "publishProbeResult": op("send", "probe", "ProbeResult", "Probe workers publish each check's result."),
        "receiveProbeResult": op("receive", "probe", "ProbeResult", "The coordinator reads every probe result."),
        "publishStateChanged": op(
            "send",
            "state",
            "StateChanged",
            "The coordinator (the lease holder) publishes each verdict to the state stream, with Nats-Msg-Id.",
        ),
        "receiveStateChanged": op(
            "receive",
            "state",
            "StateChanged",
            "Services (HealthClient), probe workers (open breakers), the CLI and the dashboard read the stream.",
        ),
        "requestControl": op(
            "send",
            "control",
            "ControlRequest",
            "An operator (`healthbus ctl`) asks the coordinator to force-open, put in maintenance, disable, "
            "reset or report a target, or to reload its configuration.",
            reply=control_reply,
        ),
        "handleControl": op(
            "receive",
            "control",
            "ControlRequest",
            "The coordinator applies the command and replies.",
            reply=control_reply,
        ),
        "publishWorkerHeartbeat": op(
            "send", "workerHeartbeat", "WorkerHeartbeat", "Each probe worker announces itself."
        ),
        "receiveWorkerHeartbeat": op(
            "receive", "workerHeartbeat", "WorkerHeartbeat", "Probe workers track the live members."
        ),
        "publishReloadNotice": op(
            "send", "workerReload", "ReloadNotice", "The coordinator, having reloaded, tells the others."
        ),
        "receiveReloadNotice": op(
            "receive",
            "workerReload",
            "ReloadNotice",
            "Probe workers and standby coordinators re-read their configuration files.",
        ),
        "publishFailureReport": op(
            "send", "report", "FailureReport", "A service instance reports a connection-level failure it saw."
        ),
        "receiveFailureReport": op(
            "receive",
            "report",
            "FailureReport",
            "The active coordinator counts reports and starts confirmation rounds.",
        ),
        "publishConfirmRequest": op(
            "send", "confirm", "ConfirmRequest", "The active coordinator asks for a check now (one round per window)."
        ),
        "receiveConfirmRequest": op(
            "receive", "confirm", "ConfirmRequest", "Probe workers that check the target run one check at once."
        ),
        "publishGroupChanged": op(
            "send", "group", "GroupChanged", "The coordinator (the lease holder) publishes each group change."
        ),
        "receiveGroupChanged": op(
            "receive", "group", "GroupChanged", "Services (HealthClient.pick), the CLI and the dashboard read them."
        ),
        "publishStateDigest": op(
            "send", "digest", "StateDigest", "The active coordinator announces every target's latest seq."
        ),
        "receiveStateDigest": op(
            "receive", "digest", "StateDigest", "A reconnected subscriber learns what it missed before it reads."
        ),
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "healthbus",
            "version": str(PROTOCOL_VERSION),
            "description": (
                "The healthbus wire contract: probe workers check dependencies, one coordinator decides, "
                "every service reads the verdicts over NATS. Messages are msgspec JSON (UTF-8), at most "
                "64 KiB, each with a version field `v`; receivers ignore unknown fields; timestamps are "
                "RFC 3339 UTC. `info.version` is that wire version. Generated from `healthbus.protocol` "
                f"for the subject prefix `{subjects.prefix}`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": server,
                "pathname": "",  # as FastStream writes it; its AsyncAPI model requires the field
                "protocol": "nats",
                "description": "The NATS server (`[bus] url`, `--nats` or `NATS_URL`); JetStream enabled.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": message_schemas(),
            "messages": {
                "ProbeResult": _message("ProbeResult"),
                "StateChanged": _message("StateChanged", headers=msg_id_headers),
                "ControlRequest": _message("ControlRequest"),
                "ControlReply": _message("ControlReply"),
                "WorkerHeartbeat": _message("WorkerHeartbeat"),
                "ReloadNotice": _message("ReloadNotice"),
                "FailureReport": _message("FailureReport"),
                "ConfirmRequest": _message("ConfirmRequest"),
                "GroupChanged": _message("GroupChanged", headers=group_id_headers),
                "StateDigest": _message("StateDigest"),
            },
            "parameters": {
                "target": {"description": target_rule, "examples": ["redis-main"]},
                "probe": {
                    "description": (
                        "the probe id (the result's `probe`) with every character outside "
                        "A-Za-z0-9_- replaced by `_`; the vantage point is known by this token"
                    ),
                    "examples": ["probe-a"],
                },
                "group": {
                    "description": "group name (`[[groups]]`), the same rule as a target name",
                    "examples": ["pg"],
                },
                "command": {"description": "the control command", "enum": list(CONTROL_COMMANDS)},
                "worker": {
                    "description": (
                        "the worker id with every character outside A-Za-z0-9_- replaced by `_` "
                        "(the message carries the real id)"
                    ),
                    "examples": ["probe-a"],
                },
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    """The document as the JSON text committed in ``docs/asyncapi.json``."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python scripts/asyncapi.py [-o FILE] [--prefix P] [--server HOST:PORT] [--check]``."""
    parser = argparse.ArgumentParser(
        prog="python scripts/asyncapi.py", description="Write the AsyncAPI 3.0 document of the healthbus bus."
    )
    parser.add_argument("-o", "--out", help="output file (default: stdout)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="subject prefix (default: %(default)s)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="NATS host:port to list (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from the generated document")
    args = parser.parse_args(argv)
    try:
        text = render(build_document(args.prefix, server=args.server))
    except ValueError as exc:  # a bad prefix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        if args.check:
            parser.error("--check needs --out")
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            print(f"{out} is out of date: regenerate it with python scripts/asyncapi.py -o {out}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
