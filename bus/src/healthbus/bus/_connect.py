"""Connecting to NATS, shared by every healthbus component.

nats-py's defaults are wrong for us: against a dead server ``nats.connect()`` takes
about two minutes to give up and logs a traceback on every try. Here a
first connect fails within ``connect_timeout`` (plus a few quick retries) with a
:class:`BusUnavailable` that names the server without credentials, and once connected
the client reconnects forever with backoff in the background.

TLS: ``[bus] tls_ca`` / ``tls_cert`` / ``tls_key`` (or an ``ssl.SSLContext`` given as
``tls=``). A TLS failure during the first connect (an untrusted server certificate, a
server that wants a client certificate) is permanent: it fails at once, with one line
saying what to fix, instead of being retried. Unreadable TLS files are a
:class:`~healthbus.protocol.ConfigError`.

Reconnects are spread: after a server restart every client of a fleet would otherwise
try again at the same moments (nats-py waits a fixed ``reconnect_time_wait``), and the
returning server meets them all at once. Here each try waits a random time (full jitter)
up to a cap that doubles per failed try, from :data:`RECONNECT_FIRST_MAX` to
:data:`RECONNECT_MAX` (:func:`reconnect_delay`).

The connection is a :class:`PongSafeClient`, nats-py's client with three fixes: in nats-py 2.16 a ``flush()``
or ``rtt()`` that times out (nats-py's own flush after every reconnect does, against a busy
server) leaves its PONG waiter behind, and the late PONG then raises ``InvalidStateError``
in the read loop, which stops reading for good while the connection still says it is
connected (docs/upstream/nats-py-pong.md); ``flush()`` writes its PING straight to the
socket, ahead of the SUBs and PUBs still queued for nats-py's flusher task, so its PONG
could come back before the server had them (docs/upstream/nats-py-flush.md): here they go
first, and a returned ``flush()`` means the server has read everything sent before it; and
with one leak closed: a reconnect try whose handshake failed left its connection's stream
writer open.

Its reconnect is also leaner than nats-py's, which a fleet reconnecting to a restarted server
pays for ten thousand times at once: nats-py writes CONNECT, waits for a PONG, writes each
replayed subscription separately, then PING again and waits for a second PONG before it calls
``reconnected_cb``. Here one write carries CONNECT, PING, every replayed SUB (and the UNSUB of a
subscription with a message limit) and the commands buffered while disconnected, and the one
PONG (or ``-ERR``) that answers it ends the handshake: the server handles a connection's
commands in order, so whatever is sent after ``reconnected_cb`` reaches it after the replay.
The buffered commands stay buffered until a try is answered with that PONG: a refused try
sends them again with the next. What :attr:`PongSafeClient.handshake_cb` subscribes during a
try joins that write too (HealthClient asks for its catch-up digest there).
(docs/performance.md, "A leaner reconnect": per reconnect about 10 % less CPU in the client and
17 % less in the server in one process, 18 % and 23 % with 10,000 connections on two cores.)
Its TCP connections run on a bare non-blocking socket (:class:`~healthbus.bus._transport.SocketTransport`),
not on asyncio streams, which cost a connection several event-loop callbacks to make, read and close.

Every client's reply inboxes live under its own prefix (``BusSettings.effective_inbox_prefix``,
``_INBOX.<user>`` by default), so a NATS user needs subscribe permission on that prefix only
and cannot read other roles' replies (``deploy/nats/healthbus.conf``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from nats import errors as nats_errors
from nats.aio.client import DEFAULT_BUFFER_SIZE, Client, Server, Srv
from nats.aio.transport import Transport
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from nats.protocol import command as nats_command

from healthbus.bus._transport import SocketTransport
from healthbus.protocol import BusSettings, ConfigError, StreamSettings, redact, redact_url

log = logging.getLogger("healthbus.bus")

DEFAULT_URL: Final = "nats://127.0.0.1:4222"

SUBSCRIBER_INBOX_PREFIX: Final = "_INBOX.subscriber"
"""The inbox prefix of a HealthClient's own connection (``inbox_prefix`` in nats-py),
unless ``[bus] inbox_prefix`` says otherwise: ``_INBOX.<user>`` for the ``subscriber``
user of ``deploy/``, the same convention every role follows.

