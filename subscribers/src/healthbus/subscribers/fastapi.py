"""FastAPI / Starlette: turn "dependency unavailable" into ``503`` with ``Retry-After``.

``pip install 'healthbus-subscribers[fastapi]'`` (only Starlette is imported, so plain
Starlette apps can use :func:`install` and :func:`lifespan` too)::

    from fastapi import Depends, FastAPI
    from healthbus.subscribers.fastapi import install, lifespan, requires

    app = FastAPI(lifespan=lifespan())          # connects app.state.health, closes it at shutdown
    install(app)                                 # DependencyUnavailable -> 503 + Retry-After

    @app.get("/orders", dependencies=[Depends(requires("orders-db"))])
    async def orders() -> list[dict]: ...

- :func:`requires` checks the named targets (and ``features``) before the endpoint runs
  and raises :class:`~healthbus.subscribers.DependencyUnavailable` for the first one
  that is not available; the client is ``health=`` or else ``request.app.state.health``.
- :func:`install` registers the exception handler, so a ``DependencyUnavailable`` raised
  anywhere in an endpoint (e.g. by ``DatabaseGuard``) gets the same answer: ``503``,
  ``Retry-After`` in seconds until the target's ``retry_at`` and a small JSON body
  (``error``, ``target``, ``retry_at``).
- :func:`lifespan` connects a :class:`~healthbus.subscribers.HealthClient` at startup
  (arguments as ``HealthClient.connect``) and closes it at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "healthbus.subscribers.fastapi needs FastAPI or Starlette: pip install 'healthbus-subscribers[fastapi]'"
    ) from exc

from healthbus.subscribers._client import HealthClient
from healthbus.subscribers._errors import driver_error_types
from healthbus.subscribers._gate import Gate
from healthbus.subscribers._view import DependencyUnavailable, HealthView
from healthbus.subscribers._web import DEFAULT_RETRY_AFTER, dependency_error, unavailable_answer

__all__ = ["DependencyUnavailable", "install", "lifespan", "requires", "unavailable_response"]

log = logging.getLogger("healthbus.subscribers.web")


def _health_of(request: Request) -> HealthView:
    health = getattr(request.app.state, "health", None)
    if health is None:
        raise RuntimeError(
            "no health client: pass requires(..., health=client) or set app.state.health "
            "(healthbus.subscribers.fastapi.lifespan() does)"
        )
    return health  # type: ignore[no-any-return]


def requires(
    *targets: str, features: Iterable[str] = (), health: HealthView | None = None
) -> Callable[[Request], Awaitable[None]]:
    """A dependency (``Depends(requires("orders-db"))``) that raises DependencyUnavailable while one is down."""
    features = tuple(features)
    fixed = Gate(health, targets, features=features) if health is not None else None
    if fixed is None and not targets and not features:
        raise ValueError("name at least one required target or feature")

    async def dependency(request: Request) -> None:
        gate = fixed if fixed is not None else Gate(_health_of(request), targets, features=features)
        gate.check()

    return dependency


def unavailable_response(
    exc: DependencyUnavailable, *, default_retry_after: int | None = DEFAULT_RETRY_AFTER
) -> JSONResponse:
    """The 503 answer for ``exc`` (Retry-After, small JSON body)."""
    status, headers, body = unavailable_answer(exc, default_retry_after=default_retry_after)
    return JSONResponse(body, status_code=status, headers=headers)


def install(
    app: Any, *, default_retry_after: int | None = DEFAULT_RETRY_AFTER, error_targets: Mapping[str, str] | None = None
) -> None:
    """Answer every DependencyUnavailable the app raises, and a driver's error that is the dependency's
    (``error_targets``: driver or system name -> target), with 503 + Retry-After (FastAPI or Starlette app)."""
    targets = dict(error_targets or {})

    async def handler(request: Request, exc: Exception) -> Response:
        unavailable = dependency_error(exc, getattr(request.app.state, "health", None), targets)
        if unavailable is None:
            raise exc  # not the dependency's: the usual 500
        log.debug("%s %s: %s", request.method, request.url.path, exc)  # an outage must not flood the log
        return unavailable_response(unavailable, default_retry_after=default_retry_after)

    app.add_exception_handler(DependencyUnavailable, handler)
    for error_type in driver_error_types():
        app.add_exception_handler(error_type, handler)


def lifespan(url: str | None = None, **connect: Any) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan (``FastAPI(lifespan=lifespan(url))``) that keeps ``app.state.health`` connected while the app runs.

    ``connect`` takes :meth:`HealthClient.connect`'s keyword arguments. To combine it with
    a lifespan of your own, ``async with HealthClient.connect(...) as health:`` in yours.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with HealthClient.connect(url, **connect) as health:
            app.state.health = health
            try:
                yield
            finally:
                app.state.health = None

    return run
