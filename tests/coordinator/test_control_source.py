"""Control requests come only from `healthbus ctl`: a JetStream delivery into a control
subject (a push consumer pointed at ``<prefix>.ctl.<command>``) is dropped, counted as
``unexpected_control`` and logged rate-limited, never applied and never answered."""

from __future__ import annotations

import logging
import time

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from healthbus.bus import ensure_stream
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import ControlRequest, StreamSettings, Subjects, encode, load_config_text
from healthbus.protocol.testing import ManualClock
from tests.helpers import wait_event, wait_until

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")
CONFIG = """
[defaults]
interval = "1s"
timeout = "500ms"

[coordinator]
tick = "50ms"

[[targets]]
name = "db"
kind = "tcp"
url = "tcp://127.0.0.1:1"
"""

#: Messages in the stream the push consumer delivers into the control subject.
FLOOD = 300


async def test_a_jetstream_delivery_on_a_control_subject_is_dropped(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid force-open requests, stored in a stream and delivered by a push consumer into
    healthbus.ctl.force-open, change nothing: each is dropped and counted, no reply is sent,
    and the log has one line per DROP_LOG_INTERVAL on the coordinator's clock, not one per
    message (the clock is manual and stands still: exactly one line). A real request on the
    same subject still works."""
    js = nc.jetstream()
    await ensure_stream(js, StreamSettings.for_prefix())
    await js.add_stream(name="LOOT", subjects=["loot.>"])
    request = encode(ControlRequest(target="db", reason="forged"))
    for i in range(FLOOD):
        await js.publish(f"loot.{i % 7}", request)
    caplog.set_level(logging.WARNING, logger="healthbus.coordinator")
    clock = ManualClock()
    async with CoordinatorService(load_config_text(CONFIG), nc, clock=clock, lease_ttl=0) as service:
        await wait_event(service.activated, 10, "the coordinator to be active")
        seen: list[Msg] = []

        async def on_delivery(msg: Msg) -> None:
            seen.append(msg)

        # nats-server pushes only to a subject with literal interest; the coordinator's
        # `healthbus.ctl.>` then receives every delivery too. (A delivery keeps its stream
        # subject, loot.N: the reply subject shows where it came from.)
        await nc.subscribe(SUBJECTS.ctl("force-open"), cb=on_delivery)
        info = await js.add_consumer(
            "LOOT",
            ConsumerConfig(
                deliver_subject=SUBJECTS.ctl("force-open"),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        await wait_until(  # the test's own subscription has its own task: wait for both
            lambda: service.dropped.get("unexpected_control", 0) >= FLOOD and len(seen) >= FLOOD,
            30,
            f"{FLOOD} JetStream deliveries dropped",
            seen=lambda: (dict(service.dropped), len(seen)),
        )
        assert service.dropped.get("bad_control", 0) == 0
        current = service.decider.current("db")
        assert current is None or current.breaker != "forced_open"
        lines = [r for r in caplog.records if "unexpected_control" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "JetStream delivery" in lines[0].getMessage()
        assert len(seen) >= FLOOD
        assert seen[0].subject.startswith("loot.")
        # Never answered: a reply to a delivery's $JS.ACK subject would have acked it.
        after = await js.consumer_info("LOOT", info.name)
        assert after.ack_floor.consumer_seq == 0
        # The operator's own request on the same subject is applied and answered.
        reply = await nc.request(SUBJECTS.ctl("force-open"), request, timeout=10)
        assert b'"ok":true' in reply.data, reply.data


def test_a_subject_outside_the_control_prefix_is_no_command() -> None:
    """command_of checks the whole subject, not only its length: another prefix is dropped."""
    from healthbus.coordinator._control import Control
    from healthbus.coordinator._counters import Counters

    counters = Counters(ManualClock())
    control = Control(
        None,  # type: ignore[arg-type]  # never reached: command_of decides alone
        counters,
        ctl_base="healthbus.ctl.",
        now=time.monotonic,  # type: ignore[arg-type]
        emit=lambda events: None,
        wait_published=lambda *a: None,  # type: ignore[arg-type]
    )
    assert control.command_of("healthbus.ctl.reset", "_INBOX.operator.x") == "reset"
    assert control.command_of("healthbux.ctl.reset", "_INBOX.operator.x") is None
    assert control.command_of("healthbus.ctl.", "_INBOX.operator.x") is None
    assert control.command_of("healthbus.ctl.reset", "$JS.ACK.LOOT.c.1.1.1.1.0") is None
    assert counters.dropped == {"unexpected_control": 3}
