"""No 500 at the edges of an outage: the outage examples of docs/subscribers.md (Flask under ``gunicorn --preload
-w 2``, Django under gunicorn, FastAPI under uvicorn) answer every request 200 or 503 (+ Retry-After, JSON body)
while a real PostgreSQL is stopped with ``pg_ctl stop -m smart|fast|immediate`` and run out of
``max_connections``, with a real nats-server, coordinator and probe worker deciding meanwhile.

Prints "stop -> first 503" per framework and mode (run with ``-s`` to see it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from healthbus.bus.embedded import EmbeddedNats, free_port
from tests.harness._postgres import PostgresServer

from ._sync_support import live_stack, served, wait_until_sync

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "subscribers.md"
TARGET = "orders-db"
#: Seconds a request may take before it counts as hung.
REQUEST_TIMEOUT = 15.0
#: Seconds to wait for a condition of the outage (first 503, first 200 after recovery).
WAIT = 90.0


def outage_examples() -> dict[str, str]:
    """Every ``<!-- outage-example: NAME -->`` code block of docs/subscribers.md, by name."""
    found = re.findall(r"<!-- outage-example: (\w+) -->\n```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    return dict(found)


@dataclass
class Answer:
    at: float
    path: str
    status: int
    headers: dict[str, str]
    body: Any
    error: str | None = None


@dataclass
class Poller:
    """Requests one app's paths in turn, every 50 ms, from its own thread; keeps every answer."""

    name: str
    port: int
    paths: tuple[str, ...]
    answers: list[Answer] = field(default_factory=list)
    last: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def get(self, path: str) -> Answer:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=REQUEST_TIMEOUT) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                return Answer(started, path, response.status, headers, json.loads(response.read()))
        except urllib.error.HTTPError as error:
            headers = {k.lower(): v for k, v in error.headers.items()}
            raw = error.read()
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw[:300].decode("utf-8", "replace")
            return Answer(started, path, error.code, headers, body)
        except OSError as error:  # refused (not listening yet) or a hung request (timeout)
            return Answer(started, path, 0, {}, None, f"{type(error).__name__}: {error}")

    def all_ok(self) -> bool:
        self.last = [self.get(path) for path in self.paths]
        return all(answer.status == 200 for answer in self.last)

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                for path in self.paths:
                    self.answers.append(self.get(path))
                self._stop.wait(0.05)

        self._thread = threading.Thread(target=run, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT + 5)

    def has(self, status: int, since: float) -> bool:
        return self.first(status, since) is not None

    def all_200_since(self, since: float) -> bool:
        answers = [a for a in list(self.answers) if a.at >= since and a.status == 200]
        return all(any(a.path == path for a in answers) for path in self.paths)

    def first(self, status: int, since: float) -> Answer | None:
        return next((a for a in list(self.answers) if a.at >= since and a.status == status), None)


def bad_answers(answers: list[Answer]) -> list[Answer]:
    """Every answer that is not 200, nor 503 with Retry-After >= 1 and the documented JSON body."""
    bad = []
    for answer in answers:
        if answer.status == 200:
            continue
        body = answer.body
        ok = (
            answer.status == 503
            and answer.headers.get("retry-after", "").isdigit()
            and int(answer.headers["retry-after"]) >= 1
            and answer.headers.get("content-type", "").startswith("application/json")
            and isinstance(body, dict)
            and set(body) == {"error", "target", "retry_at"}
            and body["error"] == "dependency_unavailable"
            and body["target"] == TARGET
        )
        if not ok:
            bad.append(answer)
    return bad


def test_every_outage_example_is_run_here() -> None:
    assert sorted(outage_examples()) == ["django", "fastapi", "flask"]


