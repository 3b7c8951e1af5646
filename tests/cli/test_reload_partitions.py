"""A reload of a partitioned coordinator (the CLI's reloader): the partition settings are read at start only."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client

from healthbus.cli._coordinator import _reloader
from healthbus.coordinator import PartitionedCoordinator
from healthbus.protocol import load_config_text
from tests.coordinator.test_partitions import _partitioned_config


@pytest.mark.nats
async def test_a_reload_cannot_change_the_partitions(nc: Client, tmp_path: Path) -> None:
    """partitions and partition_routing are read at start: a reload changing either is refused, nothing applied."""
    path = tmp_path / "healthbus.toml"
    path.write_text(_partitioned_config())
    service = PartitionedCoordinator(load_config_text(path.read_text()), nc, holder="a")
    reloader = _reloader(str(path), service, nc, "healthbus")
    for changed in (
        _partitioned_config(2),
        _partitioned_config().replace("partitions = 3\n", 'partitions = 3\npartition_routing = "server"\n'),
    ):
        path.write_text(changed.replace('name = "t11"', 'name = "t12"'))
        error = await reloader.reload("test")
        assert error is not None
        assert "a reload cannot change them" in error
        assert "t11" in service.names
        assert "t12" not in service.names
    path.write_text(_partitioned_config().replace('name = "t11"', 'name = "t12"'))
    assert await reloader.reload("test") is None  # the same partitions: applied
    assert "t12" in service.names
