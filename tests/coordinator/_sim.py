"""A tiny driver for the pure core: explicit time, no sleeping, every event kept."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from healthbus.coordinator._core import Decider, Now
from healthbus.protocol import (
    BackoffSettings,
    Duration,
    ErrorKind,
    FlapSettings,
    Outcome,
    ProbeResult,
    RampSettings,
    StateChanged,
    TargetConfig,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(t: float) -> Now:
    """The instant ``t`` seconds after the test epoch, on both clocks."""
    return Now(t, T0 + timedelta(seconds=t))


def target(name: str = "db", **overrides: Any) -> TargetConfig:
    """A TargetConfig with test-friendly defaults (no jitter, no flap detection, trials
    every 0.5 s, a 1 s ramp)."""
    backoff = overrides.pop("backoff", None) or BackoffSettings(
        base=Duration(1.0), multiplier=2.0, max=Duration(60.0), jitter="none"
    )
    flap = overrides.pop("flap", None) or FlapSettings(enabled=False)
    fields: dict[str, Any] = {
        "name": name,
        "kind": "tcp",
        "url": "tcp://127.0.0.1:1",
        "interval": Duration(5.0),
        "failure_threshold": 3,
        "success_threshold": 2,
        "stale_after": Duration(15.0),
        "features": ["cache"],
        "backoff": backoff,
        "flap": flap,
        # Fixed here (not the shipped defaults), so the tests' times stay readable.
        "trial_interval": Duration(0.5),
        "ramp": RampSettings(duration=Duration(1.0)),
    }
    fields.update(overrides)
    return TargetConfig(**fields)


def result(
    t: float,
    outcome: Outcome = "pass",
    probe: str = "p1",
    name: str = "db",
    kind: ErrorKind | None = None,
) -> ProbeResult:
    """A ProbeResult observed at time ``t``."""
    if outcome == "fail" and kind is None:
        kind = "refused"
    return ProbeResult(
        target=name,
        probe=probe,
        outcome=outcome,
        latency_ms=1.0,
        observed_at=T0 + timedelta(seconds=t),
        error_kind=kind,
    )


class Sim:
    """A Decider plus a clock that only moves when told to."""

    def __init__(
        self,
        *targets: TargetConfig,
        seed: int = 0,
        start: float = 0.0,
        refresh_after: float | None = None,
        decider: Callable[..., Any] = Decider,
    ) -> None:
        """``decider`` builds the core to drive (the reference decider drives like one)."""
        self.t = start
        extra = {} if refresh_after is None else {"refresh_after": refresh_after}
        self.decider: Decider = decider(targets or (target(),), rng=random.Random(seed), now=at(start), **extra)
        self.events: list[StateChanged] = []

    def feed(
        self, outcome: Outcome = "pass", probe: str = "p1", name: str = "db", dt: float = 1.0
    ) -> list[StateChanged]:
        """Advance ``dt``, run due timers, then deliver one result."""
        ticked = self.advance(dt)
        out = self.decider.on_result(result(self.t, outcome, probe, name), at(self.t))
        self._keep(out)
        return ticked + out

    def advance(self, dt: float) -> list[StateChanged]:
        """Move time forward and run the timers that became due."""
        self.t += dt
        out = self.decider.tick(at(self.t))
        self._keep(out)
        return out

    def control(self, action: str, name: str = "db", reason: str = "test") -> list[StateChanged]:
        """Apply an operator command now."""
        out = self.decider.control(action, name, reason, at(self.t))  # type: ignore[arg-type]
        self._keep(out)
        return out

    def control_for(self, action: str, duration: float, name: str = "db", reason: str = "test") -> list[StateChanged]:
        """Apply an operator command with a duration (seconds) now."""
        out = self.decider.control(action, name, reason, at(self.t), duration=duration)  # type: ignore[arg-type]
        self._keep(out)
        return out

    def report(
        self, instance: str, name: str = "db", kind: str = "refused", dt: float = 0.0, seen: float | None = None
    ) -> list[StateChanged]:
        """Advance ``dt``, run due timers, then take a failure report from ``instance``
        (seen by it at ``seen``, default now)."""
        ticked = self.advance(dt)
        when = T0 + timedelta(seconds=self.t if seen is None else seen)
        out = self.decider.on_report(name, instance, kind, when, at(self.t))
        self._keep(out)
        return ticked + out

    def reload(self, *targets: TargetConfig) -> list[StateChanged]:
        """Reconfigure the decider with ``targets`` now (a live reload)."""
        out = self.decider.reconfigure(targets, at(self.t))
        self._keep(out)
        return out

    def _keep(self, out: list[StateChanged]) -> None:
        self.events.extend(out)

    def states(self, name: str = "db") -> list[str]:
        """The announced states of ``name``, in order."""
        return [e.state for e in self.events if e.target == name]

    def last(self, name: str = "db") -> StateChanged:
        """The last event announced for ``name``."""
        return [e for e in self.events if e.target == name][-1]
