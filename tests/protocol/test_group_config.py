"""``[[groups]]`` in the configuration file (docs/contract.md §7): decoding and validation."""

from __future__ import annotations

import pytest

from healthbus.protocol import ConfigError, load_config_text

TARGETS = """
[[targets]]
name = "pg-a"
kind = "postgres"
url = "postgresql://app@127.0.0.1:5432/app"

[[targets]]
name = "pg-b"
kind = "postgres"
url = "postgresql://app@127.0.0.1:5433/app"

[[targets]]
name = "pg-c"
kind = "postgres"
url = "postgresql://app@127.0.0.1:5434/app"
"""


def _load(group: str) -> object:
    return load_config_text(TARGETS + "\n[[groups]]\n" + group, source="t.toml")


def test_a_group_with_every_key() -> None:
    config = load_config_text(
        TARGETS
        + """
[[groups]]
name = "pg"
members = ["pg-a", "pg-b", "pg-c"]
policy = "weighted"
weights = { pg-b = 3, pg-c = 2 }
min_healthy = 2
panic_threshold = 0.5
primary = "pg-a"
""",
        source="t.toml",
    )
    group = config.group("pg")
    assert group.members == ["pg-a", "pg-b", "pg-c"]
    assert group.policy == "weighted"
    assert group.weights == {"pg-b": 3, "pg-c": 2}
    assert (group.min_healthy, group.panic_threshold, group.primary, group.reads_on_primary) == (2, 0.5, "pg-a", False)
    with pytest.raises(KeyError):
        config.group("nope")


def test_defaults() -> None:
    config = load_config_text(TARGETS + '\n[[groups]]\nname = "pg"\nmembers = ["pg-b", "pg-a"]\n')
    group = config.groups[0]
    assert (group.policy, group.min_healthy, group.panic_threshold, group.primary) == ("round-robin", 1, 0.0, None)
    assert load_config_text(TARGETS).groups == []


@pytest.mark.parametrize(
    ("group", "path", "words"),
    [
        ('name = "PG"\nmembers = ["pg-a"]', "$.groups[0].name", "a-z"),
        ('name = "pg-a"\nmembers = ["pg-a"]', "$.groups[0].name", "already a target"),
        ('name = "pg"\nmembers = []', "$.groups[0].members", "at least one"),
        ('name = "pg"\nmembers = ["pg-a", "pg-x"]', "$.groups[0].members[1]", "no target is called 'pg-x'"),
        ('name = "pg"\nmembers = ["pg-a", "pg-a"]', "$.groups[0].members[1]", "listed twice"),
        ('name = "pg"\nmembers = ["pg-a"]\npolicy = "random"', "$.groups[0].policy", "Invalid enum value 'random'"),
        (
            'name = "pg"\nmembers = ["pg-a"]\npolicy = "weighted"\nweights = { pg-b = 1 }',
            "$.groups[0].weights.pg-b",
            "not a member",
        ),
        (
            'name = "pg"\nmembers = ["pg-a"]\npolicy = "weighted"\nweights = { pg-a = 0 }',
            "$.groups[0].weights.pg-a",
            ">= 1",
        ),
        ('name = "pg"\nmembers = ["pg-a"]\nweights = { pg-a = 2 }', "$.groups[0].weights", "'weighted' only"),
        (
            'name = "pg"\nmembers = ["pg-a", "pg-b"]\nmin_healthy = 3',
            "$.groups[0].min_healthy",
            "from 1 to the number of members (2)",
        ),
        ('name = "pg"\nmembers = ["pg-a"]\nmin_healthy = 0', "$.groups[0].min_healthy", "from 1"),
        ('name = "pg"\nmembers = ["pg-a"]\npanic_threshold = 1.5', "$.groups[0].panic_threshold", "from 0 to 1"),
        ('name = "pg"\nmembers = ["pg-a"]\nprimary = "pg-b"', "$.groups[0].primary", "not a member"),
        ('name = "pg"\nmembers = ["pg-a"]\nreads_on_primary = true', "$.groups[0].reads_on_primary", "needs primary"),
        ('name = "pg"\nmembers = ["pg-a"]\ncolour = "red"', "$.groups[0]", "unknown field"),
    ],
)
def test_errors_name_the_field(group: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(group)
    assert err.value.path.startswith(path), err.value
    assert words in str(err.value), err.value
    assert str(err.value).startswith("t.toml: ")


def test_a_duplicate_group_name() -> None:
    with pytest.raises(ConfigError, match=r"groups\[1\]\.name: duplicate group name 'pg' \(also groups\[0\]\)"):
        _load('name = "pg"\nmembers = ["pg-a"]\n[[groups]]\nname = "pg"\nmembers = ["pg-b"]\n')
