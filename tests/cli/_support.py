"""Helpers of the CLI tests: a story of StateChanged events, running the real command, waiting.

Building and publishing the events themselves is :mod:`tests.helpers`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from healthbus.protocol import BreakerState, Evidence, State, StateChanged, utcnow
from tests.helpers import healthbus_bin, state_changed

__all__ = ["CliResult", "event", "run_cli", "story"]


def event(
    target: str,
    seq: int,
    state: State,
    at: datetime,
    *,
    previous: State = "unknown",
    breaker: BreakerState = "closed",
    reason: str = "test",
    retry_at: datetime | None = None,
    features: Sequence[str] = (),
) -> StateChanged:
    """A StateChanged with the given essentials and plausible evidence (one worker's last check)."""
    failed = state != "healthy"
    evidence = Evidence(outcome="fail" if failed else "pass", error_kind="refused" if failed else None, at=at)
    return state_changed(
        target,
        seq,
        state,
        at=at,
        previous=previous,
        breaker=breaker,
        reason=reason,
        retry_at=retry_at,
        features=features,
        evidence={"w1": evidence},
    )


def story(base: datetime | None = None) -> list[StateChanged]:
    """Two targets over three minutes: ``cache`` goes down at +60s and is back at +120s."""
    t0 = (base or utcnow()) - timedelta(minutes=10)
    return [
        event("cache", 1, "healthy", t0, features=["cache"]),
        event("db", 1, "healthy", t0 + timedelta(seconds=1)),
        event(
            "cache",
            2,
            "unavailable",
            t0 + timedelta(seconds=60),
            previous="healthy",
            breaker="open",
            reason="2/2 probes failed: refused",
            retry_at=t0 + timedelta(seconds=62),
            features=["cache"],
        ),
        event(
            "cache",
            3,
            "recovering",
            t0 + timedelta(seconds=118),
            previous="unavailable",
            breaker="half_open",
            features=["cache"],
        ),
        event("cache", 4, "healthy", t0 + timedelta(seconds=120), previous="recovering", features=["cache"]),
    ]


@dataclass
class CliResult:
    """What a finished ``healthbus`` run printed and returned."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """stdout split into lines."""
        return self.out.splitlines()


async def run_cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> CliResult:
    """Run ``healthbus ARGS`` to completion (killed after ``timeout``) and capture its output."""
    environ = {**os.environ, "NO_COLOR": "1", **(env or {})}
    environ.pop("HEALTHBUS_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        healthbus_bin(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())
