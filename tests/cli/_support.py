"""Helpers of the CLI tests: build StateChanged events, publish them, run the real command."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.js import JetStreamContext

from healthbus.cli._embedded import find_binary
from healthbus.protocol import Evidence, StateChanged, StreamSettings, Subjects, encode, utcnow
from healthbus.subscribers import ensure_stream

__all__ = ["CliResult", "event", "healthbus_bin", "publish", "run_cli", "story", "wait_until"]


def healthbus_bin() -> str:
    """The installed ``healthbus`` command of this environment."""
    found = find_binary("healthbus")
    if found is None:
        raise RuntimeError("the healthbus command is not installed in this environment")
    return found


def event(
    target: str,
    seq: int,
    state: str,
    at: datetime,
    *,
    previous: str = "unknown",
    breaker: str = "closed",
    reason: str = "test",
    retry_at: datetime | None = None,
    features: Sequence[str] = (),
) -> StateChanged:
    """A StateChanged with the given essentials and plausible evidence."""
    outcome = "pass" if state == "healthy" else "fail"
    return StateChanged(
        target=target,
        seq=seq,
        at=at,
        previous=previous,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        breaker=breaker,  # type: ignore[arg-type]
        reason=reason,
        retry_at=retry_at,
        features=list(features),
        evidence={"w1": Evidence(outcome=outcome, error_kind=None if outcome == "pass" else "refused", at=at)},  # type: ignore[arg-type]
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


async def publish(js: JetStreamContext, prefix: str, events: Sequence[StateChanged]) -> None:
    """Create the prefix's state stream if needed and publish ``events`` as a coordinator would."""
    await ensure_stream(js, StreamSettings.for_prefix(prefix))
    subjects = Subjects(prefix)
    for e in events:
        await js.publish(subjects.state(e.target), encode(e), headers={"Nats-Msg-Id": e.msg_id})


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


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Re-check ``condition`` every 50 ms until it holds; AssertionError naming ``what`` after ``timeout``.

    For conditions on other processes (a page, a server, a consumer) that offer no event to
    wait on; the wait is bounded and ends as soon as the condition holds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)
