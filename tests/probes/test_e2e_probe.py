"""End to end: ``healthbus probe`` as a subprocess against real servers, observed on <prefix>.probe.>."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import aiohttp
import nats
import pytest

from healthbus.bus import ensure_stream
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import StreamSettings, utcnow
from tests.cli._support import run_cli
from tests.e2e._procs import Command
from tests.harness._es import FakeElasticsearch
from tests.harness._milvus import MilvusServer
from tests.harness._postgres import PostgresServer
from tests.harness._redis import RedisServer
from tests.harness._util import free_port
from tests.helpers import open_event, publish_states
from tests.probes._support import Collector, result_of, unique_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]

REDIS_PASSWORD = "e2e-Redis-pw-9Tq"
PG_PASSWORD = "e2e-Pg-pw-4Xw"
WRONG_PASSWORD = "e2e-Wrong-pw-7Zk"


@asynccontextmanager
async def probe_process(
    tmp_path: Path, config_text: str, nats_url: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Command]:
    """Run ``healthbus probe --config F --nats URL --id w1 -v`` (output in probe.log) and always stop it."""
    config = tmp_path / "healthbus.toml"
    config.write_text(config_text, encoding="utf-8")
    argv = ["probe", "--config", str(config), "--nats", nats_url, "--id", "w1", "-v", *args]
    command = await Command(argv, tmp_path / "probe.log", env=env).start()
    try:
        yield command
    finally:
        await command.stop()


async def test_probe_command_end_to_end(
    tmp_path: Path,
    nats_server: EmbeddedNats,
    redis_server_factory: object,
    postgres_server_factory: object,
    milvus_server: MilvusServer,
    es_server: FakeElasticsearch,
) -> None:
    """Every kind passes while up, fails with the right kind when stopped, passes after restart;
    ES yellow warns; no password anywhere; SIGTERM exits 0; /metrics and /readyz answer."""
    redis: RedisServer = redis_server_factory(password=REDIS_PASSWORD)  # type: ignore[operator]
    pg: PostgresServer = postgres_server_factory(password=PG_PASSWORD)  # type: ignore[operator]
    prefix = unique_prefix()
    http_port = free_port()
    # Checks get 2 s: each opens a fresh connection (pymilvus's is the slowest), which took longer than the
    # 400 ms this test used to allow on a loaded machine, and a check past its timeout fails, as it should.
    config = f"""
