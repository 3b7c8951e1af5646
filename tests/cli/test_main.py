"""The command's shared contract: exit codes and config errors (DESIGN 7, 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli._support import run_cli

BAD_CONFIGS = [
    ('[defaults]\ninterval = "5x"\n', "$.defaults.interval", "duration with a unit"),
    ('[[targets]]\nname = "redis-main"\nkind = "redis"\nurl = "http://x"\n', "$.targets[0].url", "redis://"),
    ('[defaults]\nfailure_threshold = "3"\n', "$.defaults.failure_threshold", "Expected `int`"),
]


@pytest.mark.parametrize("command", ["coordinator", "probe", "status"])
@pytest.mark.parametrize(("text", "field", "expected"), BAD_CONFIGS)
async def test_bad_config_exits_2_naming_file_and_field(
    tmp_path: Path, command: str, text: str, field: str, expected: str
) -> None:
    """A bad config file gives exit 2 and one message naming the file, the field and the expectation."""
    config = tmp_path / "hb.toml"
    config.write_text(text)
    result = await run_cli(command, "--config", str(config), "--nats", "nats://127.0.0.1:1")
    assert result.code == 2, result.err
    assert result.out == ""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert str(config) in lines[0]
    assert field in lines[0]
    assert expected in lines[0]


async def test_config_secret_never_printed_in_a_config_error(tmp_path: Path) -> None:
    """A type error on a field filled from the environment does not echo the secret."""
    config = tmp_path / "hb.toml"
    config.write_text('[defaults]\nsuccess_threshold = "${SECRET}"\n')
    result = await run_cli("coordinator", "--config", str(config), env={"SECRET": "hunter2-zz"})
    assert result.code == 2
    assert "hunter2-zz" not in result.err + result.out


async def test_unknown_command_and_option_are_usage_errors() -> None:
    """argparse errors are exit 2."""
    assert (await run_cli("frobnicate")).code == 2
    assert (await run_cli("status", "--no-such-option")).code == 2


async def test_help_lists_every_contract_command() -> None:
    """`healthbus --help` names every subcommand of DESIGN 7."""
    result = await run_cli("--help")
    assert result.code == 0
    for command in ("dev", "coordinator", "probe", "status", "tail", "replay", "state-at", "bench"):
        assert command in result.out
