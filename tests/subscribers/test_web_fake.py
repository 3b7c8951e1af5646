"""The web helpers with FakeHealthClient in place of a real client (how a service's own unit tests use them)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from flask import Flask

from healthbus.protocol import utcnow
from healthbus.subscribers import DependencyUnavailable
from healthbus.subscribers.fastapi import install, requires
from healthbus.subscribers.flask import init_app
from healthbus.subscribers.flask import requires as flask_requires
from healthbus.subscribers.testing import FakeHealthClient

from ._sync_support import Worker


def test_fastapi_with_a_fake_client() -> None:
    """requires(health=fake) and features; an error raised inside the endpoint gets the same answer."""
    fake = FakeHealthClient({"db": "healthy", "search": "healthy"}, features={"search": ["find"]})
    app = FastAPI()
    install(app, default_retry_after=7)

    @app.get("/db", dependencies=[Depends(requires("db", health=fake))])
    async def db() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/find", dependencies=[Depends(requires(features=["find"], health=fake))])
    async def find() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/local")
    async def local() -> None:
        raise DependencyUnavailable("db", None, "refused: ConnectionRefusedError", kind="refused")

    with TestClient(app) as client:
        assert client.get("/db").status_code == 200
        fake.set_state("db", "unavailable", retry_at=utcnow() + timedelta(seconds=30))
        response = client.get("/db")
        assert response.status_code == 503
        assert 29 <= int(response.headers["retry-after"]) <= 31
        assert response.json()["target"] == "db"
        assert client.get("/find").status_code == 200
        fake.set_state("search", "recovering")
        response = client.get("/find")
        assert (response.status_code, response.json()["target"]) == (503, "feature:find")
        response = client.get("/local")
        assert (response.status_code, response.headers["retry-after"]) == (503, "7")
        assert "refused" not in response.text  # the reason stays in the log


def test_fastapi_requires_without_a_client_says_how_to_get_one() -> None:
    """No health= and no app.state.health: a clear error, not an AttributeError."""
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(requires("db"))])
    async def x() -> None:
        return None

    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"app\.state\.health"):
        client.get("/x")
    with pytest.raises(ValueError, match="at least one"):
        requires()


def test_flask_with_a_fake_client() -> None:
    """init_app(app, fake) and @requires: 200, then 503 with Retry-After, then 200."""
    fake = FakeHealthClient({"db": "healthy"})
    app = Flask(__name__)
    init_app(app, fake)

    @app.get("/orders")
    @flask_requires("db")
    def orders() -> dict[str, bool]:
        return {"ok": True}

    client = app.test_client()
    assert client.get("/orders").status_code == 200
    fake.set_state("db", "unavailable", retry_at=utcnow() + timedelta(seconds=3))
    response = client.get("/orders")
    assert response.status_code == 503
    assert 2 <= int(response.headers["Retry-After"]) <= 4
    assert response.get_json()["error"] == "dependency_unavailable"
    fake.set_state("db", "healthy")
    assert client.get("/orders").status_code == 200


def test_plain_starlette_app() -> None:
    """install() works on a Starlette app without FastAPI: an endpoint's DependencyUnavailable becomes 503."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    fake = FakeHealthClient({"db": "unavailable"})

    async def orders(request: Request) -> JSONResponse:
        await requires("db", health=fake)(request)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/orders", orders)])
    install(app)
    with TestClient(app) as client:
        response = client.get("/orders")
        assert (response.status_code, response.json()["target"]) == (503, "db")
        fake.set_state("db", "healthy")
        assert client.get("/orders").status_code == 200


def test_django_with_a_fake_client() -> None:
    """configure(fake) + HealthMiddleware + @requires, with Django's test client (in a process of its own)."""

    def serve(request: dict[str, Any]) -> Any:
        from django.conf import settings

        if not settings.configured:
            settings.configure(
                ROOT_URLCONF="tests.subscribers._django_urls",
                ALLOWED_HOSTS=["*"],
                MIDDLEWARE=["healthbus.subscribers.django.HealthMiddleware"],
                HEALTHBUS_RETRY_AFTER=9,
            )
            import django

            django.setup()
            from healthbus.subscribers import django as hb_django

            hb_django.configure(FakeHealthClient({"db": "healthy"}))
        from django.test import Client

        from healthbus.subscribers.django import health

        if "state" in request:
            health().set_state("db", request["state"])  # type: ignore[attr-defined]
        response = Client(raise_request_exception=False).get(request["path"])
        is_json = response.headers["Content-Type"] == "application/json"
        body = json.loads(response.content) if is_json else None
        return [response.status_code, response.headers.get("Retry-After"), body]

    worker = Worker(serve)
    try:
        assert worker.ask(path="/orders") == [200, None, {"ok": True}]
        assert worker.ask(path="/orders", state="unavailable") == [
            503,
            "9",
            {"error": "dependency_unavailable", "target": "db", "retry_at": None},
        ]
        assert worker.ask(path="/other-error") == [500, None, None]  # other errors are not turned into 503
        assert worker.ask(path="/orders", state="healthy")[0] == 200
    finally:
        assert worker.stop() == 0


def _refused_query() -> None:
    """A psycopg query to a closed port, through SQLAlchemy: the driver's refused error as a request meets it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from healthbus.bus.embedded import free_port

    engine = create_engine(f"postgresql+psycopg://app@127.0.0.1:{free_port()}/orders", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text("select 1"))


def _duplicate_key(tmp: Any) -> None:
    """A constraint violation (sqlite): an application error, never the dependency's."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp / 'db.sqlite'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("create table if not exists t (a int primary key)"))
            conn.execute(text("insert into t values (1)"))
            conn.execute(text("insert into t values (1)"))
    finally:
        engine.dispose()


def test_driver_errors_in_a_request_answer_503_only_when_they_are_the_dependencys(tmp_path: Any) -> None:
    """Flask and FastAPI: a refused PostgreSQL (no guard, no verdict yet) answers 503 naming the mapped target
    and reports it; a constraint violation keeps its 500; an unmapped system is named by its kind."""
    fake = FakeHealthClient({"orders-db": "healthy"})

    flask_app = Flask(__name__)
    init_app(flask_app, fake, error_targets={"postgresql": "orders-db"})

    @flask_app.get("/refused")
    def flask_refused() -> str:
        _refused_query()
        return "unreachable"

    @flask_app.get("/duplicate")
    def flask_duplicate() -> str:
        _duplicate_key(tmp_path)
        return "unreachable"

    flask_client = flask_app.test_client()
    answer = flask_client.get("/refused")
    assert (answer.status_code, answer.get_json()["target"]) == (503, "orders-db")
    assert int(answer.headers["Retry-After"]) >= 1
    assert [(r.target, r.kind) for r in fake.reports] == [("orders-db", "refused")]
    flask_app.testing = False  # a 500 page instead of the exception raised into the test
    assert flask_client.get("/duplicate").status_code == 500

    fastapi_app = FastAPI()
    install(fastapi_app)  # no error_targets: the body names the system

    @fastapi_app.get("/refused")
    def refused() -> None:
        _refused_query()

    @fastapi_app.get("/duplicate")
    def duplicate() -> None:
        _duplicate_key(tmp_path)

    with TestClient(fastapi_app, raise_server_exceptions=False) as client:
        response = client.get("/refused")
        assert (response.status_code, response.json()["target"]) == (503, "postgresql")
        assert response.headers["retry-after"] == "5"
        assert client.get("/duplicate").status_code == 500
