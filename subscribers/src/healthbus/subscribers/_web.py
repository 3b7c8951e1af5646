"""The HTTP answer to "a dependency is unavailable", shared by every web-framework helper (pure, no framework).

``503 Service Unavailable``, a ``Retry-After`` header in whole seconds until the
exception's ``retry_at`` (at least 1; ``default_retry_after`` when healthbus announced no
``retry_at``, e.g. after a local connection failure; no header when that is None), and a
small JSON body::

    {"error": "dependency_unavailable", "target": "orders-db", "retry_at": "2026-01-01T12:00:05Z"}

The body never carries the exception's reason (it may name internal hosts): that goes to
the service's log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from healthbus.protocol import utcnow
from healthbus.subscribers._view import DependencyUnavailable

__all__ = ["DEFAULT_RETRY_AFTER", "unavailable_answer"]

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
