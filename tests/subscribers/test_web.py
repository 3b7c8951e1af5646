"""The web-framework examples of docs/subscribers.md, run as written: real nats-server, coordinator, probe worker
and a real Redis stopped mid-test; driven with each framework's own test client."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.subscribers import DependencyUnavailable
from healthbus.subscribers._web import unavailable_answer
from tests.harness._redis import RedisServer

from ._sync_support import Worker, live_stack, served, wait_until_sync

pytestmark = [pytest.mark.nats, pytest.mark.redis, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "subscribers.md"
TARGET = "orders-cache"
#: Bound of each wait (seconds). The first one includes cold starts (coordinator, probe worker, gunicorn's
#: master importing the app): on a loaded 2-core machine these took over 30 s together (CI rehearsal).
WAIT = 90.0

#: (status, headers with lower-case names, JSON body) of one request.
Answer = tuple[int, dict[str, str], Any]


def examples() -> dict[str, str]:
    """Every ``<!-- example: NAME -->`` code block of docs/subscribers.md, by name."""
    text = DOCS.read_text()
    found = re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, flags=re.S)
    return dict(found)


def load_example(name: str, directory: Path) -> ModuleType:
    """Write the example to a file and import it, as ``uvicorn``/``gunicorn`` would."""
    path = directory / f"hb_example_{name}.py"
    path.write_text(examples()[name])
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_is_run_here() -> None:
    """A new example in the docs needs a test here."""
    assert sorted(examples()) == ["django", "fastapi", "flask"]


@pytest.fixture
def stack(nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path, monkeypatch: Any) -> Iterator[None]:
    """NATS_URL set for the examples; a coordinator and a probe worker watching the test's Redis."""
    monkeypatch.setenv("NATS_URL", nats_server.url)
    monkeypatch.syspath_prepend(str(tmp_path))
    with live_stack(nats_server.url, [(TARGET, "redis", redis_server.url)], tmp_path / "stack"):
        yield


def outage(get: Callable[[], Answer], redis_server: RedisServer, logs: Sequence[Path] = ()) -> None:
    """200 while Redis is up; 503 + Retry-After + small JSON body once it stops; 200 again once it is back.

    A wait that times out says the last answer and the tail of each of ``logs``."""
    last: list[Answer] = []

    def status_is(code: int) -> bool:
        last[:] = [get()]
        return last[0][0] == code

    def seen() -> object:
        tails = {path.name: path.read_text()[-2000:] if path.exists() else "(none)" for path in logs}
        return {"last": last, **tails}

    wait_until_sync(lambda: status_is(200), WAIT, "200 while Redis is up", seen)
    assert last[0][2] == {"orders": "fresh"}
    redis_server.stop()
    wait_until_sync(lambda: status_is(503), WAIT, "503 once Redis stopped", seen)
    _, headers, body = last[0]
    assert body["error"] == "dependency_unavailable"
    assert body["target"] == TARGET
    assert set(body) == {"error", "target", "retry_at"}
    assert int(headers["retry-after"]) >= 1
    if body["retry_at"] is not None:
        assert datetime.fromisoformat(body["retry_at"].replace("Z", "+00:00"))
    assert headers["content-type"].startswith("application/json")
    redis_server.start()
    wait_until_sync(lambda: status_is(200), WAIT, "200 once Redis is back", seen)


def test_fastapi_example(stack: None, redis_server: RedisServer, tmp_path: Path) -> None:
    """FastAPI's TestClient (lifespan runs: the client connects and closes with the app)."""
    from fastapi.testclient import TestClient

    module = load_example("fastapi", tmp_path)
    with TestClient(module.app) as client:

        def get() -> Answer:
            response = client.get("/orders")
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.json()

        outage(get, redis_server)
        assert module.app.state.health.is_available(TARGET)
    assert module.app.state.health is None  # closed at shutdown


def test_flask_example(stack: None, redis_server: RedisServer, tmp_path: Path) -> None:
    """Flask's test client, on the SyncHealthClient."""
    module = load_example("flask", tmp_path)
    try:
        client = module.app.test_client()

        def get() -> Answer:
            response = client.get("/orders")
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.get_json()

        outage(get, redis_server)
    finally:
        module.health.close()


