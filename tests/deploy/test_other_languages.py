"""docs/clients.md: the Node example, run as written with node and nats.js under deploy/'s subscriber role.

A real nats-server runs deploy/nats/healthbus.conf; the coordinator role publishes
states; ``node follow.js`` (the docs' code block, with the packages of
tests/deploy/node/package-lock.json installed by ``npm ci``) must load them page by page
(batch 2), follow changes live, drop a retired target and skip a refresh, with no
permission violation. node or npm missing: skip (fail under CI=true); the npm registry
unreachable: the same.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from healthbus.bus import connect, ensure_stream
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import BusSettings, StateChanged, StreamSettings, utcnow
from tests.deploy.test_permissions import _password, secured_nats
from tests.harness._util import require, unavailable
from tests.helpers import publish_states, state_changed, wait_until

pytestmark = pytest.mark.nats

__all__ = ["secured_nats"]  # the fixture, shared with the permission tests

DOCS = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
PACKAGE = Path(__file__).resolve().parent / "node"


def examples() -> dict[str, str]:
    """Every ``<!-- example: NAME -->`` code block of docs/clients.md, by name."""
    return dict(re.findall(r"<!-- example: (\w+) -->\n```\w+\n(.*?)```", DOCS.read_text(), flags=re.S))


def test_every_example_is_run_here() -> None:
    """A new example in docs/clients.md needs a test here (the Go one is a sketch, not tagged)."""
    assert sorted(examples()) == ["node"]


@pytest.fixture(scope="module")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the docs' follow.js and nats.js installed from the vendored lock."""
    node = require("node", "install Node.js (Debian package nodejs)")
    npm = require("npm", "install npm (Debian package npm)")
    directory = tmp_path_factory.mktemp("node-client")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PACKAGE / name, directory / name)
    (directory / "follow.js").write_text(examples()["node"])
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"npm ci of nats.js failed (is the npm registry reachable?): {done.stderr.strip()[-500:]}")
    check = subprocess.run([node, "--check", "follow.js"], cwd=directory, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    return directory


@pytest.fixture
async def coordinator(secured_nats: EmbeddedNats) -> AsyncIterator[Client]:
    """A connection as the coordinator role, with the state stream created."""
    nc = await connect(BusSettings(url=secured_nats.url, user="coordinator", password=_password("coordinator")))
    await ensure_stream(nc.jetstream(), StreamSettings.for_prefix())
    try:
        yield nc
    finally:
        await nc.close()


class Follower:
    """``node follow.js`` as the subscriber role; its output line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._reader = asyncio.ensure_future(self._read(proc.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode().rstrip("\n"))

    async def wait_for(self, line: str, timeout: float = 30) -> None:
        async def seen() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {await self.stop()}; output {self.lines}")
            return line in self.lines

        # (a pipe from another process, which may exit: polled, with the lines so far on failure)
        await wait_until(seen, timeout, f"{line!r} from node", seen=lambda: self.lines)

    async def stop(self) -> str:
        """End node; its stderr."""
        if self.proc.returncode is None:
            self.proc.terminate()
        assert self.proc.stderr is not None
        err = await asyncio.wait_for(self.proc.stderr.read(), 30)
        await asyncio.wait_for(self.proc.wait(), 30)
        await self._reader
        return err.decode()


async def test_node_example_under_the_subscriber_role(
    node_project: Path, secured_nats: EmbeddedNats, coordinator: Client
) -> None:
    """Loaded in pages of 2 after subscribing, then live: a change, a refresh (not printed), a retirement."""
    now = utcnow()
    names = [f"svc-{i}" for i in range(5)]
    first = [state_changed(name, 1, "healthy", at=now - timedelta(minutes=5)) for name in names]
    down = state_changed("svc-2", 2, "unavailable", previous="healthy", at=now - timedelta(minutes=1))
    await publish_states(coordinator.jetstream(), "healthbus", [*first, down], ensure=False)

    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHBUS_")}
    env.update(
        NATS_URL=secured_nats.url,
        HEALTHBUS_USER="subscriber",
        HEALTHBUS_PASSWORD=_password("subscriber"),
        HEALTHBUS_BATCH="2",
    )
    proc = await asyncio.create_subprocess_exec(
        require("node", "install Node.js"),
        "follow.js",
        cwd=node_project,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    follower = Follower(proc)
    try:
        await follower.wait_for("loaded 5 targets")
        assert "state svc-2 unavailable seq=2 available=false" in follower.lines
        assert "state svc-0 healthy seq=1 available=true" in follower.lines

        # Live: a change, a refresh (seq moves, nothing printed), then a retirement.
        back = state_changed("svc-2", 3, "healthy", previous="unavailable")
        refresh: StateChanged = msgspec.structs.replace(
            state_changed("svc-0", 2, "healthy", previous="healthy"), unchanged_since=now - timedelta(minutes=5)
        )
        gone: StateChanged = msgspec.structs.replace(
            state_changed("svc-4", 2, "unknown", previous="healthy"), retired=True
        )
        after = state_changed("svc-0", 3, "degraded", previous="healthy")
        await publish_states(coordinator.jetstream(), "healthbus", [back, refresh, gone, after], ensure=False)
        await follower.wait_for("state svc-2 healthy seq=3 available=true")
        await follower.wait_for("retired svc-4")
        await follower.wait_for("state svc-0 degraded seq=3 available=true")
        assert not [line for line in follower.lines if "svc-0" in line and "seq=2" in line], follower.lines

        err = await follower.stop()
        assert "Permissions Violation" not in err, err
        assert "Error" not in err, err
    finally:
        await follower.stop()
