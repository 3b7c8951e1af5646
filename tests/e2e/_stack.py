"""A whole healthbus deployment for end-to-end tests: coordinator + probe workers, as real commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from healthbus.bus.embedded import free_port
from tests.e2e._procs import Command

__all__ = ["Stack", "fast_config"]


def fast_config(
    targets: Sequence[tuple[str, str, str]],
    *,
    backoff_base: str = "1s",
    trial_interval: str = "500ms",
    ramp: str = "0s",
) -> str:
    """A config with short intervals (a flip takes well under a second) for (name, kind, url) targets.

    An open breaker is trialled every ``trial_interval`` (its first trial that long after
    it opened), so an outage is held ``unavailable`` while the dependency is down; a
    failed re-admission waits ``backoff_base`` and more (no jitter). The re-admission
    ramp lasts ``ramp`` (none by default: instances are admitted with the event; the ramp
    has its own tests in tests/e2e/test_recovery.py); flap detection is off because a
    test outage is deliberately short.
    """
    lines = [
        "[defaults]",
        'interval = "200ms"',
        'timeout = "150ms"',
        "failure_threshold = 2",
        "success_threshold = 2",
        f'backoff = {{ base = "{backoff_base}", multiplier = 2.0, max = "4s", jitter = "none" }}',
        f'trial_interval = "{trial_interval}"',
        f'ramp = {{ duration = "{ramp}" }}',
        "flap = { enabled = false }",
        "",
        "[coordinator]",
        'tick = "50ms"',
        "",
        "[probes]",
        'heartbeat = "500ms"',
    ]
    for name, kind, url in targets:
        lines += ["", "[[targets]]", f'name = "{name}"', f'kind = "{kind}"', f'url = "{url}"', 'features = ["cache"]']
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    """``healthbus coordinator`` and N ``healthbus probe --id w<i>`` against one NATS server."""

    nats_url: str
    config_text: str
    workdir: Path
    probes: int = 2
    coordinator: Command | None = None
    workers: list[Command] = field(default_factory=list)
    http: dict[str, str] = field(default_factory=dict)

    async def start(self) -> Stack:
        """Write the config, start every process and wait until each says it is ready."""
        config = self.workdir / "healthbus.toml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config.write_text(self.config_text)
        common = ["--config", str(config), "--nats", self.nats_url]
        self.http["coordinator"] = f"127.0.0.1:{free_port()}"
        self.coordinator = await Command(
            ["coordinator", *common, "--http", self.http["coordinator"], "-v"], self.workdir / "coordinator.log"
        ).start()
        for i in range(1, self.probes + 1):
            name = f"w{i}"
            self.http[name] = f"127.0.0.1:{free_port()}"
            worker = await Command(
                ["probe", *common, "--id", name, "--http", self.http[name], "-v"], self.workdir / f"probe-{name}.log"
            ).start()
            self.workers.append(worker)
        await self.coordinator.wait_http_ready(f"http://{self.http['coordinator']}")
        for i, worker in enumerate(self.workers, 1):
            await worker.wait_http_ready(f"http://{self.http[f'w{i}']}")
        return self

    async def metrics(self, name: str) -> str:
        """The Prometheus text of ``name`` (coordinator, w1, w2...)."""
        async with aiohttp.ClientSession() as http, http.get(f"http://{self.http[name]}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    def logs(self) -> str:
        """Every process's log, for a failure message."""
        procs = [p for p in (self.coordinator, *self.workers) if p is not None]
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in procs)

    async def stop(self) -> dict[str, int | None]:
        """Stop the workers, then the coordinator (SIGTERM, then kill); their exit codes."""
        codes: dict[str, int | None] = {}
        for i, worker in enumerate(self.workers, 1):
            codes[f"w{i}"] = await worker.stop()
        if self.coordinator is not None:
            codes["coordinator"] = await self.coordinator.stop()
        return codes
