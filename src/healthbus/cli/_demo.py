"""The built-in demo configuration of ``healthbus dev`` (used when no ``--config`` is given).

It must work on any machine, so it watches things that exist everywhere (an SQLite file
through SQLAlchemy, the embedded NATS server itself, the dashboard's own /healthz), a
milvus-lite file when that optional extra is installed, and the conventional local
Redis and PostgreSQL on their default ports. When those two are not running they are
shown ``unavailable``: a demonstration of degraded mode, not an error.

Short intervals so that a flip is visible within seconds of stopping a server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["demo_config_text", "milvus_available"]


def milvus_available() -> bool:
    """True when pymilvus and milvus-lite (the ``milvus`` extra) are installed."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
    except (ImportError, ValueError):
        return False


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_config_text(data_dir: Path, *, nats_host: str, nats_port: int, dashboard_url: str, milvus: bool) -> str:
    """The demo configuration as TOML, with its files under ``data_dir``."""
    data = data_dir.absolute()
    sqlite_url = f"sqlite+aiosqlite:///{data / 'demo.sqlite3'}"
    parts = [
        "# The built-in demo configuration of `healthbus dev` (rewritten on every start).",
        "# Copy it, edit it, and run `healthbus dev --config yours.toml`.",
        "",
        "[defaults]",
        'interval = "2s"',
        'timeout = "1s"',
        "failure_threshold = 2",
        "success_threshold = 2",
        'backoff = { base = "1s", multiplier = 2.0, max = "30s", jitter = "full" }',
        "",
        "# Always there: an SQLite database through SQLAlchemy.",
        "[[targets]]",
        'name = "sqlite"',
        'kind = "sqlalchemy"',
        f"url = {_toml_str(sqlite_url)}",
        'features = ["reports"]',
        "",
        "# The embedded NATS server, checked like any TCP service.",
        "[[targets]]",
        'name = "nats"',
        'kind = "tcp"',
        f"url = {_toml_str(f'tcp://{nats_host}:{nats_port}')}",
        'features = ["bus"]',
        "",
        "# The dashboard's own health endpoint, checked over HTTP.",
        "[[targets]]",
        'name = "dashboard"',
        'kind = "http"',
        f"url = {_toml_str(dashboard_url.rstrip('/') + '/healthz')}",
        'features = ["ui"]',
        "",
        "# The local Redis on its default port: unavailable (degraded mode) if it is not running.",
        "[[targets]]",
        'name = "redis"',
        'kind = "redis"',
        'url = "redis://127.0.0.1:6379/0"',
        'features = ["cache", "rate-limit"]',
        "",
        "# The local PostgreSQL on its default port: unavailable if it is not running.",
        "[[targets]]",
        'name = "postgres"',
        'kind = "postgres"',
        'url = "postgresql://postgres@127.0.0.1:5432/postgres"',
        'features = ["orders"]',
    ]
    if milvus:
        parts += [
            "",
            "# A milvus-lite file (the `milvus` extra is installed).",
            "[[targets]]",
            'name = "milvus"',
            'kind = "milvus"',
            f"url = {_toml_str(str(data / 'milvus-demo.db'))}",
            'features = ["vector-search"]',
            'timeout = "2s"',
            'interval = "5s"',
        ]
    return "\n".join(parts) + "\n"
