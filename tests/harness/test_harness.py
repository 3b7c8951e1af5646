"""Tests of the real-server harness itself: each server starts, answers its real client,
stops so the client fails, and restarts on the same port so the client works again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import nats
import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from healthbus.bench.support import listens_on
from healthbus.bus.embedded import EmbeddedNats, ServerStartError

from . import FakeElasticsearch, MilvusServer, NatsCluster, PostgresServer, RedisServer, free_port, require


async def _silent(_exc: Exception) -> None:
    """nats-py error callback that keeps expected connection failures out of the log."""


async def _nats_connect(url: str) -> NATS:
    """A fail-fast nats-py client: two quick tries, then NoServersError.

    ``max_reconnect_attempts=0`` would retry the initial connect forever in nats-py 2.16.
    """
    return await nats.connect(
        url,
        connect_timeout=1,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.05,
        error_cb=_silent,
    )


def _alive(pid: int) -> bool:
    """True when a process with this pid exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- helpers


def test_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    """free_port() returns a port nobody listens on, below the range outgoing connections take theirs from.

    (A port from that range can be taken by any connection between the call and the server's bind: CI met
    "address already in use" that way.)
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        assert 10000 <= port < low, port
    assert len(ports) > 1, "drawn at random"


def test_require_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """require() skips for a missing dependency, but fails when CI=true."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-binary-xyz"):
        require("no-such-binary-xyz", "only a test")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require("no-such-binary-xyz", "only a test")
    assert require("sys", "stdlib module") == "sys"


# ---------------------------------------------------------------- NATS


@pytest.mark.nats
async def test_nats_server_jetstream_stop_start_restart(nats_server: EmbeddedNats) -> None:
    """JetStream works; a stopped server refuses clients; restart keeps port and stream data."""
    port = nats_server.port
    nc = await _nats_connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="HARNESS", subjects=["harness.>"])
    ack = await js.publish("harness.one", b"1")
    assert ack.seq == 1
    await nc.close()

    nats_server.stop()
    assert not nats_server.is_running
    with pytest.raises(NoServersError):
        await _nats_connect(nats_server.url)

    nats_server.start()
    assert nats_server.port == port
    nc = await _nats_connect(nats_server.url)
    js = nc.jetstream()
    assert (await js.stream_info("HARNESS")).state.messages == 1
    await nc.close()

    nats_server.restart()
    assert nats_server.port == port
    nc = await _nats_connect(nats_server.url)
    msg = await nc.jetstream().get_last_msg("HARNESS", "harness.one")
    assert msg.data == b"1"
    await nc.close()


@pytest.mark.nats
async def test_embedded_nats_kill_leaves_no_process_and_keeps_data(tmp_path: Path) -> None:
    """kill() is SIGKILL and reaps the child; the next start recovers the JetStream store."""
    with EmbeddedNats(tmp_path, monitor_port=0) as server:
        assert server.monitor_url is not None
        nc = await _nats_connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="CRASH", subjects=["crash.>"])
        for i in range(3):
            await js.publish("crash.x", str(i).encode())
        await nc.close()

        pid = server.pid
        assert pid is not None
        server.kill()
        assert not server.is_running
        assert not _alive(pid)

        server.start()
        nc = await _nats_connect(server.url)
        info = await nc.jetstream().stream_info("CRASH")
        assert info.state.messages == 3
        await nc.close()
        pid = server.pid
    assert pid is not None
    assert not _alive(pid)
    assert server.store_dir.is_dir()


@pytest.mark.nats
def test_embedded_nats_start_failure_names_the_problem(tmp_path: Path) -> None:
    """A server that cannot start raises ServerStartError with its log tail, leaving no process."""
    bad = tmp_path / "bad.conf"
    bad.write_text("this is { not a valid config\n")
    server = EmbeddedNats(tmp_path / "data", config_file=bad)
    with pytest.raises(ServerStartError, match="nats-server") as info:
        server.start()
    assert "Parse error" in str(info.value)  # the log tail says why
    assert not server.is_running


