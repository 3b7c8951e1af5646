"""Builders and bus helpers shared by the tests of every area.

The wire messages a test feeds in (a probe worker's ProbeResult, a coordinator's
StateChanged) are built here, so every test speaks the same plausible dialect, and are
published here the way the real components publish them (a StateChanged with its
``Nats-Msg-Id``, so the stream de-duplicates it like the coordinator's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from nats.aio.client import Client
from nats.js import JetStreamContext

from healthbus.bus.embedded import find_binary
from healthbus.protocol import (
    Outcome,
    ProbeResult,
    State,
    StateChanged,
    StreamSettings,
    Subjects,
    encode,
    utcnow,
)
from healthbus.subscribers import ensure_stream
from healthbus.subscribers.testing import state_changed

__all__ = [
    "healthbus_bin",
    "holds_within",
    "open_event",
    "probe_result",
    "publish_probe",
    "publish_states",
    "state_changed",
    "wait_until",
]


def healthbus_bin() -> str:
    """The installed ``healthbus`` command of this environment."""
    found = find_binary("healthbus")
    if found is None:
        raise RuntimeError("the healthbus command is not installed in this environment")
    return found


def open_event(
    target: str, seq: int, *, retry_in: float, at: datetime | None = None, previous: State = "healthy"
) -> StateChanged:
    """``target`` just went unavailable (breaker open, three refused checks); retry in ``retry_in`` s."""
    return state_changed(
        target,
        seq,
        "unavailable",
        at=at,
        previous=previous,
        reason="3/3 probes failed: refused",
        failures=3,
        attempt=1,
        retry_in=retry_in,
    )


def probe_result(
    target: str,
    outcome: Outcome = "pass",
    *,
    probe: str = "p1",
    at: datetime | None = None,
    latency_ms: float = 1.0,
) -> ProbeResult:
    """A ProbeResult as a probe worker would publish it; a failure is a refused connection."""
    failed = outcome == "fail"
    return ProbeResult(
        target=target,
        probe=probe,
        outcome=outcome,
        latency_ms=latency_ms,
        observed_at=at or utcnow(),
        error_kind="refused" if failed else None,
        error="connection refused" if failed else None,
    )


async def publish_probe(nc: Client, prefix: str, result: ProbeResult) -> None:
    """Publish ``result`` on ``<prefix>.probe.<target>.<probe>`` and flush, as a probe worker does."""
    await nc.publish(Subjects(prefix).probe(result.target, result.probe), encode(result))
    await nc.flush()


async def publish_states(
    js: JetStreamContext, prefix: str, events: Sequence[StateChanged], *, ensure: bool = True
) -> None:
    """Publish ``events`` to the state stream of ``prefix`` as the coordinator does (with
    ``Nats-Msg-Id``); with ``ensure`` the stream is created (or updated) first."""
    if ensure:
        await ensure_stream(js, StreamSettings.for_prefix(prefix))
    subjects = Subjects(prefix)
    for event in events:
        await js.publish(subjects.state(event.target), encode(event), headers={"Nats-Msg-Id": event.msg_id})


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Re-check ``condition`` every 50 ms until it holds; AssertionError naming ``what`` after ``timeout``.

    For conditions on other processes (a page, a server, a consumer) that offer no event to
    wait on; the wait is bounded and ends as soon as the condition holds.
    """
    if not await holds_within(condition, timeout):
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def holds_within(condition: Callable[[], Awaitable[bool] | bool], timeout: float) -> bool:
    """Whether ``condition`` comes to hold within ``timeout`` (re-checked every 50 ms); never raises.

    For pacing a driver that must go on either way (e.g. while a fault loses messages);
    use :func:`wait_until` where not holding is a failure.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
