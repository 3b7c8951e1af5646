"""Celery with HealthTask and the worker-level pause: a real worker (prefork, 2 processes) on a real Redis broker,
storing orders in a real PostgreSQL that is stopped mid-run while tasks keep coming: 0 tasks lost, 0 failed.

The task has ``max_retries=0``: any retry that counted against it would fail the task, so every
task succeeding through outage retries (some retried twice or more) proves they do not count.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from healthbus.bus.embedded import EmbeddedNats
from tests.harness._postgres import PostgresServer
from tests.harness._redis import RedisServer

from ._sync_support import live_stack, served, wait_until_sync

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

TARGET = "orders-db"
WAIT = 120.0
UNPAUSED = "orders-unpaused"
"""A queue the worker consumes but install(pause=) does not name: its tasks retry all through an outage."""

WORKER_APP = """
import os

from celery import Celery
from sqlalchemy import create_engine, text

from healthbus.subscribers import SyncHealthClient
from healthbus.subscribers.celery import HealthTask, install
from healthbus.subscribers.sqlalchemy import DatabaseGuard

health = SyncHealthClient.connect()  # each prefork child reconnects on first use
app = Celery("hb_celery_orders", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.task_default_queue = "orders"
app.conf.broker_connection_retry_on_startup = True
install(app, health, pause={"orders": ["orders-db"]})
engine = create_engine("postgresql+psycopg://", pool_pre_ping=True, connect_args={"connect_timeout": 3})
db = DatabaseGuard(engine, health, target="orders-db")


@app.task(bind=True, base=HealthTask, requires=["orders-db"], max_retries=0)
def store(self, order_id):
    with db.session_scope() as session:  # idempotent: a COMMIT whose outcome was unknown may run again
        session.execute(text("insert into orders (id) values (:id) on conflict do nothing"), {"id": order_id})
    return order_id
"""


def test_tasks_wait_out_a_postgres_outage_and_the_worker_pauses(
    nats_server: EmbeddedNats, postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    from celery import Celery

    pg = postgres_server
    with psycopg.connect(pg.dsn, autocommit=True) as admin:
        admin.execute("create table orders (id int primary key)")

    def stored() -> int:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            row = conn.execute("select count(*) from orders").fetchone()
            return int(row[0]) if row else 0

    (tmp_path / "hb_celery_orders.py").write_text(WORKER_APP)
    env = {
        **os.environ,
        "NATS_URL": nats_server.url,
        "BROKER_URL": redis_server.url,
        "PGHOST": pg.host,
        "PGPORT": str(pg.port),
        "PGUSER": pg.user,
        "PGDATABASE": pg.database,
    }
    log_path = tmp_path / "worker.log"
    client = Celery("hb_test_client", broker=redis_server.url, backend=redis_server.url)
    broker = redis.Redis.from_url(redis_server.url)
    sent: list[Any] = []

    def send(order_id: int) -> None:
        sent.append(client.send_task("hb_celery_orders.store", args=[order_id], queue="orders"))

    def log() -> str:
        return log_path.read_text() if log_path.exists() else ""

    with contextlib.ExitStack() as stack:
        stack.enter_context(live_stack(nats_server.url, [(TARGET, "postgres", pg.dsn)], tmp_path / "stack"))
        celery = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hb_celery_orders",
            "worker",
            "-Q",
            f"orders,{UNPAUSED}",
            "-c",
            "2",
        ]
        options = ["-n", "hbtest@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        stack.enter_context(served([*celery, *options], log_path, cwd=tmp_path, env=env, grace=30))
        try:
            wait_until_sync(lambda: "ready." in log(), WAIT, "the worker to be ready")
            for order_id in range(20):
                send(order_id)
            wait_until_sync(lambda: stored() == 20, WAIT, "the first 20 orders")

            # Tasks keep coming while PostgreSQL stops.
            stop_sending = threading.Event()

            def keep_sending() -> None:
                order_id = 20
                while not stop_sending.is_set() and order_id < 200:
                    send(order_id)
                    order_id += 1
                    stop_sending.wait(0.05)

            sender = threading.Thread(target=keep_sending)
            sender.start()
            try:
                wait_until_sync(lambda: stored() >= 25, WAIT, "orders stored while tasks flow")
                pg.stop_mode("fast")
                wait_until_sync(lambda: "stopped consuming orders" in log(), WAIT, "the pause", lambda: log()[-3000:])
                # Paused: new tasks wait in the broker instead of being taken.
                wait_until_sync(lambda: broker.llen("orders") >= 5, WAIT, "tasks waiting in the broker")
                # A long outage: tasks retried at retry_at more than once (max_retries=0 would fail them). Not
                # on "orders": its retried messages wait in the broker while it is paused (only a re-sent message
                # taken before the pause could meet the outage twice, a race). A queue the worker does not pause
                # shows it: its tasks retry every ~0.5 s (retry_at is the next trial, clamped to outage_min_delay).
                for order_id in range(1000, 1003):
                    sent.append(client.send_task("hb_celery_orders.store", args=[order_id], queue=UNPAUSED))
                wait_until_sync(
                    lambda: "(outage retry 2)" in log(), WAIT, "second outage retries", lambda: log()[-3000:]
                )
            finally:
                stop_sending.set()
                sender.join(30)
            pg.start()
            wait_until_sync(lambda: "consuming orders again" in log(), WAIT, "the resume", lambda: log()[-3000:])
            total = len(sent)
            wait_until_sync(lambda: stored() == total, WAIT, f"all {total} orders stored", stored)
            wait_until_sync(
                lambda: all(result.state == "SUCCESS" for result in sent), WAIT, "every task's result SUCCESS"
            )
            assert broker.llen("orders") == broker.llen(UNPAUSED) == 0
        finally:
            # Release the client's result backend before the fixtures stop Redis: each AsyncResult unsubscribes
            # its key when collected (AsyncResult.__del__), which on a stopped Redis retried ("Connection to Redis
            # lost: Retry (n/20)") and raised during later tests (unraisable-exception warnings).
            sent_count = len(sent)
            sent.clear()
            client.backend.result_consumer.stop()
            client.backend.client.connection_pool.disconnect()
            client.close()
            broker.close()
    text = log()
    print(f"\n{sent_count} tasks; outage retries logged: {text.count('outage retry')}")
    assert "MaxRetriesExceeded" not in text
    assert "raised unexpected" not in text, text[-3000:]  # how Celery logs a failed task
    assert "Traceback" not in text, text[-3000:]
