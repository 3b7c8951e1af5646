"""FastStream adapter: JetStream consumers wait out a dependency outage instead of failing messages.

``pip install 'healthbus-subscribers[faststream]'``. Two ways to use it::

    from healthbus.subscribers.faststream import HealthMiddleware, requires

    # 1. A middleware for every subscriber of a router (or broker):
    router = NatsRouter(middlewares=[HealthMiddleware(health, "postgres-main", max_deliver=5)])

    # 2. A decorator on one handler (under @subscriber):
    @broker.subscriber("orders.*", stream="ORDERS", durable="workers", pull_sub=PullSub())
    @requires(health, "postgres-main")
    async def handle(order: dict) -> None: ...

Rules:

- The handler runs only while every required target (and every target providing a
  required feature) is available. Otherwise the message is nak'ed with a delay: until
  the target's ``retry_at``, clamped to [``min_delay``, ``max_delay``], or
  ``default_delay`` when no ``retry_at`` is known. JetStream redelivers it then; it is
  never acked, rejected or dead-lettered because of the outage.
- A handler that raises :class:`~healthbus.subscribers.DependencyUnavailable` (for
  example from ``DatabaseGuard``, when the database failed before healthbus decided) gets
  its message nak'ed the same way.
- Naks count as deliveries toward the consumer's ``max_deliver``. Give the middleware
  the same ``max_deliver``: on the last allowed delivery it does not nak but *holds* the
  message (``in_progress`` every ``hold_interval`` seconds, so ``ack_wait`` never runs
  out) until the targets are available, then runs the handler. ``mode="hold"`` holds
  from the first delivery: the consumer pauses (with ``PullSub(batch_size=1)`` and one
  worker nothing else is fetched meanwhile). ``hold_interval`` must be below the
  consumer's ``ack_wait``. The decorator cannot hold (it has no access to the message):
  use it with ``max_deliver`` unset (unlimited, the JetStream default).
- Works with FastStream's default acknowledgement (ack after the handler); with
  ``AckPolicy.MANUAL`` the middleware nak's itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

try:
    from faststream import BaseMiddleware
    from faststream.exceptions import NackMessage
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "healthbus.subscribers.faststream needs FastStream: pip install 'healthbus-subscribers[faststream]'"
    ) from exc

from healthbus.subscribers._gate import Gate
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = ["Gate", "HealthMiddleware", "requires"]

log = logging.getLogger("healthbus.subscribers.faststream")

P = ParamSpec("P")
R = TypeVar("R")


class HealthMiddleware:
    """A FastStream middleware factory: pass it in ``NatsRouter/NatsBroker(middlewares=[...])``."""

    def __init__(
        self,
        health: HealthView,
        *targets: str,
        features: Sequence[str] = (),
        mode: Literal["nak", "hold"] = "nak",
        max_deliver: int | None = None,
        hold_interval: float = 5.0,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        default_delay: float = 5.0,
    ) -> None:
        if mode not in ("nak", "hold"):
            raise ValueError(f"invalid mode {mode!r}: expected 'nak' or 'hold'")
        if max_deliver is not None and max_deliver < 1:
            max_deliver = None  # -1 / 0: unlimited, as in JetStream
        self.gate = Gate(
            health, targets, features=features, min_delay=min_delay, max_delay=max_delay, default_delay=default_delay
        )
        self.mode = mode
        self.max_deliver = max_deliver
        self.hold_interval = hold_interval
        self.progress_sent = 0
        """``in_progress`` signals sent for held messages."""
        self._changed = asyncio.Event()
        health.on_change(self._on_change)

    def _on_change(self, _event: Any) -> None:
        self._changed.set()

    def __call__(self, msg: Any, /, *, context: Any) -> _HealthScope:
        return _HealthScope(msg, context=context, owner=self)

    async def consume(self, call_next: Callable[[Any], Awaitable[Any]], message: Any) -> Any:
        """Run the handler if the targets are available; otherwise nak (or hold) ``message``."""
        gate = self.gate
        while True:
            blocker = gate.blocked_by()
            retry_at: datetime | None = None
            handler_failed = False
            if blocker is None:
                try:
                    gate.passed += 1
                    return await call_next(message)
                except DependencyUnavailable as exc:
                    blocker, retry_at = exc.target, exc.retry_at if isinstance(exc.retry_at, datetime) else None
                    gate.passed -= 1
                    handler_failed = True
                    log.info(
                        "%s: handler hit %s unavailable (%s): not failing the message",
                        _subject(message),
                        blocker,
                        exc.kind,
                    )
            if self._must_hold(message):
                gate.holds += 1
                # A handler that failed fast while the bus still says available (a local
                # trip) would fail again at once: wait at least one interval before retrying.
                await self._hold(message, wait_once=handler_failed)
                continue
            delay = gate.delay(blocker, retry_at)
            gate.naks += 1
            await message.nack(delay=delay)
            raise NackMessage(delay=delay)

    def _must_hold(self, message: Any) -> bool:
        if self.mode == "hold":
            return True
        if self.max_deliver is None:
            return False
        try:
            delivered = int(message.raw_message.metadata.num_delivered)
        except Exception:  # not a JetStream message: nothing to protect
            return False
        return delivered >= self.max_deliver

    async def _hold(self, message: Any, *, wait_once: bool = False) -> None:
        """Keep ``message`` (in_progress) until the gate opens (and at least one interval if ``wait_once``)."""
        while wait_once or self.gate.blocked_by() is not None:
            wait_once = False
            try:
                await message.in_progress()
                self.progress_sent += 1
            except Exception as exc:  # the message may have been taken back: keep trying quietly
                log.debug("in_progress failed: %s", type(exc).__name__)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.hold_interval)


def _subject(message: Any) -> str:
    raw = getattr(message, "raw_message", None)
    return str(getattr(raw, "subject", "message"))


class _HealthScope(BaseMiddleware):
    """The per-message middleware instance FastStream creates from :class:`HealthMiddleware`."""

    def __init__(self, msg: Any, /, *, context: Any, owner: HealthMiddleware) -> None:
        super().__init__(msg, context=context)
        self.owner = owner

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        return await self.owner.consume(call_next, msg)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        return False


def requires(
    health: HealthView,
    *targets: str,
    features: Sequence[str] = (),
    min_delay: float = 0.5,
    max_delay: float = 30.0,
    default_delay: float = 5.0,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async FastStream handler: nak its message with a delay while a target is unavailable.

    Put it under ``@broker.subscriber(...)``. The gate's counters (naks, passed) are on
    the decorator's ``.gate`` (``needs_db = requires(...)``; ``needs_db.gate.naks``).
    """
    gate = Gate(
        health, targets, features=features, min_delay=min_delay, max_delay=max_delay, default_delay=default_delay
    )

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@requires needs an async handler, got {func!r}")

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            blocker = gate.blocked_by()
            retry_at: datetime | None = None
            if blocker is None:
                try:
                    gate.passed += 1
                    return await func(*args, **kwargs)
                except DependencyUnavailable as exc:
                    gate.passed -= 1
                    blocker = exc.target
                    retry_at = exc.retry_at if isinstance(exc.retry_at, datetime) else None
            gate.naks += 1
            raise NackMessage(delay=gate.delay(blocker, retry_at))

        wrapper.gate = gate  # type: ignore[attr-defined]
        return wrapper

    decorate.gate = gate  # type: ignore[attr-defined]
    return decorate
