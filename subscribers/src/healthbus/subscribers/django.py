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
- **The ORM guard.** ``HEALTHBUS_DATABASES = {"default": "orders-db"}`` (database alias ->
  healthbus target) makes the middleware guard those aliases on the connection each
  request uses (:func:`guard_databases` does it elsewhere: a Celery task, a command): a
  connect and every query first check the target (``DependencyUnavailable`` at once while
  it is unavailable or a connection failure happened here less than
  ``HEALTHBUS_LOCAL_COOLDOWN`` seconds ago, default 2), and a connection-level error
  (the driver's table: refused, shutting down, too many clients...) trips locally,
  reports, and is raised as ``DependencyUnavailable``: ``503``, never ``500``. The guard
  is the connection's ``ensure_connection`` (the connect) and ``create_cursor`` plus an
  ``execute_wrapper`` (every query); the rules are ``DatabaseGuard``'s. A connection that
  met a connection-level error is closed at once, so the next attempt connects anew.
  Any ``django.db`` error from a driver that its table says is the dependency's is
  answered ``503`` too (target: the guarded alias's of that vendor). Sync (WSGI) and
  async (ASGI) stacks both.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
    from django.conf import settings
    from django.db import connections
    from django.http import HttpRequest, HttpResponse, JsonResponse
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.django needs Django: pip install 'healthbus-subscribers[django]'") from exc

from healthbus.subscribers._gate import view_decorator
from healthbus.subscribers._guard import TargetGuard
from healthbus.subscribers._sync import SyncHealthClient
from healthbus.subscribers._view import DependencyUnavailable, HealthView
from healthbus.subscribers._web import DEFAULT_RETRY_AFTER, dependency_error, unavailable_answer

__all__ = [
    "DependencyUnavailable",
    "HealthMiddleware",
    "configure",
    "guard_databases",
    "guards",
    "health",
    "requires",
    "unavailable_response",
]

log = logging.getLogger("healthbus.subscribers.web")

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_client: HealthView | None = None


_guards: dict[str, TargetGuard] = {}
_guards_of: HealthView | None = None


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


def _guarded_aliases() -> dict[str, str]:
    aliases = getattr(settings, "HEALTHBUS_DATABASES", None) or {}
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise TypeError(f"settings.HEALTHBUS_DATABASES must map database aliases to target names, got {aliases!r}")
    return aliases


def guards() -> dict[str, TargetGuard]:
    """The guard of every alias in ``settings.HEALTHBUS_DATABASES`` (counters: ``rejected``, ``connection_errors``)."""
    global _guards, _guards_of
    client = health()
    with _lock:
        if _guards_of is not client:  # a new client (configure()): new guards
            cooldown = float(getattr(settings, "HEALTHBUS_LOCAL_COOLDOWN", 2.0))
            made = {}
            for alias, target in _guarded_aliases().items():
                config = connections.settings[alias]  # KeyError names an unknown alias
                password = config.get("PASSWORD") or ""
                secrets = [password] if isinstance(password, str) and password else []
                made[alias] = TargetGuard(client, target, local_cooldown=cooldown, secrets=secrets)
            _guards, _guards_of = made, client
        return _guards


def guard_databases() -> None:
    """Guard this thread's connections of the aliases in ``settings.HEALTHBUS_DATABASES`` (idempotent).

    The middleware calls it for every request (on the thread the ORM runs on); call it
    yourself where the ORM runs outside a request (a Celery task, a management command).
    """
    for alias, guard in guards().items():
        _install(connections[alias], alias, guard)


def _install(connection: Any, alias: str, guard: TargetGuard) -> None:
    if getattr(connection, "_healthbus_guard", None) is guard:
        return
    first = getattr(connection, "_healthbus_guard", None) is None
    connection._healthbus_guard = guard
    if not first:
        return  # the hooks below read the current guard from the connection

    def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            current: TargetGuard = connection._healthbus_guard
            current.check()
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                unavailable = current.wrap(exc)
                if unavailable is None:
                    raise
                # Drop the (dead) connection now, not at the end of a request that may never come
                # (a task, a command): the next attempt after the cool-down connects anew.
                with contextlib.suppress(Exception):
                    connection.close()
                raise unavailable from None

        return call

    # The connect, and the cursor of an existing (possibly dead) connection: every way into the database.
    connection.ensure_connection = guarded(connection.ensure_connection)
    connection.create_cursor = guarded(connection.create_cursor)

    def execute_wrapper(execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any) -> Any:
        return guarded(execute)(sql, params, many, context)

    connection.execute_wrappers.append(execute_wrapper)
    log.debug("healthbus: guarding database alias %s (%s)", alias, guard.target)


def _vendor_targets() -> dict[str, str]:
    """``{vendor: target}`` of the guarded aliases (``postgresql``, ``sqlite``...), for unattributed errors."""
    return {connections[alias].vendor: guard.target for alias, guard in guards().items()}


class HealthMiddleware:
    """Answers DependencyUnavailable (and a dependency's ``django.db`` error) with 503 + Retry-After, and guards
    the aliases of ``settings.HEALTHBUS_DATABASES`` (add it to ``MIDDLEWARE``; sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._guarding = bool(getattr(settings, "HEALTHBUS_DATABASES", None))
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        if self._guarding:
            guard_databases()
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self._guarding:
            await sync_to_async(guard_databases, thread_sensitive=True)()  # the thread the ORM runs on
        response: Awaitable[HttpResponse] = self.get_response(request)
        return await response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        targets = _vendor_targets() if self._guarding else {}
        unavailable = dependency_error(exception, health() if targets else None, targets)
        if unavailable is None:
            return None
        log.debug("%s %s: %s", request.method, request.path, exception)  # an outage must not flood the log
        return unavailable_response(unavailable)


def requires(*targets: str, features: Iterable[str] = ()) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view decorator: raise DependencyUnavailable (answered 503 by the middleware) while a target is down."""
    return view_decorator(health, targets, features)
