"""An old or JetStream-less nats-server is refused at connect with a clear error, not silence;
a HealthClient names a missing stream where its credential may ask (the subscriber role may not).

The old server is Debian's nats-server 2.9.10 (``apt-get install nats-server`` puts it in
/usr/sbin), found by :func:`old_nats_server`; missing, the test skips (fails under CI=true).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import pytest

from healthbus.bus import MIN_SERVER_VERSION, ServerUnsupported, connect, server_problem
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import BusSettings
from healthbus.subscribers import HealthClient
from tests.cli._support import run_cli
from tests.deploy.test_permissions import _password, secured_nats
from tests.harness._util import unavailable

__all__ = ["secured_nats"]  # the fixture, shared with the permission tests

#: Where Debian's package puts the binary (``HEALTHBUS_OLD_NATS_SERVER`` names another one).
OLD_SERVER_PATHS = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


def old_nats_server() -> tuple[str, str]:
    """(path, version) of a nats-server older than MIN_SERVER_VERSION, else skip (fail under CI)."""
    found: tuple[str, str] | None = None
    candidates = [os.environ.get("HEALTHBUS_OLD_NATS_SERVER", ""), *OLD_SERVER_PATHS]
    for path in filter(None, candidates):
        if found is None and Path(path).is_file():
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
            match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
            if match and tuple(map(int, match.groups())) < MIN_SERVER_VERSION:
                found = path, ".".join(match.groups())
    if found is None:
        unavailable("no nats-server older than 2.11 found: apt-get install nats-server (Debian's is 2.9.10)")
    return found


@pytest.mark.parametrize(
    ("info", "needle"),
    [
        ({"version": "2.9.10", "jetstream": True}, "nats-server 2.9.10 is too old: healthbus needs nats-server 2.11.0"),
        ({"version": "2.10.29", "jetstream": True}, "2.10.29 is too old"),
        ({"version": "2.15.1"}, "JetStream is not available (start nats-server with -js)"),
        ({"version": "2.9.0"}, "too old"),  # the version is named first: upgrading comes before -js
    ],
)
def test_server_problem_names_what_is_missing(info: dict[str, object], needle: str) -> None:
    problem = server_problem(info)
    assert problem is not None
    assert needle in problem


@pytest.mark.parametrize("version", ["2.11.0", "2.11.0-RC.1", "2.15.1", "3.0.0", "2.12.0-dev+abc", "custom"])
def test_server_problem_accepts_new_servers(version: str) -> None:
    assert server_problem({"version": version, "jetstream": True}) is None


@pytest.mark.nats
async def test_old_server_is_refused_by_connect_and_commands(tmp_path: Path) -> None:
    """bus.connect raises ServerUnsupported; coordinator, probe and status exit 1 naming version and minimum."""
    binary, version = old_nats_server()
    config = tmp_path / "hb.toml"
    config.write_text('[[targets]]\nname = "web"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    with EmbeddedNats(tmp_path / "nats", binary=binary) as server:
        with pytest.raises(ServerUnsupported) as caught:
            await connect(BusSettings(), url=server.url)
        assert f"nats-server {version} is too old" in str(caught.value)
        assert "2.11.0 or newer" in str(caught.value)
        for command in (
            ["coordinator", "--config", str(config)],
            ["probe", "--config", str(config), "--id", "p"],
            ["status"],
        ):
            result = await run_cli(*command, "--nats", server.url)
            assert result.code == 1, (command, result.err)
            assert f"nats-server {version} is too old: healthbus needs nats-server 2.11.0 or newer" in result.err
            assert "Traceback" not in result.err


@pytest.mark.nats
async def test_health_client_on_old_server_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """HealthClient does not raise (a service must start), but bus.reason names the version and
    the minimum, one ERROR line says it, and the bus-loss policy answers; the same for a shared connection."""
    binary, version = old_nats_server()
    caplog.set_level(logging.INFO, logger="healthbus.subscribers")
    with EmbeddedNats(tmp_path / "nats", binary=binary) as server:
        async with HealthClient.connect(server.url, connect_timeout=2.0, on_bus_loss="assume_unavailable") as health:
            status = health.bus
            assert not status.connected
            assert status.stale  # nothing loaded: the policy applies at once
            assert status.reason is not None
            assert f"nats-server {version} is too old" in status.reason, status.reason
            assert not health.is_available("anything")
            assert not health.feature_available("anything")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "too old" in r.getMessage()]
        assert len(errors) == 1, [r.getMessage() for r in caplog.records]
        shared = await connect(BusSettings(), url=server.url, require_server=False)
        try:
            async with HealthClient.connect(nc=shared, connect_timeout=2.0) as health:
                assert health.bus.reason is not None
                assert "too old" in health.bus.reason
        finally:
            await shared.close()


@pytest.mark.nats
async def test_health_client_names_a_missing_stream(nats_server: EmbeddedNats) -> None:
    """Where stream info may be read, "no answer" becomes "does not exist" (allow_direct: test_direct_path)."""
    async with HealthClient.connect(nats_server.url, prefix="hbnostream", connect_timeout=2.0) as health:
        assert health.bus.reason is not None
        assert "stream HBNOSTREAM_STATE does not exist (start the coordinator" in health.bus.reason


@pytest.mark.nats
async def test_under_the_subscriber_role_a_missing_stream_is_no_refusal(
    secured_nats: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscriber role may not read stream info: the reason stays "missing, or no allow_direct",
    and the refused stream-info question is not taken for a refused subscription."""
    caplog.set_level(logging.WARNING, logger="healthbus.subscribers")
    settings = BusSettings(url=secured_nats.url, user="subscriber", password=_password("subscriber"))
    async with HealthClient.connect(settings=settings, connect_timeout=2.0) as health:
        reason = health.bus.reason
        assert reason is not None
        assert "no answer from stream HEALTHBUS_STATE (missing, or no allow_direct)" in reason, reason
        assert "refused" not in reason
    assert not [r for r in caplog.records if "STREAM.INFO" in r.getMessage()]
