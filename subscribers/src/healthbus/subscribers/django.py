"""Django: turn "dependency unavailable" into ``503`` with ``Retry-After``, on the synchronous client.

``pip install 'healthbus-subscribers[django]'``. In ``settings.py``::

    MIDDLEWARE = [..., "healthbus.subscribers.django.HealthMiddleware"]
    HEALTHBUS = {"url": "nats://127.0.0.1:4222"}   # SyncHealthClient.connect() arguments

and in views::

    from healthbus.subscribers.django import health, requires

    @requires("orders-db")
    def orders(request): ...

- :class:`HealthMiddleware` answers a :class:`~healthbus.subscribers.DependencyUnavailable`
  raised by a view (by :func:`requires`, by ``DatabaseGuard``...) with ``503``,
  ``Retry-After`` in seconds until the target's ``retry_at`` and a small JSON body
  (``error``, ``target``, ``retry_at``). Settings: ``HEALTHBUS_RETRY_AFTER`` (seconds
  when no ``retry_at`` is known; default 5).
- :func:`health` is the process's client: the one given to :func:`configure` (e.g. a
  ``FakeHealthClient`` in tests), else a :class:`~healthbus.subscribers.SyncHealthClient`
  connected on first use from ``settings.HEALTHBUS`` (fork-safe, so a pre-fork server
  may connect it before forking).
- :func:`requires` checks the named targets (and ``features``) before the view runs.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

try:
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse, JsonResponse
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.django needs Django: pip install 'healthbus-subscribers[django]'") from exc

from healthbus.subscribers._gate import Gate
from healthbus.subscribers._sync import SyncHealthClient
from healthbus.subscribers._view import DependencyUnavailable, HealthView
from healthbus.subscribers._web import DEFAULT_RETRY_AFTER, unavailable_answer

__all__ = ["DependencyUnavailable", "HealthMiddleware", "configure", "health", "requires", "unavailable_response"]

log = logging.getLogger("healthbus.subscribers.web")

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_client: HealthView | None = None


def configure(client: HealthView | None) -> None:
    """Use ``client`` as the process's health client (None: connect from ``settings.HEALTHBUS`` on next use)."""
    global _client
    with _lock:
        _client = client


def health() -> HealthView:
    """The process's health client (see the module docstring)."""
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            options = dict(getattr(settings, "HEALTHBUS", None) or {})
            _client = SyncHealthClient.connect(**options)
        return _client


def unavailable_response(exc: DependencyUnavailable, *, default_retry_after: int | None = None) -> JsonResponse:
    """The 503 answer for ``exc`` (Retry-After, small JSON body)."""
    if default_retry_after is None:
        default_retry_after = getattr(settings, "HEALTHBUS_RETRY_AFTER", DEFAULT_RETRY_AFTER)
    status, headers, body = unavailable_answer(exc, default_retry_after=default_retry_after)
    return JsonResponse(body, status=status, headers=headers)


class HealthMiddleware:
    """Answers DependencyUnavailable from a view with 503 + Retry-After (add it to ``MIDDLEWARE``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DependencyUnavailable):
            return None
        log.debug("%s %s: %s", request.method, request.path, exception)  # an outage must not flood the log
        return unavailable_response(exception)


def requires(*targets: str, features: Iterable[str] = ()) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view decorator: raise DependencyUnavailable (answered 503 by the middleware) while a target is down."""
    features = tuple(features)
    if not targets and not features:
        raise ValueError("name at least one required target or feature")

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            Gate(health(), targets, features=features).check()
            return view(*args, **kwargs)

        return wrapper

    return decorate