@pytest.mark.nats
async def test_embedded_nats_async_wrappers(tmp_path: Path) -> None:
    """astart()/astop() run the lifecycle without blocking the event loop."""
    server = EmbeddedNats(tmp_path)
    await server.astart()
    try:
        nc = await _nats_connect(server.url)
        assert nc.is_connected
        await nc.close()
    finally:
        await server.astop()
    assert not server.is_running


@pytest.mark.nats
def test_embedded_nats_dies_with_its_parent(tmp_path: Path) -> None:
    """A nats-server started by a process that is SIGKILLed goes away too (no orphans)."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from healthbus.bus.embedded import EmbeddedNats\n"
        f"s = EmbeddedNats({str(tmp_path)!r}).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for another process to exit: there is no event
        assert not _alive(child_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


@pytest.mark.nats
@pytest.mark.slow
async def test_nats_cluster_survives_losing_one_node(nats_cluster: NatsCluster) -> None:
    """An R3 stream keeps accepting publishes with one node killed; the node rejoins on restart."""
    nc = await nats.connect(servers=nats_cluster.urls, connect_timeout=2, error_cb=_silent)
    try:
        js = nc.jetstream()
        await js.add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
        # add_stream returns once the stream is assigned, before its three replicas have
        # elected a leader: until then nobody answers a publish (a CI run saw "no responders").
        assert (await _publish_until_accepted(js, "r3.a", b"1")).seq == 1

        # Kill the stream leader (unless we are connected to it): a new one must be elected.
        info = await js.stream_info("R3")
        assert info.cluster is not None
        leader = info.cluster.leader
        connected_port = nc.connected_url.port if nc.connected_url else None
        victim = next(
            (s for s in nats_cluster.servers if s.server_name == leader and s.port != connected_port),
            next(s for s in nats_cluster.servers if s.port != connected_port),
        )
        victim.kill()
        # Publishes fail until the survivors elect a leader.
        assert (await _publish_until_accepted(js, "r3.a", b"2")).seq == 2

        victim.start()
        nats_cluster.wait_healthy()
        assert (await js.stream_info("R3")).state.messages == 2
    finally:
        await nc.close()


async def _publish_until_accepted(js: JetStreamContext, subject: str, data: bytes) -> PubAck:
    """Publish, retrying (as a real publisher would) while the stream has no leader; at most 20 s."""
    async with asyncio.timeout(20):
        while True:
            try:
                return await js.publish(subject, data, timeout=1)
            except (NoStreamResponseError, nats.errors.TimeoutError):
                await asyncio.sleep(0.05)


# ---------------------------------------------------------------- Redis


def _redis_client(url: str) -> aioredis.Redis:
    """A redis-py client that fails fast (no retries, short timeouts)."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry_on_timeout=False)


