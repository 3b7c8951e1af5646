"""The HTTP answer to "a dependency is unavailable", shared by every web-framework helper (pure, no framework).

``503 Service Unavailable``, a ``Retry-After`` header in whole seconds until the
exception's ``retry_at`` (at least 1; ``default_retry_after`` when healthbus announced no
``retry_at``, e.g. after a local connection failure; no header when that is None), and a
small JSON body::

    {"error": "dependency_unavailable", "target": "orders-db", "retry_at": "2026-01-01T12:00:05Z"}

The body never carries the exception's reason (it may name internal hosts): that goes to
the service's log.

A driver's error raised inside a request (``psycopg.OperationalError`` while PostgreSQL
shuts down, before any verdict exists) gets the same answer when its driver's table
(``_errors``) says it trips: :func:`dependency_error` names the target from
``error_targets`` (a driver or system name, e.g. ``{"postgresql": "orders-db"}``; else the
system name itself) and reports the failure to the health client for a named target. Any
other error is not the dependency's and keeps its usual ``500``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from healthbus.protocol import utcnow
from healthbus.subscribers._errors import SYSTEMS, classify, driver_of
from healthbus.subscribers._report import report_quietly
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = ["DEFAULT_RETRY_AFTER", "dependency_error", "unavailable_answer"]

#: Seconds to put in Retry-After when no ``retry_at`` is known.
DEFAULT_RETRY_AFTER: Final = 5


def _iso(when: datetime) -> str:
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def unavailable_answer(
    exc: DependencyUnavailable,
    *,
    default_retry_after: int | None = DEFAULT_RETRY_AFTER,
    now: Callable[[], datetime] = utcnow,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``(status, headers, body)`` for ``exc``: 503, Retry-After, the JSON body (module docstring)."""
    retry_at = exc.retry_at if isinstance(exc.retry_at, datetime) else None
    headers: dict[str, str] = {}
    if retry_at is not None:
        headers["Retry-After"] = str(max(1, math.ceil((retry_at - now()).total_seconds())))
    elif default_retry_after is not None:
        headers["Retry-After"] = str(max(1, int(default_retry_after)))
    body = {
        "error": "dependency_unavailable",
        "target": exc.target,
        "retry_at": _iso(retry_at) if retry_at is not None else None,
    }
    return 503, headers, body


def dependency_error(
    exc: BaseException, health: HealthView | None, error_targets: Mapping[str, str] | None = None
) -> DependencyUnavailable | None:
    """The DependencyUnavailable a driver's error raised in a request stands for, or None (module docstring)."""
    if isinstance(exc, DependencyUnavailable):
        return exc
    found = classify(exc)
    if found is None or not found.trips:
        return None
    targets = error_targets or {}
    target = targets.get(found.driver) or targets.get(found.system)
    if target is None and found.driver == "sqlalchemy":
        # A SQLAlchemy row (a pooled connection found dead) names no server: the driver
        # under it does (asyncpg under an invalidated connection is PostgreSQL's).
        inner = driver_of(exc)
        if inner is not None and inner != "sqlalchemy":
            target = targets.get(inner) or targets.get(SYSTEMS.get(inner, ""))
    retry_at = None
    if target is not None and health is not None:
        if found.reports:
            report_quietly(health, target, found.kind, exc)
        state = health.state(target)
        retry_at = state.retry_at if state is not None else None
    return DependencyUnavailable(target or found.system, retry_at, f"{found.kind}: {found.row}", kind=found.kind)
