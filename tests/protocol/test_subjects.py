"""Subject names and the target-name rule (docs/contract.md)."""

from __future__ import annotations

import pytest

from healthbus.protocol import StreamSettings, Subjects, is_valid_target, stream_name_for, validate_target


@pytest.mark.parametrize("name", ["redis-main", "a", "0", "pg_replica-2", "x" * 64])
def test_valid_target_names(name: str) -> None:
    """Lower-case letters, digits, '-' and '_', 1-64 chars, starting alphanumeric."""
    assert is_valid_target(name)
    assert validate_target(name) == name


@pytest.mark.parametrize("name", ["", "Redis", "-a", "_a", "a.b", "a*", "a>", "a b", "x" * 65, "a\n", "é"])
def test_invalid_target_names(name: str) -> None:
    """Anything that is not a single safe NATS token is refused with the rule in the message."""
    assert not is_valid_target(name)
    with pytest.raises(ValueError, match="invalid target name"):
        validate_target(name)


def test_subject_builders_and_parsers() -> None:
    """Builders produce <prefix>.<kind>.<target>; parsers invert them and reject others."""
    s = Subjects()
    assert s.probe("redis-main", "web-1") == "healthbus.probe.redis-main.web-1"
    assert s.probe("redis-main", "web.1 a") == "healthbus.probe.redis-main.web_1_a"
    assert s.state("redis-main") == "healthbus.state.redis-main"
    assert s.probe_all == "healthbus.probe.*.*"
    assert s.state_all == "healthbus.state.*"
    assert s.ctl("force-open") == "healthbus.ctl.force-open"
    assert s.worker("heartbeat", "w1") == "healthbus.worker.heartbeat.w1"
    assert s.probe_target("healthbus.probe.redis-main") is None  # names no probe
    assert s.probe_target("healthbus.probe.redis-main.web-1") == "redis-main"
    assert s.probe_target("healthbus.probe.redis-main.web-1.x") is None
    assert s.probe_target("healthbus.state.redis-main") is None
    assert s.probe_target("healthbus.probe.Bad") is None
    assert s.state_target("healthbus.state.pg") == "pg"
    with pytest.raises(ValueError, match="invalid target name"):
        s.probe("a.b", "w1")


def test_custom_prefix() -> None:
    """A dotted prefix works and gets its own stream name; a bad one is refused."""
    s = Subjects("acme.hb")
    assert s.state("pg") == "acme.hb.state.pg"
    assert s.probe_target("acme.hb.probe.pg.w1") == "pg"
    assert s.probe_target("healthbus.probe.pg.w1") is None
    assert stream_name_for("healthbus") == "HEALTHBUS_STATE"
    assert stream_name_for("acme.hb") == "ACME_HB_STATE"
    with pytest.raises(ValueError, match="invalid subject prefix"):
        Subjects("bad prefix")


def test_stream_settings_defaults() -> None:
    """The state stream: file storage, 30 days of history, a 2-minute duplicate window."""
    st = StreamSettings.for_prefix()
    assert st.name == "HEALTHBUS_STATE"
    assert st.subjects == ["healthbus.state.*", "healthbus.group.*"]
    assert st.storage == "file"
    assert st.max_age_s == 30 * 24 * 3600
    assert st.duplicate_window_s == 120
