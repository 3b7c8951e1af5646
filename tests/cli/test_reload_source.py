"""The reload subject takes ReloadNotices only: junk and JetStream deliveries are dropped,
counted and logged once per reason per interval, never per message (issue 24)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from healthbus.bus import DROP_LOG_INTERVAL, sync_subscriptions
from healthbus.cli._reload import RELOAD_TOKEN, Reloader
from healthbus.protocol import Config, ReloadNotice, Subjects, encode
from tests.helpers import wait_until

pytestmark = pytest.mark.nats

SUBJECT = Subjects("healthbus").worker(RELOAD_TOKEN)
JUNK = 400
DELIVERED = 50


async def test_junk_and_jetstream_deliveries_on_the_reload_subject(
    nc: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """400 malformed messages and 50 valid-looking notices pushed by a JetStream consumer into
    the reload subject reload nothing; each is counted under its reason, and the log holds at
    most one line per reason per DROP_LOG_INTERVAL. A real notice afterwards still reloads."""
    path = tmp_path / "healthbus.toml"
    path.write_text('[[targets]]\nname = "db"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    applied: list[Config] = []

    async def apply(config: Config) -> str:
        applied.append(config)
        return "ok"

    reloader = Reloader(str(path), apply, sender="worker-1")
    js = nc.jetstream()
    await js.add_stream(name="LOOT", subjects=["loot.>"])
    for i in range(DELIVERED):
        await js.publish(f"loot.{i}", encode(ReloadNotice(sender="attacker")))
    caplog.set_level(logging.WARNING, logger="healthbus.reload")
    started = time.monotonic()
    async with reloader.installed(nc, "healthbus"):
        await sync_subscriptions(nc)
        for i in range(JUNK):
            await nc.publish(SUBJECT, b"{not a notice " + str(i).encode())
        await js.add_consumer(
            "LOOT",
            ConsumerConfig(deliver_subject=SUBJECT, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )
        await wait_until(
            lambda: reloader.dropped == {"malformed": JUNK, "jetstream_delivery": DELIVERED},
            30,
            "every junk message and delivery dropped and counted",
            seen=lambda: dict(reloader.dropped),
        )
        elapsed = time.monotonic() - started
        assert applied == []
        assert reloader.reloads == 0
        lines = [r.getMessage() for r in caplog.records if r.name == "healthbus.reload"]
        for reason in ("malformed", "jetstream_delivery"):
            mine = [line for line in lines if f"({reason})" in line]
            assert 1 <= len(mine) <= 1 + int(elapsed // DROP_LOG_INTERVAL), lines
        # A notice from another process, as a coordinator sends it, still reloads.
        await nc.publish(SUBJECT, encode(ReloadNotice(sender="coordinator-a")))
        await wait_until(lambda: reloader.reloads == 1, 10, "the real notice to reload", seen=lambda: reloader.reloads)
        assert len(applied) == 1
