"""The AsyncAPI 3.0 document of the bus (docs/asyncapi.json) matches the code."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from healthbus.protocol import (
    BREAKER_STATES,
    CONTROL_COMMANDS,
    ERROR_KINDS,
    OUTCOMES,
    STATES,
    Subjects,
    decode_control_reply,
    decode_control_request,
    decode_group_changed,
    decode_probe_result,
    decode_state_changed,
    decode_worker_heartbeat,
    worker_token,
)
from scripts.asyncapi import MESSAGE_TYPES, build_document, main, normalise_schema, render  # a dev script, in no wheel

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"

DECODERS: dict[str, Callable[[bytes], msgspec.Struct]] = {
    "ProbeResult": decode_probe_result,
    "StateChanged": decode_state_changed,
    "ControlRequest": decode_control_request,
    "ControlReply": decode_control_reply,
    "WorkerHeartbeat": decode_worker_heartbeat,
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The document as generated now, for the default prefix."""
    return build_document()


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _channel_message(doc: dict[str, Any], channel: str) -> str:
    (name,) = doc["channels"][channel]["messages"]
    return str(name)


def test_committed_document_is_up_to_date(doc: dict[str, Any]) -> None:
    """docs/asyncapi.json is exactly what the generator writes today (regenerate it if this fails)."""
    assert DOC_PATH.read_text(encoding="utf-8") == render(doc), (
        "docs/asyncapi.json is stale: run python scripts/asyncapi.py -o docs/asyncapi.json"
    )


def test_output_is_deterministic() -> None:
    """Two generations give the same bytes (no clock, no ordering noise)."""
    assert render(build_document()) == render(build_document())


def test_every_subject_is_a_channel(doc: dict[str, Any]) -> None:
    """Each healthbus subject family is a channel whose address, filled in, is the subject the code uses."""
    s = Subjects()
    addresses = {name: ch["address"] for name, ch in doc["channels"].items()}
    probe = addresses["probe"].replace("{target}", "redis-main").replace("{probe}", worker_token("host-1:42"))
    assert probe == s.probe("redis-main", "host-1:42")
    assert addresses["state"].replace("{target}", "redis-main") == s.state("redis-main")
    for command in CONTROL_COMMANDS:
        assert addresses["control"].replace("{command}", command) == s.ctl(command)
    token = worker_token("host-1:42")
    assert addresses["workerHeartbeat"].replace("{worker}", token) == s.worker("heartbeat", token)
    assert addresses["workerReload"] == s.worker("reload")
    assert addresses["report"].replace("{target}", "redis-main") == s.report("redis-main")
    assert addresses["confirm"].replace("{target}", "redis-main") == s.confirm("redis-main")
    assert addresses["controlReply"] is None  # the requester's inbox, unknown in advance
    assert doc["components"]["parameters"]["command"]["enum"] == list(CONTROL_COMMANDS)


def test_every_message_is_present_on_its_channel(doc: dict[str, Any]) -> None:
    """Each wire Struct is a message, carried by the channel the contract names."""
    expected = {
        "probe": "ProbeResult",
        "state": "StateChanged",
        "control": "ControlRequest",
        "controlReply": "ControlReply",
        "workerHeartbeat": "WorkerHeartbeat",
        "workerReload": "ReloadNotice",
        "report": "FailureReport",
        "confirm": "ConfirmRequest",
        "group": "GroupChanged",
        "digest": "StateDigest",
    }
    assert {channel: _channel_message(doc, channel) for channel in doc["channels"]} == expected
    assert set(doc["components"]["messages"]) == {t.__name__ for t in MESSAGE_TYPES}
    for name, message in doc["components"]["messages"].items():
        assert message["payload"] == {"$ref": f"#/components/schemas/{name}"}
        assert message["contentType"] == "application/json"


def test_operations_cover_both_ends_and_the_control_reply(doc: dict[str, Any]) -> None:
    """Every channel with an address has a send and a receive operation; control requests declare their reply."""
    ops = doc["operations"]
    for channel, ch in doc["channels"].items():
        if ch["address"] is None:
            continue
        actions = {op["action"] for op in ops.values() if op["channel"] == {"$ref": f"#/channels/{channel}"}}
        assert actions == {"send", "receive"}, channel
    for name in ("requestControl", "handleControl"):
        reply = ops[name]["reply"]
        assert reply["channel"] == {"$ref": "#/channels/controlReply"}
        assert _resolve(doc, reply["messages"][0]["$ref"]) == {"$ref": "#/components/messages/ControlReply"}


def test_state_messages_declare_the_dedupe_header(doc: dict[str, Any]) -> None:
    """StateChanged carries a required Nats-Msg-Id header and the channel names the JetStream stream."""
    headers = doc["components"]["messages"]["StateChanged"]["headers"]
    assert headers["required"] == ["Nats-Msg-Id"]
    example = doc["components"]["messages"]["StateChanged"]["examples"][0]
    event = decode_state_changed(json.dumps(example["payload"]).encode())
    assert example["headers"]["Nats-Msg-Id"] == event.msg_id
    assert doc["channels"]["state"]["x-nats-jetstream"]["stream"] == "HEALTHBUS_STATE"
    assert doc["channels"]["state"]["x-nats-jetstream"]["subjects"] == ["healthbus.state.*", "healthbus.group.*"]
    group = doc["components"]["messages"]["GroupChanged"]["examples"][0]
    assert group["headers"]["Nats-Msg-Id"] == decode_group_changed(json.dumps(group["payload"]).encode()).msg_id


