"""``elasticsearch``: ``GET /_cluster/health`` over a fresh async client per check (or a kept one).

URL form: ``http(s)://[user:password@]host:9200`` (option ``api_key`` for an API key,
``tls_ca`` for a CA bundle, ``tls_verify = false`` to skip verification). The client
never retries: the worker's schedule is the retry policy. Each check opens its own client
(a new HTTP connection) and closes it before returning, so a node that stops accepting
connections is seen at once rather than hidden behind a kept-alive one; option
``reuse_connection`` keeps the client, with a fresh one at least every
``fresh_connect_every`` checks.

Outcome: green → pass; yellow → warn (replicas unassigned: reachable but impaired);
red → fail with ``unhealthy``. Details: ``cluster_name``, ``status``,
``number_of_nodes``, ``active_shards_percent``, ``unassigned_shards``.
"""

from __future__ import annotations

import logging
from typing import Any

from healthbus.probes._base import BaseChecker, CheckResult, Closer, closing_quietly, driver_missing
from healthbus.probes._classify import classify_elasticsearch
from healthbus.protocol import DetailValue, ErrorKind, TargetConfig

try:
    from elasticsearch import AsyncElasticsearch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise driver_missing("elasticsearch", "elasticsearch[async]", "elasticsearch", exc) from None

# elastic-transport logs a warning per failed request ("Node ... has failed for N times in a
# row") and a line per request at INFO: one per check, while the worker logs only changes.
logging.getLogger("elastic_transport.node_pool").setLevel(logging.ERROR)
logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)

_DETAIL_KEYS = {
    "cluster_name": "cluster_name",
    "status": "status",
    "number_of_nodes": "number_of_nodes",
    "active_shards_percent_as_number": "active_shards_percent",
    "unassigned_shards": "unassigned_shards",
}


class ElasticsearchChecker(BaseChecker):
    """Cluster health of an Elasticsearch (or compatible) cluster."""

    kind = "elasticsearch"
    holds_connections = True

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._client: AsyncElasticsearch | None = None

    def _make_client(self) -> AsyncElasticsearch:
        kwargs: dict[str, Any] = {
            "request_timeout": float(self.target.timeout),
            "max_retries": 0,
            "retry_on_timeout": False,
        }
        api_key = self.opt_str("api_key")
        if api_key:
            kwargs["api_key"] = api_key
        ca = self.opt_str("tls_ca")
        if ca:
            kwargs["ca_certs"] = ca
        if not self.opt_bool("tls_verify", True):
            kwargs["verify_certs"] = False
            kwargs["ssl_show_warn"] = False
        return AsyncElasticsearch(self.target.url, **kwargs)

    async def _check(self) -> CheckResult:
        if self._client is None:
            self._client = self._make_client()
        response = await self._client.cluster.health()
        body: Any = response.body if hasattr(response, "body") else response
        details: dict[str, DetailValue] = {}
        for key, name in _DETAIL_KEYS.items():
            value = body.get(key) if isinstance(body, dict) else None
            if isinstance(value, str | int | float | bool):
                details[name] = value
        status = details.get("status")
        if status == "green":
            return CheckResult(outcome="pass", details=details)
        if status == "yellow":
            return self.warn("cluster status yellow: some replica shards are not allocated", details)
        if status == "red":
            return self.fail("unhealthy", "cluster status red: some primary shards are not allocated", details)
        return self.fail("protocol", f"unexpected cluster health status {status!r}", details)

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        return classify_elasticsearch(exc)

    def _detach(self) -> Closer | None:
        client, self._client = self._client, None
        return None if client is None else closing_quietly(client.close)

    async def close(self) -> None:
        await self._release()