The subscriber role of ``deploy/`` may subscribe only to ``_INBOX.subscriber.>``
(besides the state), so it can receive its direct-get answers but never another
client's replies. A connection shared with a HealthClient under that role needs it too.
"""


MIN_SERVER_VERSION: Final = (2, 11, 0)
"""The oldest nats-server healthbus works with: subscribers load current states with
batched direct gets (``multi_last``), which nats-server 2.11 added. An older server
answers them ``408 Empty Request``."""

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")

#: The most a first reconnect try waits (seconds); the cap doubles per failed try.
RECONNECT_FIRST_MAX: Final = 0.1
#: The most any reconnect try waits (seconds).
RECONNECT_MAX: Final = 1.0


class PongSafeClient(Client):
    """nats-py's client, with a late PONG after a timed-out ``flush()`` ignored and ``flush()`` a
    barrier for what was sent before it (see the module doc)."""

    #: Awaited during each reconnect try, once the replayed subscriptions are listed and before
    #: the one write: what it subscribes (or publishes) on this client goes out in that same
    #: write, behind the replay (``connect(handshake_cb=...)``). A subscription it makes is
    #: replayed, not made again, if the try is refused and another follows; it is called again
    #: for that try too. Not called by nats-py's own reconnect (a WebSocket server, ``verbose``).
    handshake_cb: Callable[[], Awaitable[None]] | None = None

    async def _process_pong(self) -> None:
        # Each PONG answers the oldest PING. Its waiter may be gone (cancelled by a flush
        # timeout): then this PONG is that PING's, and nobody else's.
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0

    async def flush(self, timeout: int = 10) -> None:  # nats-py's default; it takes float seconds too
        """nats-py's ``flush()``, made a barrier: the commands queued before it are written first."""
        self._write_pending()
        await super().flush(timeout)

    def _write_pending(self) -> None:
        # What nats-py's flusher task does with its queue (the same three fields), done now, so
        # the PING that flush() writes straight to the socket comes after them.
        if self._pending and self._transport is not None and self.is_connected:
            self._transport.writelines(self._pending[:])
            self._pending = []
            self._pending_data_size = 0

    async def _flusher(self) -> None:
        """nats-py's flusher task, which lives on across reconnects: it writes what is queued while
        connected; a flush asked for meanwhile is answered without a write (what is queued then
        goes out in the reconnect's one write). A failed write starts a reconnect, as nats-py's."""
        queue = self._flush_queue
        assert queue is not None, "made by connect() before the flusher"
        while True:
            future: asyncio.Future[None] = await queue.get()
            try:
                if self._pending_data_size > 0 and self.is_connected and self._transport is not None:
                    self._transport.writelines(self._pending[:])
                    self._pending = []
                    self._pending_data_size = 0
                    await self._transport.drain()  # type: ignore[no-untyped-call]
            except OSError as exc:
                await self._error_cb(exc)
                await self._process_op_err(exc)
                if self.is_closed:  # not reconnecting: nothing more to write
                    return
            except RuntimeError:  # the event loop is closing
                return
            finally:
                if not future.done():  # it may have been cancelled (nats-py issue 624)
                    future.set_result(None)

    async def _attempt_reconnect(self) -> None:
        """nats-py's reconnect, with the handshake in one write and one answer (module doc).

        nats-py's own for what this does not cover: a WebSocket server, ``verbose`` mode, or no
        ``reconnect_to_server_handler`` (``connect`` always sets one).
        """
        scheme = self._current_server.uri.scheme if self._current_server is not None else ""
        if scheme in ("ws", "wss") or self.options["verbose"] or self._reconnect_to_server_handler is None:
            await super()._attempt_reconnect()
            return
        # The ping and flusher tasks live on across reconnects (they skip their turns while
        # disconnected): two tasks fewer to make and end per reconnect.
        if self._reading_task is not None and not self._reading_task.cancelled():
            self._reading_task.cancel()
        if self._transport is not None:
            self._transport.close()  # type: ignore[no-untyped-call]
            try:
                await self._transport.wait_closed()  # type: ignore[no-untyped-call]
            except Exception as exc:
                await self._error_cb(exc)
        self._err = None
        if self._disconnected_cb is not None:
            await self._disconnected_cb()
        if self.is_closed:
            return
        if not self.options["dont_randomize"]:
            random.shuffle(self._server_pool)
        self._reconnection_task_future = asyncio.Future()
        while True:
            try:
                server = await self._pick_server()
                await self._handshake(server)
                if self._reconnected_cb is not None:
                    await self._reconnected_cb()
                self._reconnection_task_future = None
                break
            except nats_errors.NoServersError as exc:
                self._err = exc
                await self.close()
                break
            except (OSError, nats_errors.Error, TimeoutError) as exc:
                self._err = exc
                await self._error_cb(exc)
                self._status = Client.RECONNECTING
                if self._current_server is not None:
                    self._current_server.last_attempt = time.monotonic()
                    self._current_server.reconnects += 1
            except asyncio.CancelledError:
                break
        if self._reconnection_task_future is not None and not self._reconnection_task_future.cancelled():
            self._reconnection_task_future.set_result(True)

    async def _pick_server(self) -> Srv:
        """The next server to try (the handler's choice, as nats-py makes it), after its wait."""
        handler = self._reconnect_to_server_handler
        assert handler is not None
        limit = self.options["max_reconnect_attempts"]
        eligible = [s for s in self._server_pool if s.reconnects <= limit] if limit > 0 else list(self._server_pool)
        if not eligible:
            raise nats_errors.NoServersError
        snapshot = [Server(uri=s.uri, reconnects=s.reconnects) for s in eligible]
        selected, delay = handler(snapshot, dict(self._server_info))
        netloc = selected.uri.netloc if selected is not None else None
        chosen = next((s for s in eligible if s.uri.netloc == netloc), eligible[0])
        self._current_server = chosen
        if delay > 0:
            await asyncio.sleep(delay)
        return chosen

    async def _handshake(self, server: Srv) -> None:
        """Connect; INFO in; CONNECT, PING, the replayed subscriptions and the buffered commands
        out in one write; connected once the PONG answers (an ``-ERR`` fails the try)."""
        self._status = Client.CONNECTING
        hostname: str = self.options.get("tls_hostname") or server.tls_name or server.uri.hostname or ""
        timeout = self.options["connect_timeout"]
        async with asyncio.timeout(timeout):
            transport = await self._open(server)
            if self.options["tls_handshake_first"]:
                await transport.connect_tls(hostname, self.ssl_context, DEFAULT_BUFFER_SIZE, timeout)
            line = await transport.readline()
            if not line.startswith(b"INFO "):
                raise nats_errors.Error("nats: empty response from server when expecting INFO message")
            try:
                info = json.loads(line[5:])
            except ValueError:
                raise nats_errors.Error("nats: info message, json parse error") from None
            self._server_info = info
            if info.get("auth_required", False):
                self._auth_configured = True
            await self._process_info(info, initial_connection=True)
            # What nats-py's own handshake keeps of INFO (client_ip: 2.15 and later).
            if "version" in info:
                server.server_version = info["version"]
            if "max_payload" in info:
                self._max_payload = info["max_payload"]
            if "client_id" in info:
                self._client_id = info["client_id"]
            if "client_ip" in info:
                self._client_ip = info["client_ip"]
            if info.get("tls_required") and not self.options["tls_handshake_first"]:
                await transport.drain()  # type: ignore[no-untyped-call]
                await transport.connect_tls(hostname, self.ssl_context, DEFAULT_BUFFER_SIZE, timeout)
            self._ps.reset()
            # The PING right after CONNECT: its PONG comes before any message of a replayed
            # subscription, so the one line read here answers it.
            out = [self._connect_command(), b"PING\r\n"]
            for sid, sub in list(self._subs.items()):
                if sub._max_msgs > 0 and sub._received >= sub._max_msgs:
                    self._subs.pop(sid)  # its limit reached while away: not replayed (as nats-py)
                    continue
                out.append(nats_command.sub_cmd(sub._subject, sub._queue, sid))
                if sub._max_msgs > 0:
                    out.append(nats_command.unsub_cmd(sid, sub._max_msgs - sub._received))
            if self.handshake_cb is not None:
                # While connecting, subscribe() and publish() only queue their commands: take
                # this try's own from the queue into the write (a later try replays its SUBs).
                queued = len(self._pending)
                try:
                    await self.handshake_cb()
                except Exception as exc:  # the caller's callback: said, and the reconnect goes on
                    await self._error_cb(exc)
                extra, self._pending = self._pending[queued:], self._pending[:queued]
                self._pending_data_size -= sum(len(command) for command in extra)
                out.extend(extra)
            # What was buffered while away stays buffered until the server has taken this
            # connection (a refused or timed-out try sends it again with the next one; only
            # commands queued meanwhile, behind it, remain).
            buffered = len(self._pending)
            out.extend(self._pending)
            transport.writelines(out)
            await transport.drain()  # type: ignore[no-untyped-call]
            line = await transport.readline()
        if not line.startswith(b"PONG"):
            text = line.decode(errors="replace").rstrip("\r\n")
            reason = text.split(" ", 1)[1] if text.startswith("-ERR ") else text or "no PONG"
            raise nats_errors.Error(f"nats: {reason}")
        sent, self._pending = self._pending[:buffered], self._pending[buffered:]
        self._pending_data_size -= sum(len(command) for command in sent)
        self._status = Client.CONNECTED
        self.stats["reconnects"] += 1
        server.did_connect = True
        server.reconnects = 0
        loop = asyncio.get_running_loop()
        self._pongs = []
        self._pings_outstanding = 0
        self._reading_task = loop.create_task(self._read_loop())
        if self._ping_interval_task is None or self._ping_interval_task.done():
            self._ping_interval_task = loop.create_task(self._ping_interval())
        if self._flusher_task is None or self._flusher_task.done():
            self._flusher_task = loop.create_task(self._flusher())
        if self._pending:  # queued during the handshake: the flusher sends it
            await self._flush_pending()

    async def _open(self, server: Srv) -> Transport:
        """The TCP connection of a reconnect try, on the client's transport object (within the
        handshake's timeout: nats-py's ``TcpTransport.connect`` wraps it in a task of its own)."""
        transport = self._transport
        if not isinstance(transport, SocketTransport):
            await self._connect_to_server(server)
            assert self._transport is not None
            return self._transport
        server.last_attempt = time.monotonic()
        await transport.open(server.uri.hostname or "", server.uri.port or 4222)  # closes the last try's
        return transport

    async def _connect_to_server(self, s: Srv) -> None:
        # nats-py keeps one transport object and connects it anew on every reconnect try;
        # a try whose handshake failed (the server or a proxy closed the connection right
        # after accepting it: UnexpectedEOF) leaves that connection's stream writer open,
        # and it leaks ("unclosed StreamWriter", a ResourceWarning). Close it first.
        if self._transport is not None:
            self._transport.close()  # type: ignore[no-untyped-call]
        if s.uri.scheme in ("ws", "wss"):
            await super()._connect_to_server(s)
            return
        # TCP (and TLS over it) on a bare socket (healthbus.bus._transport): nats-py would
        # replace a transport that is not connected with its own, so connect it here.
        s.last_attempt = time.monotonic()
        if not isinstance(self._transport, SocketTransport):
            self._transport = SocketTransport()
        await self._transport.connect(s.uri, DEFAULT_BUFFER_SIZE, self.options["connect_timeout"])