def test_schemas_are_msgspec_schemas(doc: dict[str, Any]) -> None:
    """Every component schema is msgspec's JSON Schema of the protocol Struct (normalised across releases)."""
    _, components = msgspec.json.schema_components(MESSAGE_TYPES, ref_template="#/components/schemas/{name}")
    assert doc["components"]["schemas"] == {name: normalise_schema(schema) for name, schema in components.items()}
    assert set(components) == {*(t.__name__ for t in MESSAGE_TYPES), "Evidence", "GroupMember", "Ramp"}


@pytest.mark.parametrize("struct", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_required_fields_are_those_without_defaults(doc: dict[str, Any], struct: type[msgspec.Struct]) -> None:
    """A schema's required fields are the Struct's fields without a default, and it lists every field."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    schema = doc["components"]["schemas"][struct.__name__]
    assert schema["required"] == [f.encode_name for f in info.fields if f.required]
    assert list(schema["properties"]) == [f.encode_name for f in info.fields]


def test_state_changed_required_fields_and_enums(doc: dict[str, Any]) -> None:
    """StateChanged requires what the contract says and its enums are the protocol's value sets."""
    schemas = doc["components"]["schemas"]
    state = schemas["StateChanged"]
    assert state["required"] == ["target", "seq", "at", "previous", "state", "breaker", "reason"]
    assert sorted(state["properties"]["state"]["enum"]) == sorted(STATES)
    assert sorted(state["properties"]["previous"]["enum"]) == sorted(STATES)
    assert sorted(state["properties"]["breaker"]["enum"]) == sorted(BREAKER_STATES)
    assert state["properties"]["seq"]["minimum"] == 1
    assert state["properties"]["evidence"]["additionalProperties"] == {"$ref": "#/components/schemas/Evidence"}
    probe = schemas["ProbeResult"]["properties"]
    assert sorted(probe["outcome"]["enum"]) == sorted(OUTCOMES)
    kinds = next(option for option in probe["error_kind"]["anyOf"] if "enum" in option)
    assert sorted(kinds["enum"]) == sorted(ERROR_KINDS)
    assert sorted(schemas["Evidence"]["properties"]["outcome"]["enum"]) == sorted(OUTCOMES)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    """No dangling $ref anywhere in the document."""
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        assert _resolve(doc, ref) is not None, ref


def test_channel_parameters_match_address_placeholders(doc: dict[str, Any]) -> None:
    """Each {placeholder} in an address is a declared parameter, and nothing else is."""
    for name, channel in doc["channels"].items():
        placeholders = set(re.findall(r"\{(\w+)\}", channel["address"] or ""))
        assert placeholders == set(channel.get("parameters", {})), name


@pytest.mark.parametrize("name", list(DECODERS))
def test_examples_are_valid_wire_messages(doc: dict[str, Any], name: str) -> None:
    """Each message example decodes with the protocol's own decoder."""
    for example in doc["components"]["messages"][name]["examples"]:
        decoded = DECODERS[name](json.dumps(example["payload"]).encode())
        assert type(decoded).__name__ == name


def test_document_parses_as_faststream_asyncapi_3(doc: dict[str, Any]) -> None:
    """FastStream's AsyncAPI 3.0 model (what `faststream docs serve` loads) accepts the document unchanged."""
    from faststream._internal._compat import model_parse
    from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

    parsed = model_parse(ApplicationSchema, json.dumps(doc))
    roundtrip = parsed.to_jsonable()
    expected = json.loads(json.dumps(doc))
    del expected["channels"]["controlReply"]["address"]  # FastStream omits a null address
    assert roundtrip == expected


def test_custom_prefix() -> None:
    """Another prefix moves every address and the stream name."""
    doc = build_document("acme.health")
    assert doc["channels"]["probe"]["address"] == "acme.health.probe.{target}.{probe}"
    assert doc["channels"]["state"]["x-nats-jetstream"]["stream"] == "ACME_HEALTH_STATE"
    assert all(ch["address"] is None or ch["address"].startswith("acme.health.") for ch in doc["channels"].values())


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python scripts/asyncapi.py -o F` writes the document; --check passes on it, fails on a stale one."""
    out = tmp_path / "asyncapi.json"
    assert main(["-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render(build_document())
    assert main(["-o", str(out), "--check"]) == 0
    out.write_text("{}\n", encoding="utf-8")
    assert main(["-o", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--prefix", "bad prefix"]) == 2
    assert "invalid subject prefix" in capsys.readouterr().err


def test_schemas_are_normalised_whatever_msgspec_renders() -> None:
    """Indented docstrings and null-first unions (older/newer msgspec) come out in one form."""
    raw = {
        "description": "First line.\n\n    More, indented\n    as in a class body.",
        "properties": {"x": {"anyOf": [{"type": "null"}, {"$ref": "#/components/schemas/X"}]}},
    }
    assert normalise_schema(raw) == {
        "description": "First line.\n\nMore, indented\nas in a class body.",
        "properties": {"x": {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}},
    }