def test_flask_example_under_preforked_workers(stack: None, redis_server: RedisServer, tmp_path: Path) -> None:
    """gunicorn --preload: the app (and its connected client) is loaded once, then workers are forked;
    each worker serves requests on a connection of its own and follows the outage."""
    module = load_example("flask", tmp_path)
    try:
        wait_until_sync(lambda: module.health.is_available(TARGET), 30, "the verdict in the master")

        def serve(request: dict[str, Any]) -> Any:
            response = module.app.test_client().get(request["path"])
            return [response.status_code, dict(response.headers), response.get_json()]

        workers = [Worker(serve), Worker(serve)]
        try:
            for worker in workers:

                def get(w: Worker = worker) -> Answer:
                    status, headers, body = w.ask(path="/orders")
                    return status, {k.lower(): v for k, v in headers.items()}, body

                outage(get, redis_server)
        finally:
            codes = [w.stop() for w in workers]
        assert codes == [0, 0]
        assert module.health.forked_from is None
        assert module.health.is_available(TARGET)  # the master's own connection kept working
    finally:
        module.health.close()


def test_flask_example_under_real_gunicorn_preload(stack: None, redis_server: RedisServer, tmp_path: Path) -> None:
    """``gunicorn --preload -w 2``: the master imports the app (connecting the client), forks two sync workers;
    over real HTTP they answer 200, 503 + Retry-After while Redis is down, 200 again."""
    load_example("flask", tmp_path).health.close()  # writes the module file; gunicorn imports its own copy
    port = free_port()
    # --no-control-socket: gunicorn 27's default control socket is one path per user, shared by every run.
    args = ["--no-control-socket", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path)]
    argv = [sys.executable, "-m", "gunicorn", *args, "--graceful-timeout", "5", "hb_example_flask:app"]
    with served(argv, tmp_path / "gunicorn.log", env={**os.environ, "NO_COLOR": "1"}, grace=15) as server:

        def get() -> Answer:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/orders", timeout=5) as response:
                    headers = {k.lower(): v for k, v in response.headers.items()}
                    return response.status, headers, json.loads(response.read())
            except urllib.error.HTTPError as error:
                headers = {k.lower(): v for k, v in error.headers.items()}
                return error.code, headers, json.loads(error.read())
            except OSError as error:  # not listening yet, or no answer within the timeout
                return 0, {}, repr(error)

        outage(get, redis_server, [tmp_path / "gunicorn.log", tmp_path / "stack" / "coordinator.log"])
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


def test_django_example(stack: None, redis_server: RedisServer, tmp_path: Path) -> None:
    """Django's test client, in a process of its own (Django's settings are configured once per process)."""

    def serve(request: dict[str, Any]) -> Any:
        if "hb_example_django" not in sys.modules:
            load_example("django", tmp_path)
        from django.test import Client

        response = Client().get(request["path"])
        return [response.status_code, dict(response.headers), json.loads(response.content)]

    worker = Worker(serve)
    try:

        def get() -> Answer:
            status, headers, body = worker.ask(path="/orders")
            return status, {k.lower(): v for k, v in headers.items()}, body

        outage(get, redis_server)
    finally:
        assert worker.stop() == 0


def test_http_answer_counts_retry_after_up_from_now() -> None:
    """Retry-After is the whole seconds until retry_at (at least 1), else the default (or none)."""
    now = datetime.fromisoformat("2026-05-01T12:00:00+00:00")
    at = datetime.fromisoformat("2026-05-01T12:00:04.200+00:00")
    status, headers, body = unavailable_answer(DependencyUnavailable("db", at, "unavailable"), now=lambda: now)
    assert (status, headers) == (503, {"Retry-After": "5"})
    assert body == {"error": "dependency_unavailable", "target": "db", "retry_at": "2026-05-01T12:00:04.200000Z"}
    past = DependencyUnavailable("db", now.replace(minute=0, second=0), "late")
    assert unavailable_answer(past, now=lambda: now)[1] == {"Retry-After": "1"}
    local = DependencyUnavailable("db", None, "refused", kind="refused")
    assert unavailable_answer(local)[1] == {"Retry-After": "5"}
    assert unavailable_answer(local, default_retry_after=None)[1] == {}
