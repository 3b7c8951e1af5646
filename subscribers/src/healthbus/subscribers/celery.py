"""Celery: tasks that wait out an outage instead of failing, and workers that stop consuming during one.

``pip install 'healthbus-subscribers[celery]'``::

    from celery import Celery
    from healthbus.subscribers import SyncHealthClient
    from healthbus.subscribers.celery import HealthTask, install

    health = SyncHealthClient.connect()   # fork-safe: each prefork child reconnects on first use
    app = Celery("orders", broker="redis://...")
    install(app, health, pause={"orders": ["orders-db"]})   # queue -> targets it needs

    @app.task(bind=True, base=HealthTask, requires=["orders-db"], max_retries=3)
    def store(self, order_id): ...

Rules:

- **Before the body runs**, a :class:`HealthTask` checks its ``requires`` targets (and
  ``requires_features``); while one is not available the task is retried at the
  target's ``retry_at`` (``countdown`` = seconds until then, clamped to 0.5–300 s, plus up
  to ``outage_jitter`` (20 %) of random spread so a backlog does not arrive at once; 5 s
  when no ``retry_at`` is known).
- **When the body fails** with :class:`~healthbus.subscribers.DependencyUnavailable`
  (``DatabaseGuard``, the Django ORM guard, :func:`requires`-style checks), or with a
  driver's error that its table (docs/subscribers.md) says trips, the task is retried the
  same way. Any other error is the task's own: Celery's usual handling.
- **Outage retries do not count against ``max_retries``.** They go through
  ``self.retry(countdown=...)`` (Celery's retry: the ``task_retry`` signal, state
  ``RETRY``, the message re-sent) with the request's retry count held where it was, so
  the re-sent message carries the same ``retries`` as the one that met the outage. A
  long outage therefore never exhausts ``max_retries``; the task's own failures still
  do. ``outage_retries`` on the request counts them (header ``healthbus_outage_retries``).
- **Worker-level pause** (:func:`install` with ``pause=``): in the worker's main process,
  once the worker is ready, each listed queue is consumed only while all its targets
  are available: the worker sends itself ``cancel_consumer(queue)`` when one becomes
  unavailable and ``add_consumer(queue)`` when all are back (Celery's documented remote
  control commands, addressed to this worker only; remote control must be enabled, as
  it is by default). Messages stay in the broker meanwhile: nothing is taken that
  cannot be processed. What the FastStream middleware does for NATS consumers.
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, NoReturn

try:
    from celery import Celery, Task
    from celery.signals import worker_ready, worker_shutting_down
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("healthbus.subscribers.celery needs Celery: pip install 'healthbus-subscribers[celery]'") from exc

from healthbus.subscribers._errors import classify
from healthbus.subscribers._gate import Gate
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = ["HealthTask", "QueuePauser", "install"]

log = logging.getLogger("healthbus.subscribers.celery")

#: The health client of each app (install()).
_CLIENTS: weakref.WeakKeyDictionary[Celery, HealthView] = weakref.WeakKeyDictionary()

OUTAGE_HEADER = "healthbus_outage_retries"


def health_of(app: Celery) -> HealthView:
    """The health client :func:`install` gave ``app``."""
    client = _CLIENTS.get(app)
    if client is None:
        raise RuntimeError("no health client: call healthbus.subscribers.celery.install(app, health) first")
    return client


class HealthTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """A task base that retries at ``retry_at`` while a required target is unavailable (module docstring)."""

    abstract = True
    requires: ClassVar[Iterable[str]] = ()
    """Targets the task needs (``@app.task(base=HealthTask, requires=[...])``)."""
    requires_features: ClassVar[Iterable[str]] = ()
    outage_jitter: ClassVar[float] = 0.2
    """Up to this fraction of the countdown is added at random."""
    outage_min_delay: ClassVar[float] = 0.5
    outage_max_delay: ClassVar[float] = 300.0
    outage_rng: ClassVar[random.Random] = random.Random()
    """Where the jitter comes from (seed it, or swap it, for a reproducible run)."""

    def _gate(self) -> Gate | None:
        targets, features = tuple(self.requires), tuple(self.requires_features)
        health = health_of(self.app)
        if not targets and not features:
            return None
        return Gate(
            health, targets, features=features, min_delay=self.outage_min_delay, max_delay=self.outage_max_delay
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        gate = self._gate()
        if gate is not None:
            blocker = gate.blocked_by()
            if blocker is not None:
                self.retry_outage(gate.delay(blocker), f"{blocker} is not available")
        try:
            return super().__call__(*args, **kwargs)
        except DependencyUnavailable as exc:
            delay = self._delay(exc.target, exc.retry_at)
            self.retry_outage(delay, str(exc))
        except Exception as exc:
            found = classify(exc)
            if found is None or not found.trips:
                raise
            self.retry_outage(self._delay(None, None), f"{found.kind}: {type(exc).__name__}")

    def _delay(self, target: str | None, retry_at: Any) -> float:
        """Seconds until ``retry_at`` (Gate's rule, clamped; its default when unknown)."""
        gate = Gate(
            health_of(self.app),
            (target or "",),  # only for its delay rule: never checked
            min_delay=self.outage_min_delay,
            max_delay=self.outage_max_delay,
        )
        return gate.delay(None, retry_at if isinstance(retry_at, datetime) else None)

    def retry_outage(self, delay: float, reason: str) -> NoReturn:
        """``self.retry(countdown=delay + jitter)`` without counting it against ``max_retries`` (module docstring)."""
        countdown = delay * (1.0 + self.outage_jitter * self.outage_rng.random())
        request = self.request
        outage_retries = int(getattr(request, OUTAGE_HEADER, None) or 0) + 1
        log.info(
            "%s[%s]: %s; retrying in %.1fs (outage retry %d)", self.name, request.id, reason, countdown, outage_retries
        )
        headers = {**(request.headers or {}), OUTAGE_HEADER: outage_retries}
        request.retries -= 1  # Celery's retry() adds one: the re-sent message keeps this one's count
        try:
            raise self.retry(countdown=countdown, headers=headers)
        finally:
            request.retries += 1


class QueuePauser:
    """Cancels a worker's consumer of each queue while its targets are unavailable, adds it back after."""

    def __init__(self, app: Celery, health: HealthView, pause: Mapping[str, Iterable[str]], hostname: str) -> None:
        self.app = app
        self.health = health
        self.gates = {queue: Gate(health, tuple(targets)) for queue, targets in pause.items()}
        self.hostname = hostname
        self.paused: set[str] = set()
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.health.on_change(lambda _event: self.update())
        self.update()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def update(self) -> None:
        """Pause or resume each queue to match the targets' availability now."""
        with self._lock:
            for queue, gate in self.gates.items():
                blocker = gate.blocked_by()
                if blocker is not None and queue not in self.paused:
                    self.app.control.cancel_consumer(queue, destination=[self.hostname], reply=False)
                    self.paused.add(queue)
                    log.warning("healthbus: stopped consuming %s: %s is not available", queue, blocker)
                elif blocker is None and queue in self.paused:
                    self.app.control.add_consumer(queue, destination=[self.hostname], reply=False)
                    self.paused.discard(queue)
                    log.warning("healthbus: consuming %s again", queue)


def install(app: Celery, health: HealthView, *, pause: Mapping[str, Iterable[str]] | None = None) -> None:
    """Give ``app``'s HealthTasks their health client; with ``pause`` (queue -> targets), pause those queues."""
    _CLIENTS[app] = health
    if not pause:
        return
    pause = {queue: tuple(targets) for queue, targets in pause.items()}
    for queue, targets in pause.items():
        if not targets:
            raise ValueError(f"pause[{queue!r}]: name at least one target")
    pausers: list[QueuePauser] = []

    def ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        pauser = QueuePauser(app, health, pause, sender.hostname)
        pausers.append(pauser)
        pauser.start()

    def shutting_down(**_: Any) -> None:
        for pauser in pausers:
            pauser.stop()

    worker_ready.connect(ready, weak=False)
    worker_shutting_down.connect(shutting_down, weak=False)
