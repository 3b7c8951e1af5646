"""A Celery-style worker (forked after the app connected) storing orders through DatabaseGuard on a sync
Engine, with a real coordinator and probe watching a real PostgreSQL that is stopped mid-test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from healthbus.bus.embedded import EmbeddedNats
from healthbus.subscribers import DependencyUnavailable, SyncHealthClient
from healthbus.subscribers.sqlalchemy import DatabaseGuard
from tests.harness._postgres import PostgresServer

from ._sync_support import Worker, live_stack, wait_until_sync

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow]

TARGET = "orders-db"


def test_prefork_worker_fails_fast_during_the_outage_and_stores_every_order_once(
    nats_server: EmbeddedNats, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Tasks store orders; PostgreSQL stops: tasks fail at once with DependencyUnavailable (retried later by the
    'broker'), from the bus verdict rather than a timeout; it comes back: every order is stored exactly once."""
    sync_url = "postgresql+psycopg://" + postgres_server.dsn.split("://", 1)[1]
    engine = create_engine(sync_url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id integer PRIMARY KEY)"))
    engine.dispose()  # no pooled connection crosses the fork (as Celery's docs advise)
    # What a Celery app module does at import, before the pool forks its workers:
    health = SyncHealthClient.connect(nats_server.url)
    guard = DatabaseGuard(engine, health, target=TARGET)

    def store(request: dict[str, Any]) -> Any:  # the task, run in the forked worker
        try:
            with guard.session_scope() as session:
                session.execute(text("INSERT INTO orders (id) VALUES (:id)"), {"id": request["order"]})
        except DependencyUnavailable as exc:
            return {"retry": exc.kind, "retry_at": exc.retry_at}
        return {"stored": request["order"], "forked_from": health.forked_from}

    try:
        with live_stack(nats_server.url, [(TARGET, "postgres", postgres_server.dsn)], tmp_path / "stack"):
            health.wait_for(TARGET, "healthy", timeout=30)
            worker = Worker(store)
            try:
                for order in (1, 2, 3):
                    assert worker.ask(order=order) == {"stored": order, "forked_from": os.getpid()}

                postgres_server.stop()
                kinds: list[str] = []

                def verdict_reached_the_worker() -> bool:
                    answer = worker.ask(order=4)
                    assert "retry" in answer, answer  # never stored while the database is down
                    kinds.append(answer["retry"])
                    return answer["retry"] == "unavailable" and answer["retry_at"] is not None

                wait_until_sync(verdict_reached_the_worker, 30, "tasks failing fast on the verdict")
                # Before the verdict a task may have seen the refused connection itself; never anything else.
                assert set(kinds) <= {"unavailable", "refused", "connection", "disconnected", "shutdown", "timeout"}

                postgres_server.start()

                def stored_after_recovery() -> bool:
                    return "stored" in worker.ask(order=4)

                wait_until_sync(stored_after_recovery, 60, "order 4 stored once PostgreSQL is back")
                for order in (5, 6):
                    assert worker.ask(order=order)["stored"] == order
            finally:
                assert worker.stop() == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM orders ORDER BY id")).scalars().all() == [1, 2, 3, 4, 5, 6]
        assert guard.rejected == 0  # the parent never ran a task: the counters live in the worker
    finally:
        health.close()
        engine.dispose()
