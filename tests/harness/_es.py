"""An Elasticsearch stand-in: a tiny HTTP server that answers like an ES node.

No Elasticsearch can be installed on the build machines, so probes are tested against
this. It answers ``GET /_cluster/health`` and ``GET /`` (and ``HEAD /``, the client's
``ping``) with realistic JSON and the ``X-Elastic-Product: Elasticsearch`` header the
official client insists on. Health, HTTP status and a response delay are settable at any
time. Every response closes its connection, so after ``stop()`` a client really finds the
port closed instead of a kept-alive socket.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from healthbus.bus.embedded import Restartable

__all__ = ["FakeElasticsearch"]

_VERSION = "9.1.0"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FakeElasticsearch


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: stop() closes everything

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; requests are recorded in ``FakeElasticsearch.requests``."""

    def do_HEAD(self) -> None:
        """``HEAD /``: what ``client.ping()`` sends."""
        self._respond(head=True)

    def do_GET(self) -> None:
        """``GET /`` and ``GET /_cluster/health``."""
        self._respond(head=False)

    def _respond(self, *, head: bool) -> None:
        owner = self.server.owner
        owner._record(self.command, self.path)
        status, http_status, delay, product_header = owner._settings()
        # The delay waits on the stop event, so stop() never waits for a slow answer.
        if delay > 0 and owner._stopping.wait(delay):
            self.close_connection = True
            return  # stopped mid-request: drop the connection like a dying server
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/_cluster/health":
            body: dict[str, Any] = owner._health_body(status) if http_status < 400 else _error_body(http_status)
        elif path == "/":
            body = owner._root_body() if http_status < 400 else _error_body(http_status)
        else:
            http_status = 404
            body = _error_body(404, f"no handler found for uri [{self.path}] and method [{self.command}]")
        data = json.dumps(body).encode()
        accept = self.headers.get("Accept", "")
        ctype = accept.split(",")[0].strip() if "vnd.elasticsearch+json" in accept else "application/json"
        self.send_response(http_status)
        self.send_header("Content-Type", ctype if "charset" in ctype else f"{ctype}; charset=UTF-8")
        if product_header:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)


def _error_body(http_status: int, reason: str | None = None) -> dict[str, Any]:
    kind = {404: "resource_not_found_exception", 401: "security_exception", 403: "security_exception"}.get(
        http_status, "cluster_block_exception" if http_status == 503 else "exception"
    )
    reason = reason or f"simulated error (HTTP {http_status})"
    return {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": http_status,
    }


class FakeElasticsearch(Restartable):
    """An Elasticsearch-compatible HTTP endpoint on ``127.0.0.1:port`` (a thread in this process)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, cluster_name: str = "healthbus-test") -> None:
        self.host = host
        self.port = port
        self.cluster_name = cluster_name
        self.status = "green"
        self.http_status = 200
        self.delay = 0.0
        self.product_header = True
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        """True while the server accepts connections."""
        return self._server is not None

    def set_health(
        self, status: str = "green", http_status: int = 200, delay: float = 0.0, *, product_header: bool = True
    ) -> None:
        """What the next requests get: cluster ``status``, the HTTP status, a delay in seconds,
        and whether the ``X-Elastic-Product`` header is sent (False: the client refuses it)."""
        if status not in ("green", "yellow", "red"):
            raise ValueError(f"status must be green, yellow or red, not {status!r}")
        with self._lock:
            self.status, self.http_status, self.delay, self.product_header = status, http_status, delay, product_header

    def _settings(self) -> tuple[str, int, float, bool]:
        with self._lock:
            return self.status, self.http_status, self.delay, self.product_header

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _health_body(self, status: str) -> dict[str, Any]:
        unassigned = {"green": 0, "yellow": 5, "red": 10}[status]
        active = 10 - (unassigned if status == "red" else 0)
        return {
            "cluster_name": self.cluster_name,
            "status": status,
            "timed_out": False,
            "number_of_nodes": 3,
            "number_of_data_nodes": 3,
            "active_primary_shards": 5 if status != "red" else 3,
            "active_shards": active,
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": unassigned,
            "unassigned_primary_shards": 2 if status == "red" else 0,
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": round(100.0 * active / (active + unassigned), 1),
        }

    def _root_body(self) -> dict[str, Any]:
        return {
            "name": "node-1",
            "cluster_name": self.cluster_name,
            "cluster_uuid": "hbTestClusterUuid000001",
            "version": {
                "number": _VERSION,
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "0000000000000000000000000000000000000000",
                "build_date": "2025-07-01T00:00:00.000000000Z",
                "build_snapshot": False,
                "lucene_version": "10.2.2",
                "minimum_wire_compatibility_version": "8.19.0",
                "minimum_index_compatibility_version": "8.0.0",
            },
            "tagline": "You Know, for Search",
        }

    def start(self) -> Self:
        """Listen (on the same port as before after a stop) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port; requests in flight are dropped. No-op when stopped."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
