"""The built-in demo configuration of `healthbus dev` is valid and runnable on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthbus.cli._demo import demo_config_text
from healthbus.probes import ProbeWorker
from healthbus.protocol import load_config_text


@pytest.mark.parametrize("milvus", [False, True])
def test_demo_config_is_valid_and_accepted_by_a_probe_worker(tmp_path: Path, milvus: bool) -> None:
    """The demo loads, its files live under the data dir, and a probe worker accepts every target."""
    text = demo_config_text(
        tmp_path / "hb", nats_host="127.0.0.1", nats_port=4333, dashboard_url="http://127.0.0.1:8470/", milvus=milvus
    )
    config = load_config_text(text, source="demo.toml", env={})
    names = config.target_names
    assert names[:5] == ["sqlite", "nats", "dashboard", "redis", "postgres"]
    assert ("milvus" in names) is milvus
    assert config.target("nats").url == "tcp://127.0.0.1:4333"
    assert config.target("dashboard").url == "http://127.0.0.1:8470/healthz"
    assert str(tmp_path / "hb" / "demo.sqlite3") in config.target("sqlite").url
    assert ProbeWorker(config, worker_id="demo").worker_id == "demo"


def test_demo_paths_with_quotes_stay_valid_toml(tmp_path: Path) -> None:
    """A data directory whose path needs escaping still gives a valid config."""
    odd = tmp_path / 'we"ird\\dir'
    text = demo_config_text(odd, nats_host="127.0.0.1", nats_port=4222, dashboard_url="http://x:1/", milvus=True)
    config = load_config_text(text, env={})
    assert str(odd / "milvus-demo.db") == config.target("milvus").url