[bus]
prefix = "{prefix}"
[defaults]
interval = "2s"
timeout = "2s"
[[targets]]
name = "cache"
kind = "redis"
url = "redis://:${{REDIS_PASSWORD}}@{redis.host}:{redis.port}/0"
[[targets]]
name = "cache-wrong"
kind = "redis"
url = "redis://:${{WRONG_PASSWORD}}@{redis.host}:{redis.port}/0"
[[targets]]
name = "db"
kind = "postgres"
url = "postgresql://postgres:${{PG_PASSWORD}}@127.0.0.1:{pg.port}/postgres"
[[targets]]
name = "vectors"
kind = "milvus"
url = "{milvus_server.uri}"
[[targets]]
name = "search"
kind = "elasticsearch"
url = "{es_server.url}"
[[targets]]
name = "local"
kind = "sqlalchemy"
url = "sqlite+aiosqlite:///{tmp_path / "app.db"}"
"""
    env = {"REDIS_PASSWORD": REDIS_PASSWORD, "PG_PASSWORD": PG_PASSWORD, "WRONG_PASSWORD": WRONG_PASSWORD}
    nc = await nats.connect(nats_server.url)
    results = Collector(prefix)
    await results.subscribe(nc)
    try:
        async with probe_process(tmp_path, config, nats_server.url, "--http", f"127.0.0.1:{http_port}", env=env) as p:
            # A cold start (the checkers' client libraries, pymilvus's above all) took over 30 s at
            # load 9: first the worker is ready, then its first results have 30 s.
            await p.wait_http_ready(f"http://127.0.0.1:{http_port}", timeout=90)
            for name in ("cache", "db", "vectors", "search", "local"):
                try:
                    await results.wait_for(result_of(name, "pass"), timeout=30)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nthe probe's log ends:\n{p.log()[-2000:]}") from None
            wrong = await results.wait_for(lambda r: r.target == "cache-wrong")
            assert wrong.error_kind == "auth"

            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{http_port}/readyz") as resp:
                    assert resp.status == 200
                async with http.get(f"http://127.0.0.1:{http_port}/metrics") as resp:
                    metrics = await resp.text()
            assert 'healthbus_probe_checks_total{outcome="pass",target="cache"}' in metrics

            servers: dict[str, RedisServer | PostgresServer | MilvusServer | FakeElasticsearch] = {
                "cache": redis,
                "db": pg,
                "vectors": milvus_server,
                "search": es_server,
            }
            for name, server in servers.items():
                mark = results.mark()
                server.stop()
                down = await results.wait_for(result_of(name, "fail"), after=mark)
                assert down.error_kind == "refused", down
                mark = results.mark()
                server.start()
                await results.wait_for(result_of(name, "pass"), after=mark, timeout=30)

            mark = results.mark()
            es_server.set_health("yellow")
            yellow = await results.wait_for(lambda r: r.target == "search" and r.outcome != "pass", after=mark)
            assert yellow.outcome == "warn"
            assert yellow.details["status"] == "yellow"

            assert await p.signal(signal.SIGTERM) == 0
            logged = p.log()
    finally:
        await nc.close()
    assert "cache-wrong: fail (auth)" in logged
    for secret in (REDIS_PASSWORD, PG_PASSWORD, WRONG_PASSWORD):
        assert secret not in logged
        assert all(secret.encode() not in raw for raw in results.raw)


async def test_probe_command_honours_retry_at(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    """With a StateChanged saying breaker open until retry_at, the command does not check the target
    before retry_at, checks it at once after, and meanwhile checks the others."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    prefix = unique_prefix()
    config = f"""
[bus]
prefix = "{prefix}"
[defaults]
interval = "300ms"
timeout = "250ms"
[[targets]]
name = "held"
kind = "tcp"
url = "tcp://127.0.0.1:{port}"
[[targets]]
name = "free"
kind = "tcp"
url = "tcp://127.0.0.1:{port}"
"""
    nc = await nats.connect(nats_server.url)
    results = Collector(prefix)
    await results.subscribe(nc)
    js = nc.jetstream()
    await ensure_stream(js, StreamSettings.for_prefix(prefix))
    try:
        async with probe_process(tmp_path, config, nats_server.url) as p:
            await results.wait_for(lambda r: r.target == "held")
            now = utcnow()
            event = open_event("held", 1, retry_in=3, at=now)
            await publish_states(js, prefix, [event], ensure=False)
            retry_at = now + timedelta(seconds=3)
            trial = await results.wait_for(lambda r: r.target == "held" and r.observed_at >= retry_at, timeout=20)
            # Delivery to the worker takes milliseconds; allow 0.5 s for it and a check in flight.
            grace = now + timedelta(seconds=0.5)
            assert [r for r in results.of("held") if grace < r.observed_at < retry_at] == []
            assert trial.observed_at - retry_at < timedelta(seconds=2)
            assert len([r for r in results.of("free") if grace < r.observed_at < retry_at]) >= 4
            assert await p.signal(signal.SIGINT) == 0  # Ctrl-C is a clean stop too
    finally:
        await nc.close()
        listener.close()
        await listener.wait_closed()


async def test_probe_command_config_errors(tmp_path: Path) -> None:
    """A missing --config or a bad kind option is a usage error (exit 2) naming the problem."""
    missing = await run_cli("probe", "--nats", "nats://127.0.0.1:1", timeout=60)
    assert missing.code == 2
    assert "--config" in missing.err
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[targets]]\nname = "api"\nkind = "http"\nurl = "http://127.0.0.1:1/"\noptions = { expect_status = "abc" }\n'
    )
    result = await run_cli("probe", "--config", str(bad), "--nats", "nats://127.0.0.1:1", timeout=60)
    assert result.code == 2
    assert "expect_status" in result.err
    assert "api" in result.err
