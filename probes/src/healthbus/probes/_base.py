"""What every checker is and returns.

Invariants:

* ``Checker.check()`` never raises for a dependency problem: every driver error becomes a
  ``CheckResult`` with ``outcome="fail"``, an ``error_kind`` and a short ``error``. Only
  cancellation (the worker's hard timeout, shutdown) propagates.
* Every ``error`` text has been passed through :func:`healthbus.protocol.redact` with the
  target's secrets (URL password, secret options), so no credential leaves a checker.
* ``error_kind`` is set when ``outcome == "fail"``, and on a ``warn`` only as
  ``no_new_connections`` (the server serves its existing sessions but refuses new ones);
  any other ``warn`` explains itself in ``error`` and ``details``.
* A checker of a kind that keeps sessions on the server (:attr:`BaseChecker.holds_connections`)
  checks the way a new client connects: by default each check opens a fresh connection and
  closes it before returning, so the probe never holds an idle session (one would keep
  ``pg_ctl stop -m smart`` waiting) and a server refusing new connections is seen at once.
  Option ``reuse_connection = true`` keeps one between checks instead, but makes a fresh
  connect at least every ``fresh_connect_every`` checks (default 10), dropping the kept one
  first, so refusals are still seen and a shutdown is held at most that long.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeAlias, runtime_checkable

import msgspec

from healthbus.protocol import DetailValue, ErrorKind, Outcome, TargetConfig, redact, url_secrets

#: Longest ``error`` text a checker produces; driver messages can be pages long.
MAX_ERROR_CHARS: Final = 300

#: Closes a connection (or client) a checker no longer keeps.
Closer: TypeAlias = Callable[[], Awaitable[None]]

#: Default of option ``fresh_connect_every``: with ``reuse_connection``, a fresh connect at
#: least every this many checks.
FRESH_CONNECT_EVERY: Final = 10

#: Option keys whose values are secrets wherever they appear (http headers are added too).
SECRET_OPTION_KEYS: Final = frozenset({"password", "token", "api_key", "apikey", "secret"})


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one check, before the worker adds target, probe id, latency and time."""

    outcome: Outcome
    error_kind: ErrorKind | None = None
    error: str | None = None
    details: dict[str, DetailValue] = msgspec.field(default_factory=dict)


class DriverMissing(ImportError):
    """A checker's driver is not installed; the text names the extra to install."""


@runtime_checkable
class Checker(Protocol):
    """One dependency kind's health check, holding its client between checks."""

    target: TargetConfig

    async def check(self) -> CheckResult:
        """Check the dependency once. Never raises for a dependency problem."""
        ...

    async def close(self) -> None:
        """Release the client/connection. Idempotent."""
        ...


def target_secrets(target: TargetConfig) -> list[str]:
    """Every secret a target's messages might contain: URL password and secret options."""
    secrets = list(url_secrets(target.url))
    for key, value in target.options.items():
        lowered = key.lower()
        if isinstance(value, str) and value and (lowered in SECRET_OPTION_KEYS or lowered.startswith("header:")):
            secrets.append(value)
    # Longest first, so a secret containing another is masked whole.
    return sorted(set(secrets), key=len, reverse=True)


def short(text: str, secrets: list[str]) -> str:
    """``text`` redacted, on one line, cut to :data:`MAX_ERROR_CHARS`."""
    clean = " ".join(redact(text, secrets).split())
    if len(clean) > MAX_ERROR_CHARS:
        clean = clean[: MAX_ERROR_CHARS - 1] + "…"
    return clean


def driver_missing(kind: str, package: str, extra: str, exc: ImportError) -> DriverMissing:
    """The error for a checker whose driver ``package`` is missing, naming the extra to install."""
    return DriverMissing(f"the {kind} checker needs {package}: pip install 'healthbus-probes[{extra}]' ({exc})")


def closing_quietly(close: Callable[[], Awaitable[object]]) -> Closer:
    """A :data:`Closer` that awaits ``close()`` and ignores its errors: the connection is
    being forgotten, and its close failing changes nothing for the next check."""

    async def closer() -> None:
        with contextlib.suppress(Exception):
            await close()

    return closer


