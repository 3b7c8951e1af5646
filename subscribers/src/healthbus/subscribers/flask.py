"""Flask: turn "dependency unavailable" into ``503`` with ``Retry-After``, on the synchronous client.

``pip install 'healthbus-subscribers[flask]'``::

    from flask import Flask
    from healthbus.subscribers import SyncHealthClient
    from healthbus.subscribers.flask import init_app, requires

    health = SyncHealthClient.connect()     # fork-safe: fine at import time under gunicorn --preload
    app = Flask(__name__)
    init_app(app, health)

    @app.get("/orders")
    @requires("orders-db")
    def orders(): ...

- :func:`init_app` registers an error handler: a
  :class:`~healthbus.subscribers.DependencyUnavailable` raised by a view (by
  :func:`requires`, by ``DatabaseGuard``...) becomes ``503`` with ``Retry-After`` in
  seconds until the target's ``retry_at`` and a small JSON body (``error``, ``target``,
  ``retry_at``). It keeps the client in ``app.extensions["healthbus"]``.
- :func:`requires` checks the named targets (and ``features``) before the view runs.
  Any :class:`~healthbus.subscribers.HealthView` works as the client
  (``FakeHealthClient`` in tests).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

try:
    from flask import Flask, Response, current_app, jsonify
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.flask needs Flask: pip install 'healthbus-subscribers[flask]'") from exc

from healthbus.subscribers._gate import Gate
from healthbus.subscribers._view import DependencyUnavailable, HealthView
from healthbus.subscribers._web import DEFAULT_RETRY_AFTER, unavailable_answer

__all__ = ["DependencyUnavailable", "init_app", "requires", "unavailable_response"]

log = logging.getLogger("healthbus.subscribers.web")

P = ParamSpec("P")
R = TypeVar("R")

EXTENSION = "healthbus"


def unavailable_response(
    exc: DependencyUnavailable, *, default_retry_after: int | None = DEFAULT_RETRY_AFTER
) -> Response:
    """The 503 answer for ``exc`` (Retry-After, small JSON body)."""
    status, headers, body = unavailable_answer(exc, default_retry_after=default_retry_after)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def init_app(app: Flask, health: HealthView, *, default_retry_after: int | None = DEFAULT_RETRY_AFTER) -> None:
    """Keep ``health`` for :func:`requires` and answer DependencyUnavailable with 503 + Retry-After."""
    app.extensions[EXTENSION] = health

    def handler(exc: DependencyUnavailable) -> Response:
        log.debug("%s", exc)  # an outage must not flood the log
        return unavailable_response(exc, default_retry_after=default_retry_after)

    app.register_error_handler(DependencyUnavailable, handler)


def requires(*targets: str, features: Iterable[str] = ()) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view decorator: raise DependencyUnavailable (answered 503) while a required target is down."""
    features = tuple(features)
    if not targets and not features:
        raise ValueError("name at least one required target or feature")

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            health: Any = current_app.extensions.get(EXTENSION)
            if health is None:
                raise RuntimeError("no health client: call healthbus.subscribers.flask.init_app(app, health) first")
            Gate(health, targets, features=features).check()
            return view(*args, **kwargs)

        return wrapper

    return decorate
