"""Live reload with real processes: `healthbus reload` (and the deprecated `ctl reload`) and
SIGHUP re-read the configuration of the coordinator and the probe worker; a removed target is
retired once and disappears."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import StateChanged
from healthbus.subscribers import HealthClient
from tests.cli._support import run_cli
from tests.e2e._stack import Stack, fast_config
from tests.helpers import Recorder, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of a /metrics page's samples of ``name`` with ``labels``."""
    return sum(
        float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_reload_adds_changes_and_retires_targets(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """healthbus reload: the new target is checked and decided, the removed one is retired once and
    gone from status and HealthClient; an invalid file is refused (ctl reload and SIGHUP) with
    the error naming file and field, and the running configuration keeps working."""
    port = nats_server.url.rsplit(":", 1)[1]
    up = f"tcp://127.0.0.1:{port}"
    stack = Stack(nats_server.url, fast_config([("bus", "tcp", up), ("old", "tcp", up)]), tmp_path / "s", probes=1)
    config = tmp_path / "s" / "healthbus.toml"
    nats = ("--nats", nats_server.url)
    try:
        await stack.start()
        async with HealthClient.connect(nats_server.url) as health:
            retired: Recorder[StateChanged] = Recorder()
            health.on_change(lambda e: retired.append(e) if e.retired else None)
            await health.wait_for("bus", "healthy", timeout=30)
            await health.wait_for("old", "healthy", timeout=30)

            config.write_text(fast_config([("bus", "tcp", up), ("new", "tcp", up)]))
            done = await run_cli("reload", *nats)
            assert done.code == 0, done.err
            assert "deprecated" not in done.err
            await health.wait_for("new", "healthy", timeout=30)
            await retired.wait(lambda items: len(items) >= 1, 10, "the retirement delivered")
            assert health.state("old") is None  # gone from the client before it was told
            assert [(e.target, e.state) for e in retired.items] == [("old", "unknown")]
            assert not health.is_available("old")

            # The probe worker was told by the coordinator: it checks bus and new, not old.
            assigned: list[object] = [None]

            async def worker_reloaded() -> bool:
                assigned[0] = samples(await stack.metrics("w1"), "healthbus_probe_assigned_targets")
                return assigned[0] == 2.0

            await wait_until(worker_reloaded, 10, "the probe worker to reload", seen=lambda: assigned[0])
            # Then two more checks of `new` (200 ms apart): a round that would have checked
            # `old` too, had the worker kept it.
            page = await stack.metrics("w1")
            before = samples(page, "healthbus_probe_checks_total", target="old")
            new_checks = samples(page, "healthbus_probe_checks_total", target="new")
            counted = [new_checks]

            async def new_checked_twice() -> bool:
                counted[0] = samples(await stack.metrics("w1"), "healthbus_probe_checks_total", target="new")
                return counted[0] >= new_checks + 2

            await wait_until(new_checked_twice, 10, "two more checks of the new target", seen=lambda: counted[0])
            assert samples(await stack.metrics("w1"), "healthbus_probe_checks_total", target="old") == before

            status = await run_cli("status", "--json", *nats)
            assert sorted(json.loads(line)["target"] for line in status.lines) == ["bus", "new"]

            # An invalid file: refused by `ctl reload` (deprecated, still working during 0.x:
            # exit 1) and by SIGHUP, naming file and field; everything keeps running with the
            # configuration it had.
            config.write_text(
                fast_config([("bus", "tcp", up), ("new", "tcp", up)]).replace('interval = "200ms"', 'interval = "soon"')
            )
            refused = await run_cli("ctl", "reload", *nats)
            assert refused.code == 1
            assert "healthbus ctl: `ctl reload` is deprecated: use `healthbus reload`" in refused.err
            assert str(config) in refused.err
            assert "interval" in refused.err
            assert stack.coordinator is not None
            stack.coordinator.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await wait_until(
                lambda: stack.coordinator.log().count("reload (SIGHUP) refused") == 1,  # type: ignore[union-attr]
                10,
                "the coordinator to refuse the file on SIGHUP",
                seen=lambda: stack.coordinator.log()[-1500:],  # type: ignore[union-attr]
            )
            assert health.is_available("bus")
            assert health.is_available("new")

            # SIGHUP to each process with a good file: a third target.
            config.write_text(fast_config([("bus", "tcp", up), ("new", "tcp", up), ("third", "tcp", up)]))
            stack.coordinator.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            stack.workers[0].proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await health.wait_for("third", "healthy", timeout=30)
        replay = await run_cli("replay", "--target", "old", "--json", *nats)
        events = [json.loads(line) for line in replay.lines]
        assert [e["retired"] for e in events].count(True) == 1
        assert events[-1]["retired"]
    except BaseException:
        print(stack.logs())
        raise
    finally:
        await stack.stop()
