"""Which required dependency blocks work now, and until when (pure: no I/O, no framework).

Shared by the FastStream middleware (nak delays) and the web-framework helpers (503 with
``Retry-After``): one rule for "required targets and features are available", one for
"how long until it may be tried again".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import ParamSpec, TypeVar

from healthbus.protocol import utcnow
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = ["Gate", "view_decorator"]

P = ParamSpec("P")
R = TypeVar("R")


class Gate:
    """Which required target blocks processing now, and how long to wait for it (pure, no I/O)."""

    def __init__(
        self,
        health: HealthView,
        targets: Iterable[str] = (),
        *,
        features: Iterable[str] = (),
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        default_delay: float = 5.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.health = health
        self.targets: tuple[str, ...] = tuple(targets)
        self.features: tuple[str, ...] = tuple(features)
        if not self.targets and not self.features:
            raise ValueError("name at least one required target or feature")
        if not 0 <= min_delay <= max_delay:
            raise ValueError(f"invalid delays: expected 0 <= min_delay ({min_delay}) <= max_delay ({max_delay})")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.default_delay = min(max(default_delay, min_delay), max_delay)
        self._now = now
        self.naks = 0
        """Messages nak'ed because a required target was unavailable."""
        self.holds = 0
        """Messages held (not nak'ed) on their last allowed delivery, or in hold mode."""
        self.passed = 0
        """Messages handed to the handler."""

    def blocked_by(self) -> str | None:
        """The first required target (or ``feature:<name>``) not available now, else None."""
        is_available = self.health.is_available
        for target in self.targets:
            if not is_available(target):
                return target
        for feature in self.features:
            if not self.health.feature_available(feature):
                return f"feature:{feature}"
        return None

    def retry_at(self, blocker: str) -> datetime | None:
        """When ``blocker`` (a target) may be tried again, as healthbus announced it (None: not known)."""
        if blocker.startswith("feature:"):
            return None
        state = self.health.state(blocker)
        return state.retry_at if state is not None else None

    def check(self) -> None:
        """Raise DependencyUnavailable naming the first required target (or feature) not available now."""
        blocker = self.blocked_by()
        if blocker is None:
            return
        state = None if blocker.startswith("feature:") else self.health.state(blocker)
        if state is None:
            reason = "a target providing it is not available" if blocker.startswith("feature:") else "state unknown"
        else:
            reason = state.state + (" (stale: healthbus unreachable)" if state.stale else "")
        raise DependencyUnavailable(blocker, self.retry_at(blocker), reason)

    def delay(self, blocker: str | None = None, retry_at: datetime | None = None) -> float:
        """Seconds to wait before redelivery: until ``retry_at`` (of ``blocker``), clamped."""
        if retry_at is None and blocker is not None:
            retry_at = self.retry_at(blocker)
        if retry_at is None:
            return self.default_delay
        seconds = (retry_at - self._now()).total_seconds()
        return min(max(seconds, self.min_delay), self.max_delay)


def view_decorator(
    health_of: Callable[[], HealthView], targets: Iterable[str], features: Iterable[str]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The ``requires(...)`` of the synchronous web frameworks (Django, Flask): a view
    decorator that raises DependencyUnavailable (their 503) while a required target or
    feature is not available. ``health_of()`` finds the framework's client at call time."""
    targets, features = tuple(targets), tuple(features)
    if not targets and not features:
        raise ValueError("name at least one required target or feature")

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            Gate(health_of(), targets, features=features).check()
            return view(*args, **kwargs)

        return wrapper

    return decorate