class BaseChecker:
    """Shared plumbing: options, secrets, and turning exceptions into failed results.

    Subclasses implement ``_check()`` (may raise driver errors) and ``_classify(exc)``;
    those that keep a connection set :attr:`holds_connections` and implement
    ``_release()``.
    """

    kind: str = "?"
    #: The kind keeps a connection (session) on the server between checks unless released:
    #: options ``reuse_connection`` and ``fresh_connect_every`` apply (module docstring).
    holds_connections: bool = False

    def __init__(self, target: TargetConfig) -> None:
        self.target = target
        self.secrets = target_secrets(target)
        self.admitted = False  # a check got through since start: a later auth failure is a change
        self.reuse = self.holds_connections and self.opt_bool("reuse_connection", False)
        self.fresh_every = self.opt_int("fresh_connect_every", FRESH_CONNECT_EVERY)
        if self.fresh_every < 1:
            raise ValueError(f"target {target.name}: options.fresh_connect_every must be at least 1")
        self._uses = 0  # checks over the kept connection since it was last released

    # -- options ------------------------------------------------------------------
    def opt_str(self, key: str, default: str | None = None) -> str | None:
        """A string option, or ``default``."""
        value = self.target.options.get(key, default)
        return None if value is None else str(value)

    def opt_bool(self, key: str, default: bool) -> bool:
        """A boolean option, or ``default``."""
        value = self.target.options.get(key, default)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def opt_float(self, key: str, default: float) -> float:
        """A number option (seconds or count), or ``default``."""
        value = self.target.options.get(key, default)
        if isinstance(value, bool):
            return float(default)
        if isinstance(value, str):
            from healthbus.protocol import parse_duration

            return parse_duration(value)
        return float(value)

    def opt_int(self, key: str, default: int) -> int:
        """An integer option, or ``default``."""
        value = self.target.options.get(key, default)
        if isinstance(value, bool):
            return default
        return int(value)

    # -- results ------------------------------------------------------------------
    def fail(self, kind: ErrorKind, text: str, details: dict[str, DetailValue] | None = None) -> CheckResult:
        """A failed result with redacted, shortened ``text``."""
        return CheckResult(outcome="fail", error_kind=kind, error=short(text, self.secrets), details=details or {})

    def warn(
        self, text: str, details: dict[str, DetailValue] | None = None, *, kind: ErrorKind | None = None
    ) -> CheckResult:
        """A warn result (reachable but impaired); ``kind`` only ``no_new_connections``."""
        return CheckResult(outcome="warn", error_kind=kind, error=short(text, self.secrets), details=details or {})

    async def check(self) -> CheckResult:
        """Run ``_check()``; any driver error becomes a classified, redacted result.

        ``no_new_connections`` is a ``warn``; every other kind a ``fail``. With a
        connection policy (:attr:`holds_connections`) the connection is released after
        the check, or, reused, renewed every ``fresh_connect_every`` checks (the new one
        connected before the old one is closed).
        """
        from healthbus.probes._classify import admission_kind, login_rejected

        renewed: Closer | None = None
        if self.holds_connections and self.reuse and self._uses >= self.fresh_every:
            # Connect afresh while still holding the kept session: the new connection
            # competes for a slot like any new client; the old one is closed afterwards.
            renewed, self._uses = self._detach(), 0
        self._uses += 1
        try:
            result = await self._check()
        except Exception as exc:
            kind, text = self._classify(exc)
            await self._after_error(exc)
            # A login rejected after this checker was let in before: new sessions are refused
            # while the existing ones (the applications' warm pools) keep working.
            kind, text = admission_kind(kind, text, admitted=self.admitted and login_rejected(exc))
            if kind == "no_new_connections":
                return self.warn(text, kind=kind)
            return self.fail(kind, text)
        finally:
            if renewed is not None:
                await renewed()
            if self.holds_connections and not self.reuse:
                await self._release()
        if result.outcome != "fail":
            self.admitted = True
        return result

    async def _release(self) -> None:
        """Close the connection, so the server holds no session of this checker until the
        next check connects afresh."""
        closer = self._detach()
        if closer is not None:
            await closer()

    def _detach(self) -> Closer | None:
        """Hook (with :attr:`holds_connections`): forget the kept connection or client, so
        the next check connects afresh; return what closes the forgotten one (None when
        nothing is kept)."""
        return None

    async def _check(self) -> CheckResult:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        from healthbus.probes._classify import classify_generic

        return classify_generic(exc)

    async def _after_error(self, exc: BaseException) -> None:
        """Hook: drop a broken connection so the next check starts afresh."""

    async def close(self) -> None:
        """Release the client. Idempotent."""
