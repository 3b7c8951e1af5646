"""What every checker is and returns.

Invariants:

* ``Checker.check()`` never raises for a dependency problem: every driver error becomes a
  ``CheckResult`` with ``outcome="fail"``, an ``error_kind`` and a short ``error``. Only
  cancellation (the worker's hard timeout, shutdown) propagates.
* Every ``error`` text has been passed through :func:`healthbus.protocol.redact` with the
  target's secrets (URL password, secret options), so no credential leaves a checker.
* ``error_kind`` is set exactly when ``outcome == "fail"``; a ``warn`` explains itself in
  ``error`` and ``details``.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

import msgspec

from healthbus.protocol import DetailValue, ErrorKind, Outcome, TargetConfig, redact, url_secrets

#: Longest ``error`` text a checker produces; driver messages can be pages long.
MAX_ERROR_CHARS: Final = 300

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


class BaseChecker:
    """Shared plumbing: options, secrets, and turning exceptions into failed results.

    Subclasses implement ``_check()`` (may raise driver errors) and ``_classify(exc)``.
    """

    kind: str = "?"

    def __init__(self, target: TargetConfig) -> None:
        self.target = target
        self.secrets = target_secrets(target)

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

    def warn(self, text: str, details: dict[str, DetailValue] | None = None) -> CheckResult:
        """A warn result (reachable but impaired)."""
        return CheckResult(outcome="warn", error=short(text, self.secrets), details=details or {})

    async def check(self) -> CheckResult:
        """Run ``_check()``; any driver error becomes a classified, redacted failure."""
        try:
            return await self._check()
        except Exception as exc:
            kind, text = self._classify(exc)
            await self._after_error(exc)
            return self.fail(kind, text)

    async def _check(self) -> CheckResult:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        from healthbus.probes._classify import classify_generic

        return classify_generic(exc)

    async def _after_error(self, exc: BaseException) -> None:
        """Hook: drop a broken connection so the next check starts afresh."""

    async def close(self) -> None:
        """Release the client. Idempotent."""
