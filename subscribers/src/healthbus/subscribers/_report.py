"""Failure reports: what an instance saw go wrong, told to the coordinator (a hint, never a verdict).

When an adapter's call fails with a connection-level error, or code calls
``report_failure(target, kind, error)`` on its health client, a
:class:`~healthbus.protocol.FailureReport` goes out on ``<prefix>.report.<target>``. The
coordinator never decides from reports: it asks the probe workers that check the target
to check it now, so the usual quorum and hysteresis rules decide sooner.

Invariants (kept by :class:`FailureReporter`, shared by every client):

- At most one report per target per ``interval`` (1 s) from one instance; the others are
  counted (``suppressed``) and dropped.
- Building a report never raises for what the caller passes (an unknown kind becomes
  ``other``; the error text is redacted and cut); only an invalid target name or a
  non-string kind from code calling ``report_failure`` itself is a usage error.
- Sending never blocks or fails the caller: the publish runs in its own task, and a
  failure to send (no bus) is counted (``unsent``), never raised.
- Thread-safe: the sync client builds reports in the caller's thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import Final

from healthbus.protocol import (
    ERROR_KINDS,
    MAX_REPORT_ERROR,
    ErrorKind,
    FailureReport,
    is_valid_target,
    redact,
    validate_target,
)
from healthbus.protocol.clock import Clock, require_clock

log = logging.getLogger("healthbus.subscribers")

#: One report per target per this many seconds from one instance.
REPORT_INTERVAL: Final = 1.0

#: Targets whose last report time is remembered before the oldest are forgotten.
MAX_TRACKED_TARGETS: Final = 4096

# The adapters' own kinds of connection failure, as the wire's error kinds.
_KIND_ALIASES: Final[dict[str, ErrorKind]] = {
    "pool_timeout": "timeout",
    "connect_timeout": "timeout",
    "connection": "other",
    "disconnected": "other",
    "shutdown": "unhealthy",
    "starting_up": "unhealthy",
    "too_many_connections": "unhealthy",
    "loading": "unhealthy",
    "master_down": "unhealthy",
    "read_only": "unhealthy",
    "out_of_memory": "unhealthy",
    "unavailable": "unhealthy",
    "no_database": "other",
}


def report_kind(kind: str) -> ErrorKind:
    """``kind`` as a wire error kind: itself if it is one, else its alias, else ``other``."""
    if kind in ERROR_KINDS:
        return kind
    return _KIND_ALIASES.get(kind, "other")


def default_instance(name: str) -> str:
    """``<name>@<host>:<pid>``, cut to 128 characters (the pid is read now: a forked child differs)."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}"[:128]


def error_text(error: BaseException | str | None, secrets: Iterable[str] = ()) -> str | None:
    """The first line of ``error``, with its type name, redacted and cut to the wire limit."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        first = str(error).splitlines()[0] if str(error) else ""
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    else:
        text = str(error)
    return redact(text, secrets)[:MAX_REPORT_ERROR]


class FailureReporter:
    """Builds rate-limited :class:`FailureReport` messages for one instance (module rules)."""

    def __init__(
        self,
        name: str,
        *,
        enabled: bool = True,
        instance: str | None = None,
        interval: float = REPORT_INTERVAL,
        secrets: Iterable[str] = (),
        clock: Clock | None = None,
    ) -> None:
        if instance is not None and not 1 <= len(instance) <= 128:
            raise ValueError(f"invalid report instance id: expected 1-128 characters, got {len(instance)}")
        self.enabled = enabled
        """Switch: False sends no report at all (``report_failures=False`` on the client)."""
        self._name = name
        self._instance = instance
        self.interval = interval
        self._secrets = list(secrets)
        self._clock = require_clock(clock, "FailureReporter(clock=...)")
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.built = 0
        """Reports built to be sent."""
        self.suppressed = 0
        """Reports dropped by the one-per-target-per-second limit."""
        self.unsent = 0
        """Reports that could not be sent (no bus, or the publish failed)."""

    @property
    def instance(self) -> str:
        """The id this instance reports under."""
        return self._instance or default_instance(self._name)

    def build(self, target: str, kind: str, error: BaseException | str | None) -> FailureReport | None:
        """The report to send now, or None (switched off, or rate-limited).

        An invalid target name raises ValueError (a usage error of the caller).
        """
        validate_target(target)
        if not isinstance(kind, str):
            raise TypeError(f"report kind must be a str, got {type(kind).__name__}")
        if not self.enabled:
            return None
        now = self._clock.monotonic()
        with self._lock:
            last = self._last.get(target)
            if last is not None and now - last < self.interval:
                self.suppressed += 1
                return None
            if last is None and len(self._last) >= MAX_TRACKED_TARGETS:
                self._last.pop(next(iter(self._last)))
            self._last[target] = now
            self.built += 1
        return FailureReport(
            target=target,
            instance=self.instance,
            kind=report_kind(kind),
            at=self._clock.now(),
            error=error_text(error, self._secrets),
        )


def report_quietly(health: object, target: str, kind: str, error: BaseException | str | None) -> None:
    """Tell ``health`` about a failure an adapter saw, if it takes reports; never raises.

    Adapters call this on a connection-level error: a health client without
    ``report_failure`` (a custom :class:`~healthbus.subscribers.HealthView`) gets none,
    and nothing the reporting does can fail the adapter's call.
    """
    report = getattr(health, "report_failure", None)
    if report is None or not is_valid_target(target):
        return
    try:
        report(target, kind, error)
    except Exception as exc:  # never fail the caller over a report
        log.debug("healthbus: failure report for %s not sent: %s", target, type(exc).__name__)
