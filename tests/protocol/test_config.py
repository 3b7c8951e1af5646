"""The configuration file (docs/contract.md): decoding, overrides, interpolation, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthbus.protocol import ConfigError, load_config, load_config_text

FULL = """
[bus]
url = "nats://127.0.0.1:4222"
prefix = "acme.health"

[defaults]
interval = "5s"
timeout = "2s"
failure_threshold = 3
success_threshold = 2
quorum = "majority"
backoff = { base = "1s", multiplier = 2.0, max = "60s", jitter = "full" }
stale_after = "15s"

[coordinator]
stream_max_age = "7d"

[[targets]]
name = "redis-main"
kind = "redis"
url = "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"
features = ["cache", "rate-limit"]
interval = "2s"
quorum = 2
backoff = { jitter = "none" }

[[targets]]
name = "pg"
kind = "postgres"
url = "postgresql://app@127.0.0.1:5432/app"
"""


def test_full_example_decodes_with_defaults_and_overrides() -> None:
    """Per-target keys override [defaults]; tables merge key by key; durations become seconds."""
    config = load_config_text(FULL, env={"REDIS_PASSWORD": "s3cret"})
    assert config.bus.prefix == "acme.health"
    assert float(config.coordinator.stream_max_age) == 7 * 86400
    redis = config.target("redis-main")
    assert redis.interval == 2.0
    assert redis.timeout == 2.0
    assert redis.quorum == 2
    assert redis.backoff.jitter == "none"
    assert redis.backoff.base == 1.0
    assert redis.backoff.max == 60.0
    assert redis.features == ["cache", "rate-limit"]
    assert redis.url == "redis://:s3cret@127.0.0.1:6379/0"
    pg = config.target("pg")
    assert pg.interval == 5.0
    assert pg.effective_stale_after == 15.0
    assert pg.effective_retry_interval == 1.0
    assert config.target_names == ["redis-main", "pg"]


def test_degraded_quorum_defaults_to_1_and_is_set_like_quorum() -> None:
    """degraded_quorum: 1 unless set; [defaults] sets it for every target, a target overrides it."""
    assert load_config_text("").defaults.degraded_quorum == 1
    assert load_config_text(FULL, env={"REDIS_PASSWORD": "x"}).target("pg").degraded_quorum == 1
    config = load_config_text(
        "[defaults]\ndegraded_quorum = 2\n"
        '[[targets]]\nname = "a"\nkind = "tcp"\nurl = "tcp://x:1"\n'
        '[[targets]]\nname = "b"\nkind = "tcp"\nurl = "tcp://x:1"\ndegraded_quorum = 3\n'
    )
    assert (config.target("a").degraded_quorum, config.target("b").degraded_quorum) == (2, 3)


def test_defaults_of_an_empty_file() -> None:
    """An empty file is valid: the documented defaults, no targets."""
    config = load_config_text("")
    d = config.defaults
    assert (d.interval, d.timeout, d.failure_threshold, d.success_threshold, d.quorum) == (5.0, 2.0, 3, 2, "majority")
    assert (d.backoff.base, d.backoff.multiplier, d.backoff.max, d.backoff.jitter) == (1.0, 2.0, 60.0, "full")
    assert d.effective_stale_after == 15.0
    assert config.targets == []


def test_env_interpolation_fallback_and_escape() -> None:
    """${VAR:-fallback} falls back, $$ is a literal dollar."""
    config = load_config_text(
        '[[targets]]\nname = "h"\nkind = "http"\nurl = "http://${HOST:-localhost}:8080/pa$$h"\n', env={}
    )
    assert config.targets[0].url == "http://localhost:8080/pa$h"


def test_secrets_are_not_in_repr() -> None:
    """A target's repr and the bus settings' repr never show a password."""
    config = load_config_text(FULL, env={"REDIS_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config.targets)


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ('[defaults]\ninterval = "5x"', "$.defaults.interval", "duration with a unit"),
        ("[defaults]\ninterval = 5", "$.defaults.interval", "duration string"),
        ('[defaults]\nfailure_threshold = "3"', "$.defaults.failure_threshold", "Expected `int`"),
        ("[defaults]\nfailure_threshold = 0", "$.defaults", "at least 1"),
        ('[defaults]\nquorum = "most"', "$.defaults.quorum", "Invalid enum value"),
        ("[defaults]\ndegraded_quorum = 0", "$.defaults", "degraded_quorum must be a whole number >= 1"),
        ("[defaults]\ndegraded_quorum = -2", "$.defaults", "got -2"),
        ("[defaults]\ndegraded_quorum = 1.5", "$.defaults.degraded_quorum", "Expected `int`, got `float`"),
        ("[defaults]\ndegraded_quorum = true", "$.defaults.degraded_quorum", "Expected `int`, got `bool`"),
        ('[defaults]\ndegraded_quorum = "2"', "$.defaults.degraded_quorum", "Expected `int`, got `str`"),
        (
            '[[targets]]\nname = "r"\nkind = "tcp"\nurl = "tcp://x:1"\ndegraded_quorum = 0',
            "$.targets[0]",
            "degraded_quorum must be a whole number >= 1",
        ),
        ('[defaults]\nbackoff = { jitter = "lots" }', "$.defaults.backoff.jitter", "Invalid enum value"),
        ('[defaults]\nbackoff = { base = "10s", max = "1s" }', "$.defaults.backoff", "backoff.max"),
        ("[defaults]\nbogus = 1", "$.defaults", "unknown field `bogus`"),
        ('[[targets]]\nname = "Redis"\nkind = "redis"\nurl = "redis://x"', "$.targets[0].name", "a-z"),
        ('[[targets]]\nname = "r"\nkind = "mysql"\nurl = "mysql://x"', "$.targets[0].kind", "Invalid enum value"),
        ('[[targets]]\nname = "r"\nkind = "redis"', "$.targets[0]", "missing required field `url`"),
        ('[[targets]]\nname = "r"\nkind = "redis"\nurl = "http://x"', "$.targets[0].url", "redis://"),
        (
            '[[targets]]\nname = "r"\nkind = "tcp"\nurl = "tcp://x:1"\ntimeout = "10s"',
            "$.targets[0].timeout",
            "<= interval",
        ),
        (
            '[[targets]]\nname = "r"\nkind = "tcp"\nurl = "tcp://x:1"\n[[targets]]\nname = "r"\nkind = "tcp"\nurl = "tcp://y:1"',
            "$.targets[1].name",
            "duplicate target name",
        ),
        (
            '[[targets]]\nname = "r"\nkind = "redis"\nurl = "redis://:${MISSING}@x"',
            "$.targets[0].url",
            "MISSING is not set",
        ),
        ('[bus]\nprefix = "a b"', "$.bus.prefix", "dot-separated"),
        ("[defaults\n", "", "not valid TOML"),
    ],
)
def test_errors_name_file_field_and_expectation(text: str, path: str, expected: str) -> None:
    """Every error names the file, the field path and what was expected."""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="hb.toml", env={})
    assert info.value.source == "hb.toml"
    assert info.value.path == path
    assert expected in str(info.value)
    assert str(info.value).startswith("hb.toml")


def test_error_text_never_contains_an_interpolated_secret() -> None:
    """A type error on a field filled from the environment does not echo the secret."""
    with pytest.raises(ConfigError) as info:
        load_config_text('[defaults]\nfailure_threshold = "${PW}"\n', source="x.toml", env={"PW": "hunter2"})
    assert "hunter2" not in str(info.value)


def test_load_config_from_file(tmp_path: Path) -> None:
    """load_config reads a file and names it in errors; a missing file is a ConfigError too."""
    good = tmp_path / "hb.toml"
    good.write_text('[[targets]]\nname = "t"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    assert load_config(good).source == str(good)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad)


def test_refresh_after_defaults_to_half_the_stream_max_age() -> None:
    """[coordinator] refresh_after: unset is stream_max_age / 2; set, it is taken as is."""
    assert load_config_text("").coordinator.effective_refresh_after == 15 * 86400
    assert load_config_text('[coordinator]\nstream_max_age = "7d"').coordinator.effective_refresh_after == 3.5 * 86400
    set_ = load_config_text('[coordinator]\nstream_max_age = "4s"\nrefresh_after = "1s"').coordinator
    assert set_.effective_refresh_after == 1.0
    # "0s" is JetStream's "keep forever": no refresh unless asked for
    forever = load_config_text('[coordinator]\nstream_max_age = "0s"').coordinator
    assert forever.effective_refresh_after is None
    kept = load_config_text('[coordinator]\nstream_max_age = "0s"\nrefresh_after = "1d"').coordinator
    assert kept.effective_refresh_after == 86400


@pytest.mark.parametrize("value", ['"0s"', '"7d"', '"8d"'])
def test_refresh_after_must_be_positive_and_below_stream_max_age(value: str) -> None:
    """refresh_after of 0, or not less than stream_max_age, is an error naming the key."""
    text = f'[coordinator]\nstream_max_age = "7d"\nrefresh_after = {value}'
    with pytest.raises(ConfigError, match="less than stream_max_age") as info:
        load_config_text(text, source="hb.toml")
    assert info.value.path == "$.coordinator.refresh_after"
    assert str(info.value).startswith("hb.toml: $.coordinator.refresh_after: expected a duration greater than 0")


def test_refresh_after_rejects_a_bare_number() -> None:
    """refresh_after is a duration with a unit, like every other duration."""
    with pytest.raises(ConfigError) as info:
        load_config_text("[coordinator]\nrefresh_after = 60")
    assert info.value.path == "$.coordinator.refresh_after"


def test_inbox_prefix_defaults_to_the_user_and_is_validated() -> None:
    """[bus] inbox_prefix: explicit, else _INBOX.<user>, else _INBOX; a wildcard or space is a config error."""
    assert load_config_text("").bus.effective_inbox_prefix == "_INBOX"
    assert load_config_text('[bus]\nuser = "probe-a"\n').bus.effective_inbox_prefix == "_INBOX.probe-a"
    explicit = load_config_text('[bus]\nuser = "probe-a"\ninbox_prefix = "_INBOX.workers.a"\n')
    assert explicit.bus.effective_inbox_prefix == "_INBOX.workers.a"
    for text, path in (
        ('[bus]\ninbox_prefix = "_INBOX.>"\n', "$.bus.inbox_prefix"),
        ('[bus]\ninbox_prefix = "_INBOX..a"\n', "$.bus.inbox_prefix"),
        ('[bus]\nuser = "a b"\n', "$.bus.user"),
    ):
        with pytest.raises(ConfigError) as info:
            load_config_text(text)
        assert info.value.path == path, info.value


@pytest.mark.parametrize(
    ("old", "new"),
    [("jitter = 0.2", "spread = 0.2"), ("replicas = 3", "workers_per_target = 3")],
)
def test_renamed_probes_keys_name_their_new_name(old: str, new: str) -> None:
    """`[probes] jitter` and `replicas` (clashing with backoff's jitter and stream_replicas)
    are renamed: the old name is an error saying what to write; the new one works."""
    key = old.split(" ")[0]
    with pytest.raises(ConfigError, match=rf"\$\.probes\.{key}: renamed to {new.split(' ')[0]}"):
        load_config_text(f"[probes]\n{old}\n")
    probes = load_config_text(f"[probes]\n{new}\n").probes
    assert (probes.spread, probes.workers_per_target) == ((0.2, 2) if key == "jitter" else (0.1, 3))


def test_renamed_lease_names_lease_ttl() -> None:
    """`[coordinator] lease` (CoordinatorService's lease_ttl= under another name) is renamed
    lease_ttl: the old name is an error saying what to write, the new one works."""
    with pytest.raises(ConfigError, match=r"\$\.coordinator\.lease: renamed to lease_ttl .*lease_ttl = <the same"):
        load_config_text('[coordinator]\nlease = "2s"\n')
    assert float(load_config_text('[coordinator]\nlease_ttl = "2s"\n').coordinator.lease_ttl) == 2.0
    assert float(load_config_text("").coordinator.lease_ttl) == 5.0
    with pytest.raises(ConfigError, match=r"\$\.coordinator\.lease_ttl: expected a duration"):
        load_config_text('[coordinator]\nlease_ttl = "-1s"\n')
