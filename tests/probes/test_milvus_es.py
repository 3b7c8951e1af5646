"""The milvus checker (milvus-lite server and local file) and the elasticsearch checker (ES-compatible server)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from healthbus.probes import build_checker
from healthbus.probes._checkers._milvus import split_milvus_url
from healthbus.protocol import Duration, TargetConfig
from tests.harness import free_port
from tests.harness._es import FakeElasticsearch
from tests.harness._milvus import MilvusServer
from tests.helpers import wait_until
from tests.probes._support import assert_refused_while_stopped

_ESTABLISHED = "01"  # the st column of /proc/net/tcp


def _connections_to(port: int) -> list[int]:
    """Local ports of this process's ESTABLISHED TCP connections to ``port`` (Linux
    ``/proc``): the sockets among our own file descriptors, not the server's ends."""
    ours: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            ours.add(link.removeprefix("socket:[").removesuffix("]"))
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == _ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port and inode in ours:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


def _target(kind: str, url: str, timeout: float = 3.0, **options: str | int | bool) -> TargetConfig:
    return TargetConfig(
        name="dep",
        kind=kind,  # type: ignore[arg-type]
        url=url,
        timeout=Duration(timeout),
        interval=Duration(5.0),
        options=dict(options),
    )


@pytest.mark.milvus
async def test_milvus_server_pass_fail_pass(milvus_server: MilvusServer) -> None:
    """get_server_version passes while up, fails as refused once stopped, passes after restart."""
    checker = build_checker(_target("milvus", milvus_server.uri))
    try:
        up = await checker.check()
        assert up.outcome == "pass", up
        assert up.details["mode"] == "server"
        assert str(up.details["server_version"])
        await assert_refused_while_stopped(checker, milvus_server)
    finally:
        await checker.close()


def test_milvus_url_forms() -> None:
    """Credentials come out of the URI; ``grpc://`` is pymilvus's ``tcp://`` (it refuses the former)."""
    assert split_milvus_url("grpc://u:p%40ss@db.example:19530") == ("tcp://db.example:19530", "u", "p@ss", False)
    assert split_milvus_url("http://db.example:19530/") == ("http://db.example:19530/", "", "", False)
    assert split_milvus_url("file:///var/lib/v.db") == ("/var/lib/v.db", "", "", True)
    assert split_milvus_url("./v.db") == ("./v.db", "", "", True)


@pytest.mark.milvus
async def test_milvus_server_answers_on_a_grpc_url(milvus_server: MilvusServer) -> None:
    """A ``grpc://`` URL (docs/probes.md lists it) checks the server like ``http://``."""
    url = "grpc://" + milvus_server.uri.split("://", 1)[1]
    checker = build_checker(_target("milvus", url))
    try:
        result = await checker.check()
        assert result.outcome == "pass", result
    finally:
        await checker.close()


@pytest.mark.milvus
async def test_milvus_checks_hold_no_connection_between_checks(milvus_server: MilvusServer) -> None:
    """Each check opens a gRPC channel of its own and closes it before returning, so no
    connection to the server outlives a check (pymilvus would otherwise share one channel
    per address and keep it after the client closed). With reuse_connection: one kept
    connection, a new one every fresh_connect_every checks, none after close()."""
    port = milvus_server.port

    def count(n: int) -> Callable[[], bool]:
        return lambda: len(_connections_to(port)) == n

    # gRPC closes a channel's socket in its own thread, just after close() returns: polled.
    assert _connections_to(port) == []
    fresh = build_checker(_target("milvus", milvus_server.uri))
    try:
        for i in range(4):
            result = await fresh.check()
            assert result.outcome == "pass", result
            await wait_until(count(0), 10, f"no connection after check {i + 1}", seen=lambda: _connections_to(port))
    finally:
        await fresh.close()
    reused = build_checker(_target("milvus", milvus_server.uri, reuse_connection=True, fresh_connect_every=3))
    try:
        used: list[int] = []
        for i in range(7):
            result = await reused.check()
            assert result.outcome == "pass", result
            await wait_until(count(1), 10, f"one connection after check {i + 1}", seen=lambda: _connections_to(port))
            used += _connections_to(port)
        # Checks 1-3 over one connection, 4-6 over a fresh one, 7 over a third.
        assert used == [used[0]] * 3 + [used[3]] * 3 + [used[6]], used
        assert len(set(used)) == 3, used
    finally:
        await reused.close()
    await wait_until(count(0), 10, "no connection after close()", seen=lambda: _connections_to(port))


@pytest.mark.milvus
async def test_milvus_local_file(tmp_path: Path) -> None:
    """A local Milvus Lite file (plain path or file:// URL) runs in-process and passes."""
    for url in (str(tmp_path / "vectors.db"), f"file://{tmp_path / 'other.db'}"):
        checker = build_checker(_target("milvus", url, timeout=30.0))
        try:
            result = await checker.check()
            assert result.outcome == "pass", result
            assert result.details["mode"] == "lite"
        finally:
            await checker.close()


async def test_elasticsearch_statuses(es_server: FakeElasticsearch) -> None:
    """green passes, yellow warns, red fails as unhealthy; details carry cluster name and node count."""
    checker = build_checker(_target("elasticsearch", es_server.url))
    try:
        green = await checker.check()
        assert green.outcome == "pass", green
        assert green.details["cluster_name"] == es_server.cluster_name
        assert green.details["number_of_nodes"] == 3
        es_server.set_health("yellow")
        yellow = await checker.check()
        assert yellow.outcome == "warn", yellow
        assert yellow.error_kind is None
        assert yellow.details["status"] == "yellow"
        es_server.set_health("red")
        red = await checker.check()
        assert red.outcome == "fail"
        assert red.error_kind == "unhealthy"
        assert red.details["unassigned_shards"] == 10
    finally:
        await checker.close()


async def test_elasticsearch_failures(es_server: FakeElasticsearch) -> None:
    """503 is unhealthy, a slow answer a timeout, a non-Elasticsearch server protocol, a closed port refused."""
    checker = build_checker(_target("elasticsearch", es_server.url, timeout=0.5))
    try:
        es_server.set_health("green", http_status=503)
        assert (await checker.check()).error_kind == "unhealthy"
        es_server.set_health("green", delay=2.0)
        assert (await checker.check()).error_kind == "timeout"
        es_server.set_health("green")
        assert (await checker.check()).outcome == "pass"
        await assert_refused_while_stopped(checker, es_server)
    finally:
        await checker.close()
    fresh = build_checker(_target("elasticsearch", es_server.url))
    try:
        es_server.set_health("green", product_header=False)
        assert (await fresh.check()).error_kind == "protocol"
    finally:
        await fresh.close()


async def test_elasticsearch_dns_and_refused_are_told_apart(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong ES host name fails as dns and a closed port as refused, each saying why, with no per-check log spam."""
    port = free_port()
    dns = build_checker(_target("elasticsearch", "http://elastic:S3cretEs@no-such-host.invalid:9200"))
    closed = build_checker(_target("elasticsearch", f"http://elastic:S3cretEs@127.0.0.1:{port}"))
    try:
        with caplog.at_level("INFO"):
            for _ in range(2):
                by_dns, by_port = await dns.check(), await closed.check()
        assert (by_dns.error_kind, by_port.error_kind) == ("dns", "refused")
        assert "no-such-host.invalid" in (by_dns.error or "")
        assert str(port) in (by_port.error or "")
        assert not [r for r in caplog.records if r.name.startswith("elastic_transport")]
    finally:
        await dns.close()
        await closed.close()
