"""``redis``: PING, then INFO for details, over a fresh connection per check (or a kept client).

URL forms: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS),
``unix:///path/to/redis.sock``. redis-py's defaults retry for seconds (a closed port took 3.3 s), so
the retry policy and both socket timeouts are set explicitly: one immediate retry (a
pooled connection may be stale after a server restart), never a backoff.

Each check connects the way a new client does and closes its connection before returning
(:class:`~healthbus.probes._base.BaseChecker`), so a server at ``maxclients`` (``ERR max
number of clients reached``) is seen at once; option ``reuse_connection`` keeps the client,
with a fresh connect at least every ``fresh_connect_every`` checks. The connection's name
is ``healthbus-probe`` (option ``client_name``; ``CLIENT LIST`` shows it).

Outcome: pass when PING answers; warn when a replica's link to its master is down, or
with ``no_new_connections`` when a new connection is refused (``maxclients``, or an auth
failure after earlier logins); fail otherwise. Details: ``redis_version``, ``role``, ``connected_clients``,
``used_memory``, ``master_link_status`` (replicas).
"""

from __future__ import annotations

from typing import Any

from healthbus.probes._base import BaseChecker, CheckResult, Closer, driver_missing
from healthbus.probes._classify import classify_redis
from healthbus.protocol import DetailValue, ErrorKind, TargetConfig

try:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoPermissionError, ResponseError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise driver_missing("redis", "redis-py", "redis", exc) from None

# No CLIENT SETINFO pair on every connect (a check connects afresh each time); redis-py 8
# takes that as a DriverInfo and deprecates lib_name/lib_version, which older ones take.
try:
    from redis.driver_info import DriverInfo

    _NO_SETINFO: dict[str, Any] = {"driver_info": DriverInfo(name=None, lib_version=None)}
except ImportError:  # pragma: no cover - redis-py before 7.1
    _NO_SETINFO = {"lib_name": None, "lib_version": None}

_INFO_KEYS = ("redis_version", "role", "connected_clients", "used_memory", "master_link_status", "loading")


class RedisChecker(BaseChecker):
    """PING + INFO against one Redis server."""

    kind = "redis"
    holds_connections = True

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._client: Redis | None = None

    def _make_client(self) -> Redis:
        timeout = float(self.target.timeout)
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 1),
            "health_check_interval": 0,
            "max_connections": self.opt_int("max_connections", 2),
            "client_name": self.opt_str("client_name", "healthbus-probe"),
            **_NO_SETINFO,
        }
        if self.target.url.lower().startswith("rediss://"):
            ca = self.opt_str("tls_ca")
            if ca:
                kwargs["ssl_ca_certs"] = ca
            cert, key = self.opt_str("tls_cert"), self.opt_str("tls_key")
            if cert:
                kwargs["ssl_certfile"] = cert
                kwargs["ssl_keyfile"] = key
            if not self.opt_bool("tls_verify", True):
                kwargs["ssl_cert_reqs"] = "none"
                kwargs["ssl_check_hostname"] = False
        return Redis.from_url(self.target.url, **kwargs)

    async def _check(self) -> CheckResult:
        if self._client is None:
            self._client = self._make_client()
        client = self._client
        await client.ping()
        details: dict[str, DetailValue] = {}
        try:
            info = await client.info()
        except (NoPermissionError, ResponseError):
            info = {}  # an ACL user allowed PING but not INFO: still healthy
        for key in _INFO_KEYS:
            value = info.get(key)
            if isinstance(value, str | int | float | bool):
                details[key] = value
        if details.get("role") == "slave" and details.get("master_link_status") == "down":
            return self.warn("replica's link to its master is down", details)
        return CheckResult(outcome="pass", details=details)

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        return classify_redis(exc)

    def _detach(self) -> Closer | None:
        client, self._client = self._client, None
        return None if client is None else client.aclose

    async def close(self) -> None:
        await self._release()