@pytest.mark.redis
def test_a_port_another_program_holds_is_not_mistaken_for_the_server(tmp_path: Path) -> None:
    """A server restarted on a port another program took meanwhile fails with its own
    reason ("Address already in use"), instead of passing for ready because something
    answered on the port (a shared machine runs other suites that pick free ports too)."""
    require("redis-server", "install redis-server (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        assert server.pid is not None
        assert listens_on(server.pid, server.port) is True
        server.stop()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", server.port))
            squatter.listen()
            assert listens_on(os.getpid(), server.port) is True
            with pytest.raises(ServerStartError, match="exited") as info:
                server.start()
            assert "in use" in str(info.value)  # redis-server's own reason, from its log
            assert not server.is_running
    finally:
        server.stop()


@pytest.mark.redis
async def test_redis_server_ping_stop_restart(redis_server: RedisServer) -> None:
    """PING works; a stopped server refuses; restart on the same port answers again."""
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.password is None
    port = redis_server.port
    client = _redis_client(redis_server.url)
    assert await client.ping() is True
    await client.set("k", "v")
    await client.aclose()

    redis_server.stop()
    client = _redis_client(redis_server.url)
    with pytest.raises(RedisConnectionError):
        await client.ping()
    await client.aclose()

    redis_server.start()
    assert redis_server.port == port
    client = _redis_client(redis_server.url)
    assert await client.ping() is True
    await client.aclose()

    redis_server.restart()
    client = _redis_client(redis_server.url)
    assert await client.ping() is True
    await client.aclose()


@pytest.mark.redis
async def test_redis_password_rejects_wrong_password(redis_server_factory: Callable[..., RedisServer]) -> None:
    """A server started with a password accepts it and rejects a wrong or missing one."""
    server = redis_server_factory(password="s3cret-pw")
    assert server.url == f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
    client = _redis_client(server.url)
    assert await client.ping() is True
    await client.aclose()

    wrong = _redis_client(f"redis://:wrong@127.0.0.1:{server.port}/0")
    with pytest.raises(AuthenticationError):
        await wrong.ping()
    await wrong.aclose()

    anonymous = _redis_client(f"redis://127.0.0.1:{server.port}/0")
    with pytest.raises((AuthenticationError, ResponseError)):
        await anonymous.ping()
    await anonymous.aclose()


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
async def test_postgres_server_select_stop_restart(postgres_server: PostgresServer) -> None:
    """SELECT 1 works; a stopped server refuses; restart keeps port and data."""
    assert postgres_server.dsn == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    port = postgres_server.port
    conn = await asyncpg.connect(postgres_server.dsn, timeout=5)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    await conn.close()

    postgres_server.stop()
    assert not postgres_server.is_running
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(postgres_server.dsn, timeout=5)

    postgres_server.start()
    assert postgres_server.port == port
    conn = await asyncpg.connect(postgres_server.dsn, timeout=5)
    assert await conn.fetchval("SELECT x FROM kept") == 42
    await conn.close()

    postgres_server.kill()
    postgres_server.restart()
    conn = await asyncpg.connect(postgres_server.dsn, timeout=5)
    assert await conn.fetchval("SELECT x FROM kept") == 42
    await conn.close()


@pytest.mark.postgres
async def test_postgres_password_rejects_wrong_password(
    postgres_server_factory: Callable[..., PostgresServer],
) -> None:
    """With a password, the right one logs in; a wrong or missing one fails without echoing it."""
    server = postgres_server_factory(password="pg-s3cret")
    assert server.dsn == f"postgresql://postgres:pg-s3cret@127.0.0.1:{server.port}/postgres"
    conn = await asyncpg.connect(server.dsn, timeout=5)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    with pytest.raises(asyncpg.InvalidPasswordError) as info:
        await asyncpg.connect(f"postgresql://postgres:wrong-pw@127.0.0.1:{server.port}/postgres", timeout=5)
    assert "wrong-pw" not in str(info.value)
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.ClientConfigurationError)):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", timeout=5)


# ---------------------------------------------------------------- Elasticsearch stand-in


async def test_es_server_answers_the_official_client(es_server: FakeElasticsearch) -> None:
    """AsyncElasticsearch reads health from the stand-in; status, HTTP errors and stop/start show."""
    from elasticsearch import ApiError, AsyncElasticsearch
    from elasticsearch import ConnectionError as EsConnectionError

    client = AsyncElasticsearch(es_server.url, request_timeout=2, max_retries=0, retry_on_timeout=False)
    try:
        health = await client.cluster.health()
        assert health["status"] == "green"
        assert health["number_of_nodes"] == 3
        assert (await client.info())["version"]["number"]

        es_server.set_health(status="yellow")
        assert (await client.cluster.health())["status"] == "yellow"
        es_server.set_health(status="red")
        assert (await client.cluster.health())["unassigned_primary_shards"] > 0

        es_server.set_health(http_status=503)
        with pytest.raises(ApiError) as info:
            await client.cluster.health()
        assert info.value.meta.status == 503

        es_server.set_health()
        port = es_server.port
        es_server.stop()
        with pytest.raises(EsConnectionError):
            await client.cluster.health()
        es_server.start()
        assert es_server.port == port
        assert (await client.cluster.health())["status"] == "green"
        assert ("GET", "/_cluster/health") in es_server.requests
    finally:
        await client.close()


