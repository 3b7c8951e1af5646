"""Adapters between the benchmarks and the healthbus components they measure.

The suites talk to the coordinator, the probe workers and the subscriber library only
through this module, so an API detail lives in one place. ``require_*`` raise
:class:`SuiteUnavailable` with a clear sentence when a component is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from nats.aio.client import Client

from healthbus.bench._framework import SuiteUnavailable

__all__ = ["RunningCoordinator", "require_coordinator"]


def _attr(module: str, name: str, what: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SuiteUnavailable(f"{what} is not installed ({module}: {exc})") from None
    value = getattr(mod, name, None)
    if value is None:
        raise SuiteUnavailable(f"{what} is not built yet ({module}.{name} is missing)")
    return value


def require_coordinator() -> None:
    """Raise SuiteUnavailable unless the coordinator service can be imported."""
    _attr("healthbus.coordinator", "CoordinatorService", "the coordinator service")


class RunningCoordinator:
    """A started coordinator service and read access to its counters."""

    def __init__(self, service: Any) -> None:
        self.service = service

    @classmethod
    async def start(cls, config_text: str, nc: Client) -> RunningCoordinator:
        """Start a coordinator for ``config_text`` on connection ``nc``."""
        from healthbus.protocol import load_config_text

        service_cls = _attr("healthbus.coordinator", "CoordinatorService", "the coordinator service")
        config = load_config_text(config_text, source="<bench>")
        service = service_cls(config, nc)
        await service.start()
        return cls(service)

    def counters(self) -> dict[str, int]:
        """The service's counters (names as the service reports them)."""
        raw = getattr(self.service, "counters", {})
        return dict(raw() if callable(raw) else raw)

    def decided(self) -> int:
        """ProbeResults taken in and decided so far (dropped ones included)."""
        c = self.counters()
        return int(c.get("results", 0))

    def transitions(self) -> int:
        """StateChanged events emitted so far."""
        return int(self.counters().get("transitions", 0))

    async def stop(self) -> None:
        """Stop the service."""
        await self.service.stop()