def test_web_apps_answer_200_or_503_through_every_kind_of_postgres_outage(
    nats_server: EmbeddedNats, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Flask (gunicorn --preload -w 2), Django (gunicorn, sync; and on ASGI under uvicorn) and FastAPI (uvicorn)
    side by side, one outage after another: smart, fast and immediate stops, then max_connections exhausted."""
    pg = postgres_server
    with psycopg.connect(pg.dsn, autocommit=True) as admin:
        admin.execute("create table orders (id int primary key)")
        admin.execute("insert into orders values (1), (2)")
    for name, code in outage_examples().items():
        (tmp_path / f"hb_outage_{name}.py").write_text(code)
    # The Django example on ASGI (uvicorn): the same settings, views and middleware.
    (tmp_path / "hb_outage_django_asgi.py").write_text(
        "from django.core.asgi import get_asgi_application\n\n"
        "import hb_outage_django  # noqa: F401  (settings, urls)\n\n"
        "application = get_asgi_application()\n"
    )
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "NATS_URL": nats_server.url,
        "PGHOST": pg.host,
        "PGPORT": str(pg.port),
        "PGUSER": pg.user,
        "PGDATABASE": pg.database,
    }
    ports = {name: free_port() for name in ("flask", "django", "django_asgi", "fastapi")}
    gunicorn = [sys.executable, "-m", "gunicorn", "--no-control-socket"]
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--port"]
    commands = {
        "flask": [*gunicorn, "--preload", "-w", "2", "-b", f"127.0.0.1:{ports['flask']}", "hb_outage_flask:app"],
        "django": [*gunicorn, "-w", "1", "-b", f"127.0.0.1:{ports['django']}", "hb_outage_django:application"],
        "django_asgi": [*uvicorn, str(ports["django_asgi"]), "hb_outage_django_asgi:application"],
        "fastapi": [*uvicorn, str(ports["fastapi"]), "hb_outage_fastapi:app"],
    }
    pollers = {
        "flask": Poller("flask", ports["flask"], ("/orders", "/raw")),
        "django": Poller("django", ports["django"], ("/orders",)),
        "django_asgi": Poller("django_asgi", ports["django_asgi"], ("/orders",)),
        "fastapi": Poller("fastapi", ports["fastapi"], ("/orders", "/raw")),
    }
    figures: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(live_stack(nats_server.url, [(TARGET, "postgres", pg.dsn)], tmp_path / "stack"))
        procs = {
            name: stack.enter_context(served(argv, tmp_path / f"{name}.log", cwd=tmp_path, env=env))
            for name, argv in commands.items()
        }

        def logs() -> str:
            return "\n".join(f"--- {n}.log\n{(tmp_path / f'{n}.log').read_text()[-3000:]}" for n in commands)

        def all_ok() -> bool:
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited\n{logs()}"
            return all(p.all_ok() for p in pollers.values())

        try:
            wait_until_sync(all_ok, WAIT, "every app to answer 200")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {[p.last for p in pollers.values()]}\n{logs()}") from None
        for poller in pollers.values():
            poller.start()

        def outage(label: str, begin: Any, end: Any) -> None:
            since = time.monotonic()
            begin()
            for name, poller in pollers.items():
                wait_until_sync(
                    functools.partial(poller.has, 503, since),
                    WAIT,
                    f"{name} to answer 503 after {label}",
                    lambda poller=poller: poller.answers[-3:],  # type: ignore[misc]
                )
                first = poller.first(503, since)
                assert first is not None
                figures.append(f"{label:<24} {name:<11} stop -> first 503: {(first.at - since) * 1000:7.0f} ms")
            end()
            back = time.monotonic()
            for name, poller in pollers.items():
                wait_until_sync(
                    functools.partial(poller.all_200_since, back),
                    WAIT,
                    f"{name} to answer 200 again after {label}",
                    lambda poller=poller: poller.answers[-3:],  # type: ignore[misc]
                )

        def restart() -> None:
            pg.stop_mode("fast")  # completes a smart stop; no-op when stopped
            pg.start()

        outage("pg_ctl stop -m smart", lambda: pg.stop_mode("smart", wait=False), restart)
        outage("pg_ctl stop -m fast", lambda: pg.stop_mode("fast"), pg.start)
        outage("pg_ctl stop -m immediate", lambda: pg.stop_mode("immediate"), pg.start)

        with psycopg.connect(pg.dsn, autocommit=True) as admin:
            admin.execute("alter system set max_connections = 30")
            admin.execute("alter system set superuser_reserved_connections = 0")
        restart()
        held: list[psycopg.Connection[Any]] = []

        def exhaust() -> None:
            while True:
                try:
                    held.append(psycopg.connect(pg.dsn, connect_timeout=5))
                except psycopg.OperationalError as exc:
                    refused = exc
                    break
                assert len(held) < 60, "max_connections never ran out"
            assert "too many clients" in str(refused), refused

        def release() -> None:
            for conn in held:
                conn.close()

        try:
            outage("max_connections exhausted", exhaust, release)
        finally:
            release()
        for poller in pollers.values():
            poller.stop()

    print("\n" + "\n".join(figures))
    for name, poller in pollers.items():
        bad = bad_answers(poller.answers)
        statuses = sorted({a.status for a in poller.answers})
        assert not bad, f"{name}: {len(bad)} of {len(poller.answers)} answers not 200/503: {bad[:5]}\n{logs()}"
        assert statuses == [200, 503], (name, statuses)
