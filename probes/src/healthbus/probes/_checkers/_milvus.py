"""``milvus``: ``get_server_version()`` over a fresh pymilvus async client per check (or a kept one).

URL forms: ``http://host:19530`` (or ``https://``, ``tcp://``, ``grpc://``) for a server
(Milvus, or ``milvus-lite server``), ``http://user:password@host:19530`` for
credentials (option ``token`` for a token, ``db_name`` for a database); or a local
Milvus Lite file, ``file:///var/lib/app/vectors.db`` or a plain path ``./vectors.db``,
which runs Milvus Lite inside the worker (only one process can open such a file).

Outcome: pass when the server answers; fail otherwise. Details: ``server_version``,
``mode`` (``server`` or ``lite``). Each check opens its own client with a gRPC channel
of its own (``dedicated=True``: pymilvus otherwise shares one channel per address and
token among all clients and keeps it open after the last one closed) and closes it
before returning, so the probe holds no connection between checks and a server that
stops accepting connections is seen at once rather than hidden behind a kept channel;
option ``reuse_connection`` keeps the client, with a fresh one (a new channel) at least
every ``fresh_connect_every`` checks and after every failure. A local Milvus Lite file
keeps its client (it runs inside the worker).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from healthbus.probes._base import BaseChecker, CheckResult, Closer, closing_quietly, driver_missing
from healthbus.probes._classify import classify_milvus
from healthbus.protocol import DetailValue, ErrorKind, TargetConfig

try:
    from pymilvus import AsyncMilvusClient
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise driver_missing("milvus", "pymilvus", "milvus", exc) from None

_SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")


def split_milvus_url(url: str) -> tuple[str, str, str, bool]:
    """``(uri, user, password, is_local)``: credentials taken out of a server URI,
    ``file://`` turned into a path."""
    if "://" not in url:
        return url, "", "", True
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return unquote(parts.netloc + parts.path), "", "", True
    if scheme not in _SERVER_SCHEMES:
        return url, "", "", False
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    # Milvus speaks gRPC over plain TCP: pymilvus names that tcp:// (it refuses grpc://).
    scheme = "tcp" if scheme == "grpc" else parts.scheme
    return urlunsplit((scheme, netloc, parts.path, parts.query, "")), user, password, False


class MilvusChecker(BaseChecker):
    """Server version of a Milvus server or a local Milvus Lite file."""

    kind = "milvus"
    holds_connections = True

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._uri, self._user, self._password, self._local = split_milvus_url(target.url)
        # A local Milvus Lite file runs inside the worker: no server to refuse anyone, and
        # starting it per check would be all cost. It keeps its client.
        self.holds_connections = not self._local
        self._client: Any = None

    def _make_client(self) -> Any:
        kwargs: dict[str, Any] = {
            "uri": self._uri,
            "timeout": float(self.target.timeout),
            # gRPC shares subchannels process-wide: after a server restart a new client
            # would inherit the old one's reconnect backoff and fail for a second more.
            "grpc_options": {"grpc.use_local_subchannel_pool": 1},
            # A channel of this client's own, closed by its close(): pymilvus otherwise shares
            # one per address and token among all clients and keeps it open after the last
            # one closed (a check would reuse it, and the server would see it held for good).
            "dedicated": True,
        }
        if self._user:
            kwargs["user"] = self._user
            kwargs["password"] = self._password
        token = self.opt_str("token")
        if token:
            kwargs["token"] = token
        db_name = self.opt_str("db_name")
        if db_name:
            kwargs["db_name"] = db_name
        return AsyncMilvusClient(**kwargs)

    async def _check(self) -> CheckResult:
        if self._client is None:
            self._client = self._make_client()
        try:
            version = await self._client.get_server_version(timeout=float(self.target.timeout))
        except asyncio.CancelledError:
            await self._release()
            raise
        details: dict[str, DetailValue] = {
            "server_version": str(version),
            "mode": "lite" if self._local else "server",
        }
        return CheckResult(outcome="pass", details=details)

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        return classify_milvus(exc)

    async def _after_error(self, exc: BaseException) -> None:
        await self._release()

    def _detach(self) -> Closer | None:
        client, self._client = self._client, None
        return None if client is None else closing_quietly(client.close)

    async def close(self) -> None:
        await self._release()
