"""The Django ORM guard (HEALTHBUS_DATABASES) against a real PostgreSQL, with a FakeHealthClient for the verdicts,
in a process of its own (Django's settings are configured once per process)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._postgres import PostgresServer

from ._sync_support import Worker

pytestmark = pytest.mark.postgres


def test_orm_guard_fails_fast_trips_and_answers_503(postgres_server: PostgresServer) -> None:
    """Unavailable: 503 before any connect. A refused connect: 503 (kind refused), a report, and no further
    connect for the cool-down. A newer healthy verdict: back to the database. A constraint violation: 500."""
    pg = postgres_server
    with psycopg.connect(pg.dsn, autocommit=True) as admin:
        admin.execute("create table orders (id int primary key)")
        admin.execute("insert into orders values (1)")

    def serve(request: dict[str, Any]) -> Any:
        from django.conf import settings

        if not settings.configured:
            settings.configure(
                ROOT_URLCONF="tests.subscribers._django_db_urls",
                ALLOWED_HOSTS=["*"],
                MIDDLEWARE=["healthbus.subscribers.django.HealthMiddleware"],
                DATABASES={
                    "default": {
                        "ENGINE": "django.db.backends.postgresql",
                        "NAME": pg.database,
                        "USER": pg.user,
                        "HOST": pg.host,
                        "PORT": str(pg.port),
                        "OPTIONS": {"connect_timeout": 5},
                    }
                },
                HEALTHBUS_DATABASES={"default": "orders-db"},
                HEALTHBUS_LOCAL_COOLDOWN=600,  # the trip lasts until a newer verdict
            )
            import django

            django.setup()
            from healthbus.subscribers import django as hb_django

            hb_django.configure(FakeHealthClient({"orders-db": "healthy"}))
        from django.test import Client

        from healthbus.subscribers.django import guards, health

        fake = health()
        assert isinstance(fake, FakeHealthClient)
        if "state" in request:
            fake.set_state("orders-db", request["state"])
        response = Client(raise_request_exception=False).get(request["path"])
        is_json = response.headers["Content-Type"] == "application/json"
        guard = guards()["default"]
        return {
            "status": response.status_code,
            "retry_after": response.headers.get("Retry-After"),
            "body": json.loads(response.content) if is_json else None,
            "rejected": guard.rejected,
            "errors": guard.connection_errors,
            "reports": [[r.target, r.kind] for r in fake.reports],
        }

    worker = Worker(serve)
    try:
        answer = worker.ask(path="/count")
        assert (answer["status"], answer["body"]) == (200, {"orders": 1})

        answer = worker.ask(path="/count", state="unavailable")
        assert answer["status"] == 503
        assert answer["body"] == {"error": "dependency_unavailable", "target": "orders-db", "retry_at": None}
        assert int(answer["retry_after"]) >= 1
        assert (answer["rejected"], answer["errors"]) == (1, 0)  # refused before any connect

        pg.stop_mode("immediate")
        answer = worker.ask(path="/count", state="healthy")  # healthbus has not noticed yet
        assert (answer["status"], answer["body"]["target"]) == (503, "orders-db")
        assert (answer["rejected"], answer["errors"]) == (1, 1)
        # The test client keeps the connection between requests: its query met the dead server
        # ("server closed the connection": disconnected, reported as "other"); a fresh connect, "refused".
        assert answer["reports"] in ([["orders-db", "other"]], [["orders-db", "refused"]])
        answer = worker.ask(path="/count")  # tripped: no connect attempt for the cool-down
        assert (answer["status"], answer["rejected"], answer["errors"]) == (503, 2, 1)

        pg.start()
        answer = worker.ask(path="/count", state="healthy")  # a newer verdict ends the trip
        assert (answer["status"], answer["body"]) == (200, {"orders": 1})
        answer = worker.ask(path="/duplicate")
        assert (answer["status"], answer["errors"]) == (500, 1)  # not the database's outage: 500, no trip
        assert worker.ask(path="/count")["status"] == 200
    finally:
        assert worker.stop() == 0
