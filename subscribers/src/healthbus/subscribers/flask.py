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

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import ParamSpec, TypeVar

try:
    from flask import Flask, Response, current_app, jsonify
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.flask needs Flask: pip install 'healthbus-subscribers[flask]'") from exc

from healthbus.subscribers._errors import driver_error_types
from healthbus.subscribers._gate import view_decorator
from healthbus.subscribers._view import DependencyUnavailable, HealthView
from healthbus.subscribers._web import DEFAULT_RETRY_AFTER, dependency_error, unavailable_answer

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


def init_app(
    app: Flask,
    health: HealthView,
    *,
    default_retry_after: int | None = DEFAULT_RETRY_AFTER,
    error_targets: Mapping[str, str] | None = None,
) -> None:
    """Keep ``health`` for :func:`requires`; answer DependencyUnavailable, and a driver's error that is the
    dependency's (``error_targets``: driver or system name -> target), with 503 + Retry-After."""
    app.extensions[EXTENSION] = health
    targets = dict(error_targets or {})

    def handler(exc: DependencyUnavailable) -> Response:
        log.debug("%s", exc)  # an outage must not flood the log
        return unavailable_response(exc, default_retry_after=default_retry_after)

    def driver_handler(exc: BaseException) -> Response:
        unavailable = dependency_error(exc, health, targets)
        if unavailable is None:
            raise exc  # not the dependency's: Flask's usual 500
        return handler(unavailable)

    app.register_error_handler(DependencyUnavailable, handler)
    for error_type in driver_error_types():
        app.register_error_handler(error_type, driver_handler)


def requires(*targets: str, features: Iterable[str] = ()) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view decorator: raise DependencyUnavailable (answered 503) while a required target is down."""
    return view_decorator(_app_health, targets, features)


def _app_health() -> HealthView:
    health: HealthView | None = current_app.extensions.get(EXTENSION)
    if health is None:
        raise RuntimeError("no health client: call healthbus.subscribers.flask.init_app(app, health) first")
    return health
