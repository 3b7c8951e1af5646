"""The built-in demo configuration of `healthbus dev` is valid and runnable on any machine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from healthbus.cli._demo import demo_config_text
from healthbus.probes import ProbeWorker
from healthbus.protocol import load_config_text
from healthbus.protocol.testing import ManualClock


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


def test_demo_fleet_schedule_has_every_kind_of_trouble() -> None:
    """Of 1,000 synthetic targets: 50 always down, 50 down 3 minutes in 10, 50 slow, 20 flapping (some overlap)."""
    from healthbus.cli._demo import demo_fleet_answer

    minute = [[demo_fleet_answer(i, t) for t in range(0, 600, 10)] for i in range(1000)]
    always_down = [i for i, answers in enumerate(minute) if set(answers) == {"down"}]
    slow = [i for i, answers in enumerate(minute) if set(answers) == {"slow"}]
    sometimes = [i for i, answers in enumerate(minute) if set(answers) == {"up", "down"}]
    assert len(always_down) == 50
    assert len(slow) == 50
    assert 60 <= len(sometimes) <= 70  # 50 down 3 minutes in 10, plus the flapping ones not in those slots
    for i in sometimes:
        assert 0 < minute[i].count("down") < len(minute[i])
    assert demo_fleet_answer(7, 0.0) == "down"
    assert demo_fleet_answer(0, 0.0) == "up"


def test_demo_fleet_config_is_valid_and_scales_its_interval() -> None:
    from healthbus.cli._demo import demo_fleet_config_text

    config = load_config_text(demo_fleet_config_text(1000, "http://127.0.0.1:9/"), env={})
    assert len(config.targets) == 1000
    first = config.target("demo-0001")
    assert first.url == "http://127.0.0.1:9/t/0"
    assert float(first.interval) == 10.0
    assert config.target("demo-0004").warn_latency is not None  # the slow ones are degraded, not down
    small = load_config_text(demo_fleet_config_text(3, "http://x:1"), env={})
    assert float(small.target("demo-0003").interval) == 2.0


async def test_demo_fleet_server_answers_by_the_schedule() -> None:
    import aiohttp

    from healthbus.cli._demo import DemoFleet

    fleet = DemoFleet(30, clock=ManualClock(start=datetime.fromtimestamp(0, UTC)))
    base = await fleet.start()
    try:
        async with aiohttp.ClientSession() as http:
            for index, status in ((0, 200), (7, 503), (3, 200)):
                async with http.get(f"{base}/t/{index}") as resp:
                    assert resp.status == status, index
            for path in ("/t/30", "/t/x", "/t/-1"):
                async with http.get(base + path) as resp:
                    assert resp.status == 404, path
    finally:
        await fleet.close()
        await fleet.close()
