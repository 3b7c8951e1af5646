"""Groups on the coordinator: member states and latencies in, GroupChanged out.

The decision (is a GroupChanged due, and what does it say) is the pure
:func:`._core.group_event`; this module keeps its inputs and publishes its output:

* Member states come from the StateChanged the coordinator emits (and, on a takeover,
  from the stream's last events); latencies from the ProbeResults it decides.
* Each GroupChanged is the whole picture of its group, so publishing is latest-wins: per
  group only the newest message waits, and one that replaces a message never tried keeps
  its ``seq`` (:func:`._core.supersede`: the wire counts +1 per message, no gaps); it is
  sent with ``Nats-Msg-Id: group:<name>:<seq>`` until JetStream acks it (retried with
  backoff while NATS or the stream is away), and nothing is sent while ``may_send()`` says
  no (the leader lease is not valid).
* ``stop()`` ends the publisher even when the cancel is lost: on Python 3.11 nats-py's
  ``asyncio.wait_for`` around the ack returns the ack, swallowing a cancel that arrives in
  the same loop turn as the ack, so the loop also checks a ``_closed`` flag (as the outbox does).
* A takeover reads every group's last message from the stream first, so ``seq`` goes on
  and an unchanged group is not announced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Final

from nats.aio.client import Client

from healthbus.bus import StateStream
from healthbus.coordinator._core import Latencies, group_event, supersede
from healthbus.protocol import (
    GroupChanged,
    GroupConfig,
    ProbeResult,
    State,
    StateChanged,
    Subjects,
    encode,
)
from healthbus.protocol.clock import Clock

log = logging.getLogger("healthbus.coordinator")

MIN_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 0.5


class Groups:
    """Group state of every ``[[groups]]`` entry, published as GroupChanged."""

    def __init__(
        self,
        groups: Iterable[GroupConfig],
        nc: Client,
        subjects: Subjects,
        stream: str,
        clock: Clock,
        *,
        timeout: float = 1.0,
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.stream = stream
        self.clock = clock
        self.timeout = timeout
        self._may_send = may_send
        self.published = 0
        self.latencies = Latencies(())
        self.configure(groups)
        self.last: dict[str, GroupChanged] = {}
        self._last_mono: dict[str, float] = {}
        self.states: dict[str, State] = {}
        self._pending: dict[str, GroupChanged] = {}
        self._tried: dict[str, int] = {}  # per group the highest seq the publisher sent at least once
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def configure(self, groups: Iterable[GroupConfig]) -> None:
        """Follow these groups from now on (a reload)."""
        self.groups = {g.name: g for g in groups}
        self.of_member: dict[str, list[GroupConfig]] = {}
        for g in self.groups.values():
            for member in g.members:
                self.of_member.setdefault(member, []).append(g)
        old = self.latencies.ms
        self.latencies = Latencies(self.of_member)
        self.latencies.ms.update({k: v for k, v in old.items() if k in self.of_member})

    # ------------------------------------------------------------ inputs

    def observe(self, result: ProbeResult) -> None:
        """A decided ProbeResult: its latency counts for the member's groups."""
        if self.latencies.observe(result):
            self._evaluate(self.of_member[result.target])

    def on_events(self, events: Iterable[StateChanged]) -> None:
        """StateChanged emitted (or restored): members' states for their groups."""
        touched: dict[str, GroupConfig] = {}
        for event in events:
            groups = self.of_member.get(event.target)
            if not groups:
                continue
            self.states[event.target] = "unknown" if event.retired else event.state
            for g in groups:
                touched[g.name] = g
        self._evaluate(touched.values())

    def evaluate_all(self) -> None:
        """Re-evaluate every group (after a takeover or a reload)."""
        self._evaluate(self.groups.values())

    def _evaluate(self, groups: Iterable[GroupConfig]) -> None:
        if not self.groups:
            return
        wall = self.clock.now()
        mono = self.clock.monotonic()
        for g in groups:
            event = group_event(
                g,
                self.states,
                self.latencies.ms,
                self.last.get(g.name),
                wall,
                mono=mono,
                last_mono=self._last_mono.get(g.name),
            )
            if event is None:
                continue
            unsent = self._pending.get(g.name)
            if unsent is not None and unsent.seq > self._tried.get(g.name, 0):
                event = supersede(event, unsent)
            self.last[g.name] = event
            self._last_mono[g.name] = mono
            self._pending[g.name] = event
            log.info("group %s #%d: %s → %s: %s", g.name, event.seq, event.previous, event.state, event.reason)
            self._wake.set()

    # ------------------------------------------------------------ life cycle

    async def restore(self, timeout: float) -> None:
        """Read every group's last GroupChanged from the stream (seq goes on from there)."""
        self.last.clear()
        self._last_mono.clear()
        self._pending.clear()
        self._tried.clear()
        if not self.groups:
            return
        reader = StateStream(self.nc, self.subjects.prefix, stream=self.stream)
        for event in await reader.groups(timeout=timeout):
            self.last[event.group] = event

    def restore_states(self, events: Iterable[StateChanged]) -> None:
        """The members' states as the stream's last events say (a takeover)."""
        self.states.clear()
        for event in events:
            if event.target in self.of_member:
                self.states[event.target] = "unknown" if event.retired else event.state

    def start(self) -> None:
        """Start publishing."""
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run(), name="healthbus-coordinator-groups")

    async def stop(self) -> None:
        """Stop publishing (what is pending is dropped: the next leader decides afresh)."""
        task, self._task = self._task, None
        if task is not None:
            # The flag, not only the cancel: a cancel racing the publish's ack is swallowed
            # by nats-py's wait_for on Python 3.11, and the loop would then wait forever.
            self._closed = True
            self._wake.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        while not self._closed:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._may_send() or not self.nc.is_connected:
                await self.clock.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            name = next(iter(self._pending))
            event = self._pending[name]
            self._tried[name] = event.seq
            try:
                await self.nc.jetstream().publish(
                    self.subjects.group(name),
                    encode(event),
                    timeout=self.timeout,
                    headers={"Nats-Msg-Id": event.msg_id},
                )
            except Exception as exc:  # NATS away, no stream, a timeout: try again
                log.warning("group %s #%d not stored yet: %s", name, event.seq, str(exc) or type(exc).__name__)
                await self.clock.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = MIN_BACKOFF
            self.published += 1
            if self._pending.get(name) is event:
                del self._pending[name]

    @property
    def pending(self) -> int:
        """Groups whose newest GroupChanged is not stored yet."""
        return len(self._pending)
