"""`healthbus reload` under deploy/nats/healthbus.conf: the operator may ask, the coordinator
may tell the probe workers (ReloadNotice on healthbus.worker.reload), and no role needs more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthbus.bus.embedded import EmbeddedNats, free_port
from tests.cli._support import run_cli
from tests.deploy.test_permissions import _password, secured_nats
from tests.e2e._procs import Command
from tests.e2e._stack import fast_config
from tests.helpers import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

__all__ = ["secured_nats"]  # the fixture, shared with the permission tests


def assigned_is(http: str, expected: float) -> Callable[[], Awaitable[bool]]:
    """A condition: the probe worker's healthbus_probe_assigned_targets is ``expected``."""

    async def check() -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"http://{http}/metrics") as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "healthbus_probe_assigned_targets":
                    check.seen = s.value  # type: ignore[attr-defined]
                    return float(s.value) == expected
        return False

    check.seen = None  # type: ignore[attr-defined]
    return check


async def test_ctl_reload_under_the_shipped_permissions(secured_nats: EmbeddedNats, tmp_path: Path) -> None:
    """Coordinator, probe worker and operator each with their own credentials: a reload reaches all."""
    port = secured_nats.url.rsplit(":", 1)[1]
    up = f"tcp://127.0.0.1:{port}"
    config = tmp_path / "healthbus.toml"
    config.write_text(fast_config([("bus", "tcp", up)]))
    common = ["--config", str(config), "--nats", secured_nats.url]
    coord_http, probe_http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    coordinator = Command(
        ["coordinator", *common, "--user", "coordinator", "--http", coord_http, "-v"],
        tmp_path / "coordinator.log",
        env={"HEALTHBUS_NATS_PASSWORD": _password("coordinator")},
    )
    probe = Command(
        ["probe", *common, "--user", "probe-0", "--id", "probe-0", "--http", probe_http, "-v"],
        tmp_path / "probe.log",
        env={"HEALTHBUS_NATS_PASSWORD": _password("probe-0")},
    )
    try:
        await coordinator.start()
        await coordinator.wait_http_ready(f"http://{coord_http}")
        await probe.start()
        await probe.wait_http_ready(f"http://{probe_http}")
        one = assigned_is(probe_http, 1.0)
        await wait_until(one, 15, "the worker to check one target", seen=lambda: one.seen)  # type: ignore[attr-defined]

        config.write_text(fast_config([("bus", "tcp", up), ("bus2", "tcp", up)]))
        done = await run_cli(
            "reload",
            "--nats",
            secured_nats.url,
            "--user",
            "operator",
            env={"HEALTHBUS_NATS_PASSWORD": _password("operator")},
        )
        assert done.code == 0, done.err
        two = assigned_is(probe_http, 2.0)
        await wait_until(two, 15, "the worker to reload on the notice", seen=lambda: two.seen)  # type: ignore[attr-defined]
        for proc in (coordinator, probe):
            assert "ermission" not in proc.log(), proc.log()[-2000:]
    except BaseException:
        print(coordinator.log()[-3000:], probe.log()[-3000:])
        raise
    finally:
        await probe.stop()
        await coordinator.stop()
