"""Start-up race: once ``start()`` returns, the coordinator receives what others publish."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import ControlRequest, Subjects, decode_control_reply, encode, load_config_text
from tests.helpers import probe_result, publish_probe

pytestmark = pytest.mark.nats

CONFIG = """
[defaults]
interval = "1s"
timeout = "500ms"
failure_threshold = 1
success_threshold = 1

[coordinator]
lease_ttl = "{lease}"

[[targets]]
name = "db"
kind = "tcp"
url = "tcp://127.0.0.1:1"
"""


#: The race is a matter of microseconds: several starts make a regression show.
ROUNDS = 10


@pytest.mark.parametrize("lease", ["0s", "1s"])
async def test_publish_from_another_connection_right_after_start_is_decided(
    nats_server: EmbeddedNats, nc: Client, lease: str
) -> None:
    """A control request and a ProbeResult sent by another client the moment start() returns both arrive."""
    config = load_config_text(CONFIG.format(lease=lease))
    for round_ in range(ROUNDS):
        service_nc = await connect(url=nats_server.url)
        service = CoordinatorService(config, service_nc)
        try:
            await service.start()
            assert service.ready
            # No waiting of any kind in between: start() must already mean "subscribed".
            request = encode(ControlRequest(target="db"))
            msg = await nc.request(Subjects("healthbus").ctl("status"), request, timeout=5.0)
            assert decode_control_reply(msg.data).ok
            await publish_probe(nc, "healthbus", probe_result("db", "pass"))
            await service.wait_handled(1, timeout=5.0)
            assert service.results["pass"] == 1
            if round_ == 0:  # later rounds restore "healthy": a pass changes nothing
                await service.wait_published("db", 1, timeout=5.0)
                event = service.decider.current("db")
                assert event is not None
                assert (event.seq, event.previous, event.state) == (1, "unknown", "healthy")
        finally:
            await service.stop()
            await service_nc.close()