async def test_es_server_delay_times_the_client_out(es_server: FakeElasticsearch) -> None:
    """A delay longer than the client's timeout gives ConnectionTimeout; stop() ends the wait."""
    from elasticsearch import AsyncElasticsearch, ConnectionTimeout

    es_server.set_health(delay=30)
    client = AsyncElasticsearch(es_server.url, request_timeout=0.2, max_retries=0, retry_on_timeout=False)
    try:
        with pytest.raises(ConnectionTimeout):
            await client.cluster.health()
    finally:
        await client.close()
    es_server.stop()  # returns at once although a handler is still "waiting" 30 s
    assert not es_server.is_running


async def test_es_server_without_product_header_is_refused(es_server: FakeElasticsearch) -> None:
    """Without X-Elastic-Product the official client raises UnsupportedProductError."""
    from elasticsearch import AsyncElasticsearch, UnsupportedProductError

    es_server.set_health(product_header=False)
    client = AsyncElasticsearch(es_server.url, request_timeout=2, max_retries=0)
    try:
        with pytest.raises(UnsupportedProductError):
            await client.cluster.health()
    finally:
        await client.close()


# ---------------------------------------------------------------- Milvus


def _milvus_version(uri: str) -> str:
    """One short-lived client with its own connection.

    pymilvus 3 shares one gRPC connection per URI and keeps it after every client closed;
    after a server restart that stale channel keeps failing. ``dedicated=True`` gives the
    client a connection of its own, closed by ``close()``.
    """
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=2, dedicated=True)
    try:
        version: str = client.get_server_version(timeout=2)
    finally:
        client.close()
    return version


@pytest.mark.milvus
def test_milvus_server_version_stop_restart(milvus_server: MilvusServer) -> None:
    """get_server_version works; a stopped server fails the client; restart keeps port and collections."""
    from pymilvus import MilvusClient, MilvusException

    assert milvus_server.uri == f"http://127.0.0.1:{milvus_server.port}"
    port = milvus_server.port
    assert _milvus_version(milvus_server.uri)
    client = MilvusClient(uri=milvus_server.uri, timeout=5, dedicated=True)
    client.create_collection("kept", dimension=4)
    client.close()

    milvus_server.stop()
    with pytest.raises(MilvusException):
        _milvus_version(milvus_server.uri)

    milvus_server.start()
    assert milvus_server.port == port
    client = MilvusClient(uri=milvus_server.uri, timeout=5, dedicated=True)
    assert "kept" in client.list_collections()
    client.close()


def _catches(pid: int, sig: int) -> bool | None:
    """Whether process ``pid`` has a handler for ``sig`` (its ``SigCgt`` mask); None without ``/proc``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.milvus
def test_milvus_server_shuts_down_on_sigint_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A suite started as a background job (``bash -c 'pytest ... &'``) runs with SIGINT ignored,
    and children inherit that: the server still handles the SIGINT it is stopped with (through
    its own "Shutting down..." path, or a KeyboardInterrupt where the signal finds it still
    starting up) and exits by it, not by the SIGKILL after stop_timeout."""
    require("milvus_lite", "install the milvus extra (pip install 'healthbus-probes[milvus]')")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what such a background job inherits
    try:
        server = MilvusServer(tmp_path / "milvus").start()
    finally:
        signal.signal(signal.SIGINT, previous)
    proc = server._proc
    try:
        pid = server.pid
        assert pid is not None
        assert _catches(pid, signal.SIGINT) in (True, None)
    finally:
        server.stop()
    assert proc is not None
    assert proc.returncode != -signal.SIGKILL, server.log_path.read_text()
    log = server.log_path.read_text()
    assert "Shutting down" in log or "KeyboardInterrupt" in log, log
