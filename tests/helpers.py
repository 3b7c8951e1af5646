"""Builders and bus helpers shared by the tests of every area.

The wire messages a test feeds in (a probe worker's ProbeResult, a coordinator's
StateChanged) are built here, so every test speaks the same plausible dialect, and are
published here the way the real components publish them (a StateChanged with its
``Nats-Msg-Id``, so the stream de-duplicates it like the coordinator's).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext

from healthbus.bus import ensure_stream
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
from healthbus.subscribers import BusStatus, HealthClient
from healthbus.subscribers.testing import state_changed

__all__ = [
    "Recorder",
    "healthbus_bin",
    "holds_within",
    "open_event",
    "probe_result",
    "publish_probe",
    "publish_states",
    "state_changed",
    "wait_bus",
    "wait_event",
    "wait_until",
    "wait_view",
]

T = TypeVar("T")


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


async def wait_until(
    condition: Callable[[], Awaitable[bool] | bool],
    timeout: float,
    what: str,
    seen: Callable[[], object] | None = None,
) -> None:
    """Re-check ``condition`` every 50 ms until it holds; AssertionError naming ``what`` after ``timeout``.

    For conditions on other processes (a page, a server, a consumer) that offer no event to
    wait on; the wait is bounded and ends as soon as the condition holds. ``seen`` tells
    what was there instead: its value goes into the failure message. Where the code under
    test has an event (a callback, a future), wait on it instead: :func:`wait_event`,
    :func:`wait_bus`, :class:`Recorder`, ``HealthClient.wait_for``.
    """
    if not await holds_within(condition, timeout):
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{_seen(seen)}")


def _seen(seen: Callable[[], object] | None) -> str:
    return "" if seen is None else f"; seen: {seen()!r}"


async def wait_event(event: asyncio.Event, timeout: float, what: str, seen: Callable[[], object] | None = None) -> None:
    """Until ``event`` is set; AssertionError naming ``what`` (and ``seen()``) after ``timeout``."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{_seen(seen)}") from None


async def wait_bus(
    health: HealthClient, condition: Callable[[BusStatus], bool], timeout: float, what: str
) -> BusStatus:
    """Until the client's bus status meets ``condition``: checked now and on every ``on_bus_change``.

    The status a client tells its ``on_bus_change`` callbacks is the event a service
    reacts to; failing, the message has every status told meanwhile.
    """
    told: list[BusStatus] = []
    met = asyncio.Event()

    def check(status: BusStatus) -> None:
        told.append(status)
        if condition(status):
            met.set()

    unsubscribe = health.on_bus_change(check)
    try:
        check(health.bus)
        await wait_event(met, timeout, what, lambda: told)
    finally:
        unsubscribe()
    return next(status for status in reversed(told) if condition(status))


async def wait_view(
    health: HealthClient,
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    seen: Callable[[], object] | None = None,
) -> None:
    """Until ``condition()`` (on the client's view: ``is_available``, ``state``) holds: checked now
    and after every state event the client tells ``on_change`` (re-announcements too).

    For a condition a state event makes true (a target going out, a bus-free view of a state)
    where ``HealthClient.wait_for`` does not say it; failing, the message has every event
    told meanwhile (or ``seen()``).
    """
    told: list[str] = []
    met = asyncio.Event()

    def check(event: StateChanged | None = None) -> None:
        if event is not None:
            told.append(f"{event.target} #{event.seq} {event.state}")
        if condition():
            met.set()

    unsubscribe = health.on_change(check, refreshes=True)
    try:
        check()
        await wait_event(met, timeout, what, seen if seen is not None else lambda: told)
    finally:
        unsubscribe()


class Recorder(Generic[T]):
    """A list a callback appends to (``health.on_change(recorder.append)``), with waiting on its contents.

    ``await recorder.wait(lambda items: len(items) >= 3, 10, "three events")`` returns as
    soon as an append makes the condition hold (no polling) and fails naming what was
    recorded.
    """

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def append(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    async def wait(
        self, condition: Callable[[list[T]], bool], timeout: float, what: str, seen: Callable[[], object] | None = None
    ) -> None:
        """Until ``condition(items)`` holds; AssertionError naming ``what`` and the items (or ``seen()``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self.items):
            self._changed.clear()
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                shown = seen() if seen is not None else self.items
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; seen: {shown!r}") from None


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


def freeze(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP process ``pid`` and return once every thread of it is stopped (Linux).

    ``kill`` returns before the threads stop: on a busy machine the thread picked to take
    the signal may wait for a CPU, while another thread woken by I/O meanwhile (a PING
    arriving) still answers it. Resume with ``os.kill(pid, signal.SIGCONT)``.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    states.append(stat.read().rpartition(")")[2].split()[0])
            except FileNotFoundError:
                continue  # a thread that just ended
        if states and all(state in "tT" for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} not stopped within {timeout:g}s after SIGSTOP; thread states {states}")


def record_writes(nc: Client) -> list[list[bytes]]:
    """Every write on ``nc``'s transport from now on, each as its list of commands (the transport
    object survives reconnects, so a reconnect's handshake is recorded too)."""
    transport = nc._transport
    assert transport is not None
    writes: list[list[bytes]] = []
    write, writelines = transport.write, transport.writelines

    def record(data: bytes) -> None:
        writes.append([bytes(data)])
        write(data)

    def record_lines(lines: Iterable[bytes]) -> None:
        lines = list(lines)
        writes.append([bytes(line) for line in lines])
        writelines(lines)

    transport.write, transport.writelines = record, record_lines  # type: ignore[method-assign,assignment]
    return writes