def reconnect_delay(failed: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before a reconnect try after ``failed`` failed ones (full jitter)."""
    cap = min(RECONNECT_MAX, RECONNECT_FIRST_MAX * 2 ** min(failed, 16))
    return rng(0.0, cap)


def _next_server(servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
    """nats-py's ``reconnect_to_server_handler``: the least-failed server, after a jittered wait."""
    server = min(servers, key=lambda s: s.reconnects)
    return server, reconnect_delay(server.reconnects)


class BusUnavailable(ConnectionError):
    """NATS could not be reached. The message names the server, never a credential."""


class ServerUnsupported(BusUnavailable):
    """NATS answered but cannot serve healthbus: too old, or without JetStream.

    The message names the server (never a credential), what is missing and the minimum
    version. A subclass of :class:`BusUnavailable`, so whatever handles an unreachable
    bus handles this too.
    """


def server_problem(info: Mapping[str, Any]) -> str | None:
    """What healthbus misses in a server that sent ``info`` (its INFO at connect), or None.

    Reads only the INFO every client gets at connect, so it needs no permission: the
    version (``MIN_SERVER_VERSION`` or newer) and the ``jetstream`` flag. A version that is
    not ``X.Y.Z`` (a fork, a custom build) is given the benefit of the doubt.
    """
    wanted = ".".join(map(str, MIN_SERVER_VERSION))
    version = str(info.get("version") or "")
    match = _VERSION.match(version)
    if match is not None and tuple(int(part) for part in match.groups()) < MIN_SERVER_VERSION:
        return (
            f"nats-server {version} is too old: healthbus needs nats-server {wanted} or newer "
            "(subscribers read current states with batched direct gets)"
        )
    if not info.get("jetstream"):
        return (
            f"JetStream is not available (start nats-server with -js); healthbus needs "
            f"nats-server {wanted} or newer with JetStream"
        )
    return None


def check_server(nc: Client, shown: str) -> None:
    """Raise :class:`ServerUnsupported` when the server ``nc`` is connected to cannot serve healthbus."""
    problem = server_problem(nc._server_info)
    if problem is not None:
        raise ServerUnsupported(f"NATS at {shown}: {problem}")


def resolve_url(settings: BusSettings | None = None, override: str | None = None) -> str:
    """The NATS URL: ``override`` (``--nats``), else config, else ``NATS_URL``, else default."""
    if override:
        return override
    if settings is not None and settings.url:
        return settings.url
    return os.environ.get("NATS_URL") or DEFAULT_URL


def bus_secrets(settings: BusSettings) -> list[str]:
    """The credentials in ``settings`` (to redact from any text shown)."""
    return [s for s in (settings.password, settings.token) if s]


def _no_key_password() -> str:
    # Called by OpenSSL for an encrypted key: without it, OpenSSL would prompt on the terminal.
    raise ValueError("the key is encrypted; give an unencrypted PEM key")


def tls_context(settings: BusSettings) -> ssl.SSLContext | None:
    """The client ``SSLContext`` for ``settings``' TLS files (None when none is set).

    Raises :class:`ConfigError` naming the setting when a file cannot be used.
    """
    if not (settings.tls_ca or settings.tls_cert or settings.tls_key):
        return None
    if bool(settings.tls_cert) != bool(settings.tls_key):
        missing = "tls_key" if settings.tls_cert else "tls_cert"
        raise ConfigError("[bus]", missing, "tls_cert and tls_key go together (a client certificate and its key)")
    try:
        ctx = ssl.create_default_context(cafile=settings.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("[bus]", "tls_ca", f"cannot use {settings.tls_ca}: {_reason(exc)}") from None
    if settings.tls_cert:
        try:
            ctx.load_cert_chain(settings.tls_cert, settings.tls_key, password=_no_key_password)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                "[bus]", "tls_cert", f"cannot use {settings.tls_cert} with {settings.tls_key}: {_reason(exc)}"
            ) from None
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def tls_failure(exc: ssl.SSLError) -> str:
    """One line saying why a TLS handshake with NATS failed and what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        return f"TLS: the server's certificate is not trusted ({detail}); check tls_ca"
    reason = str(exc.reason or "")
    if "CERTIFICATE_REQUIRED" in reason:
        return "TLS: the server requires a client certificate; set tls_cert and tls_key"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
        return (
            "TLS: the server did not answer with TLS; if it is a NATS server with TLS, enable "
            "handshake_first in its tls block (or set tls_handshake_first = false)"
        )
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return "TLS: the server rejected our client certificate (not signed by a CA it trusts); check tls_cert"
    return f"TLS handshake failed: {_reason(exc)}"


async def connect(
    settings: BusSettings | None = None,
    *,
    url: str | None = None,
    name: str = "healthbus",
    connect_attempts: int = 3,
    require_server: bool = True,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
    handshake_cb: Callable[[], Awaitable[None]] | None = None,
    **extra: Any,
) -> PongSafeClient:
    """Connect to NATS, failing fast when it is down and reconnecting forever once up.

    ``handshake_cb``: :attr:`PongSafeClient.handshake_cb`, awaited during each reconnect try
    (what it subscribes goes out in the reconnect's one write).

    With ``require_server`` (the default) a server that cannot serve healthbus (older than
    ``MIN_SERVER_VERSION``, or without JetStream) is refused with :class:`ServerUnsupported`
    right after the connect, instead of failing later in ways that say nothing.
    """
    settings = settings or BusSettings()
    server = resolve_url(settings, url)
    shown = redact_url(server)
    secrets = bus_secrets(settings)

    # The final error of a failed first connect is often just "no servers available";
    # the reasons (e.g. "Authorization Violation", then "Connection reset by peer") came
    # earlier through error_cb: keep the distinct ones (a few) for the message.
    seen_errors: list[str] = []
    caller_error_cb = extra.pop("error_cb", None)
    # A TLS failure of the first connect is a configuration problem: no retry will fix it.
    tls_failed: list[str] = []
    tls_event = asyncio.Event()
    connecting = True

    async def error_cb(exc: Exception) -> None:
        if connecting:  # its errors go into BusUnavailable's message
            text = redact(str(exc) or type(exc).__name__, secrets)
            if isinstance(exc, ssl.SSLError) and not tls_failed:
                tls_failed.append(tls_failure(exc))
                tls_event.set()
            if text not in seen_errors and len(seen_errors) < 3:
                seen_errors.append(text)
        if caller_error_cb is not None:
            await caller_error_cb(exc)
        elif not connecting:
            log.warning("NATS %s: %s", shown, redact(str(exc) or type(exc).__name__, secrets))

    # A cluster is given as comma-separated URLs (``--nats``, ``NATS_URL``): nats-py
    # wants them as a list (one string with commas is an "invalid connect url").
    servers = [part.strip() for part in server.split(",") if part.strip()] or [server]
    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": float(settings.connect_timeout),
        "allow_reconnect": True,
        "reconnect_time_wait": 0.5,
        "reconnect_to_server_handler": _next_server,
        "error_cb": error_cb,
    }
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    if disconnected_cb is not None:
        options["disconnected_cb"] = disconnected_cb
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password or ""
    if settings.token:
        options["token"] = settings.token
    if settings.creds:
        options["user_credentials"] = settings.creds
    if settings.nkey_seed:
        options["nkeys_seed"] = settings.nkey_seed
    try:
        options["inbox_prefix"] = settings.effective_inbox_prefix
    except ValueError as exc:
        raise ConfigError("[bus]", "inbox_prefix", str(exc)) from None
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    options.update(extra)
    if options.get("tls") is not None and "tls_handshake_first" not in extra:
        # nats-py upgrades to TLS only when the server's plaintext greeting asks for it:
        # an impostor that does not would get CONNECT, password included, in plaintext.
        options["tls_handshake_first"] = settings.tls_handshake_first
    # nats-py applies max_reconnect_attempts to the *first* connect too: bound it so a
    # dead server fails fast, then switch to "forever" for the life of the connection.
    # nats-py reads 0 as "unlimited", so the smallest bound is 1 (two tries in all).
    options["max_reconnect_attempts"] = max(1, connect_attempts - 1)
    nc = PongSafeClient()
    nc.handshake_cb = handshake_cb
    attempt = asyncio.ensure_future(nc.connect(**options))
    tls_wait = asyncio.ensure_future(tls_event.wait())
    # nats-py bounds each try by connect_timeout, but can hang closing a socket whose TLS
    # handshake failed (or that a non-NATS peer keeps open): bound the whole first connect.
    tries = options["max_reconnect_attempts"] + 1
    budget = tries * (2 * float(settings.connect_timeout) + float(options["reconnect_time_wait"])) + 1.0
    try:
        await asyncio.wait({attempt, tls_wait}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        if not attempt.done():
            # A TLS failure (nats-py would retry it), or no answer at all: stop the attempt.
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            if tls_failed:
                raise BusUnavailable(f"cannot reach NATS at {shown}: {tls_failed[0]}")
            reasons = f" ({'; '.join(seen_errors)})" if seen_errors else ""
            raise BusUnavailable(f"cannot reach NATS at {shown}: no NATS answer within {budget:g}s{reasons}")
        attempt.result()
    except asyncio.CancelledError:
        # Cancelled mid-connect (a caller's timeout, a HealthClient closing): the half-made
        # client already holds a socket (and maybe tasks). Close it, then pass the cancel on.
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(nc.close()), 1.0)
        raise
    except BusUnavailable:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(nc.close(), 1.0)
        raise
    except Exception as exc:  # nats-py raises several unrelated types here
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(nc.close(), 1.0)
        if tls_failed:
            raise BusUnavailable(f"cannot reach NATS at {shown}: {tls_failed[0]}") from None
        text = redact(str(exc) or type(exc).__name__, secrets)
        earlier = [e for e in seen_errors if e not in text]
        if earlier:
            text = f"{text} ({'; '.join(earlier)})"
        raise BusUnavailable(f"cannot reach NATS at {shown}: {text}") from None
    finally:
        tls_wait.cancel()
        connecting = False
    nc.options["max_reconnect_attempts"] = -1
    if require_server:
        try:
            check_server(nc, shown)
        except ServerUnsupported:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(nc.close(), 1.0)
            raise
    return nc


def stream_config(settings: StreamSettings) -> StreamConfig:
    """The nats-py ``StreamConfig`` for the state stream settings."""
    return StreamConfig(
        name=settings.name,
        subjects=list(settings.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        max_age=settings.max_age_s,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.replicas,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the state stream, or bring an existing one to ``settings``.

    An existing stream without ``allow_direct`` (made by an older version) gets it turned
    on: subscribers load current states with direct gets.
    """
    config = stream_config(settings)
    try:
        info = await js.stream_info(settings.name)
        if not info.config.allow_direct:
            log.warning("stream %s: turning on allow_direct (subscribers read it with direct gets)", settings.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:
            pass  # created concurrently by another component: update below
    await js.update_stream(config)


async def sync_subscriptions(nc: Client, timeout: float = 5.0) -> None:
    """Return once nats-server has processed every subscription ``nc`` made so far.

    ``subscribe()`` only queues SUB, and ``nc.flush()`` is no barrier in nats-py 2.16: its
    PING is written to the socket at once, ahead of commands still queued for the
    flusher task, so its PONG can come back before the server has the SUBs. A request is
    queued behind them, so its answer proves the server has them. The request is
    ``$JS.API.INFO``, which every healthbus role may send under ``deploy/``'s permissions
    (no role needs to publish to another client's inbox); "no responders" is an answer
    too. Raises ``nats.errors.TimeoutError`` if nothing comes back within ``timeout``
    (e.g. while disconnected; nats-py sends the SUBs again on reconnect).
    """
    with contextlib.suppress(NoRespondersError):
        await nc.request("$JS.API.INFO", b"", timeout=timeout)
