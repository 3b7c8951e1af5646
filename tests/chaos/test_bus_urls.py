"""Regression: a comma-separated NATS URL list connects (it is how a cluster is given to every command)."""

from __future__ import annotations

import pytest

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats, free_port

pytestmark = pytest.mark.nats


async def test_comma_separated_urls_connect(nats_server: EmbeddedNats) -> None:
    """A comma-separated URL list (as ``--nats`` and ``NATS_URL`` take a cluster) connects, skipping a dead one."""
    dead = f"nats://127.0.0.1:{free_port()}"
    nc = await connect(url=f"{dead}, {nats_server.url}", connect_attempts=4)
    try:
        assert nc.is_connected
        assert nc.connected_url is not None
        assert nc.connected_url.port == nats_server.port
    finally:
        await nc.close()
