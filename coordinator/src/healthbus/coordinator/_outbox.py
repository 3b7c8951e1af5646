"""Publishing StateChanged to JetStream: in order per target, never lost, pipelined.

Invariants:

* An event leaves the outbox only when JetStream acked it (a PubAck, duplicate or not).
* Per target at most one event is in flight, and the next one is sent only after the
  previous one was acked, so a target's events land in seq order and a failed publish
  can never leave a gap behind a later seq.
* Different targets are pipelined (up to ``window`` in flight): publishes go out as
  plain messages with a reply subject on one private inbox, and acks are matched by
  that subject, so a burst of transitions costs no task, future or timer per event.
* Nothing is sent while ``may_send()`` says no (the leader lease is not valid).
* A missing ack (timeout, NATS down, no stream) keeps the event at the head of its
  target's queue; sending resumes after a backoff (50 ms doubling to 0.5 s). Re-sending an
  event that did land is harmless: ``Nats-Msg-Id: <target>:<seq>`` makes JetStream drop
  the repeat within its duplicate window.
* The backoff is on the injected :class:`~healthbus.protocol.clock.Clock` (a test moves it
  with ``ManualClock.advance``); the ack deadline and the wait for a reconnect are I/O with
  the server, timed by the event loop's clock like every other I/O timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bus import ensure_stream
from healthbus.protocol import MAX_DIGEST_EVENTS, StateChanged, StreamSettings, Subjects, encode
from healthbus.protocol.clock import Clock, SystemClock, sleep_until_set

log = logging.getLogger("healthbus.coordinator")

#: Most events in flight at once (each of a different target).
WINDOW: Final = 1024
MIN_BACKOFF: Final = 0.05
#: The longest pause between attempts: once the stream has a leader again, the next
#: attempt comes within this (plus the ack timeout of the attempt in flight).
MAX_BACKOFF: Final = 0.5


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class Outbox:
    """StateChanged waiting for, or on their way to, a JetStream ack."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        stream: StreamSettings,
        *,
        timeout: float = 1.0,
        window: int = WINDOW,
        warn: Callable[[str, str], None] | None = None,
        may_send: Callable[[], bool] = lambda: True,
        clock: Clock | None = None,
    ) -> None:
        self.nc = nc
        self._clock = clock or SystemClock()
        self.subjects = subjects
        self.stream = stream
        self.timeout = timeout
        self.window = max(1, window)
        self.published = 0
        """Events acked by JetStream."""
        self.duplicates = 0
        """Acks that said the event was already in the stream."""
        self._may_send = may_send
        self._warn = warn or (lambda key, text: log.warning("%s: %s", key, text))
        # A list per target, not a deque: a target rarely has more than one or two events
        # waiting, and an empty deque allocates a 64-slot block (over 600 bytes): at start
        # every target has one, and 50,000 of them left the heap fragmented (bench scale).
        self._queues: dict[str, list[StateChanged]] = {}
        self._ready: deque[str] = deque()  # targets with events and nothing in flight
        self._inflight: dict[str, tuple[int, float]] = {}  # target -> (seq, ack deadline on the loop's time)
        self._pending = 0
        self._acked: dict[str, int] = {}
        self._sent: dict[str, int] = {}  # the highest seq sent at least once, per target
        # The last acked event of the targets acked most recently, in ack order (the digest's events).
        self._recent: dict[str, StateChanged] = {}
        self._wake = asyncio.Event()
        self._acked_changed = asyncio.Event()
        self._inbox = ""
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._resume_at = 0.0  # the end of the backoff, on self._clock
        self._backoff = MIN_BACKOFF
        self._check_stream = False
        self._closed = False

    # ------------------------------------------------------------------ public

    @property
    def pending(self) -> int:
        """Events not yet acked."""
        return self._pending

    def acked(self, target: str) -> int:
        """The highest seq of ``target`` known to be in the stream."""
        return self._acked.get(target, 0)

    def unacked(self) -> list[StateChanged]:
        """The events not acked, in seq order per target (what a step-down leaves unstored)."""
        return [event for queue in self._queues.values() for event in queue]

    def announced(self, targets: Iterable[str]) -> dict[str, int]:
        """Per target of ``targets``: the highest seq stored or sent to the stream (0: none).

        What the StateDigest says: an event with a higher seq has not reached NATS yet, so
        a subscriber already listening gets it live.
        """
        acked, sent = self._acked, self._sent
        return {t: max(acked.get(t, 0), sent.get(t, 0)) for t in targets}

    def recent(self) -> list[StateChanged]:
        """The last stored event of each of the targets stored most recently, oldest first
        (at most ``MAX_DIGEST_EVENTS``): what the StateDigest carries besides the seqs."""
        return list(self._recent.values())

    def mark_acked(self, target: str, seq: int) -> None:
        """Record that ``seq`` is already in the stream (restore)."""
        self._acked[target] = max(self._acked.get(target, 0), seq)

    def put(self, event: StateChanged) -> None:
        """Queue an event; events of one target must be put in seq order."""
        queue = self._queues.get(event.target)
        if queue is None:
            queue = self._queues[event.target] = []
            if event.target not in self._inflight:
                self._ready.append(event.target)
        queue.append(event)
        self._pending += 1
        self._wake.set()

    async def start(self) -> None:
        """Subscribe to the ack inbox and start sending."""
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox + ".>", cb=self._on_ack)
        self._task = asyncio.create_task(self._run(), name="healthbus-coordinator-outbox")

    async def stop(self) -> None:
        """Stop sending (pending events stay unpublished) and unsubscribe."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def drained(self) -> None:
        """Wait until every queued event has been acked."""
        while self._pending:
            self._acked_changed.clear()
            await self._acked_changed.wait()

    async def wait_acked(self, target: str, seq: int) -> None:
        """Wait until ``target``'s event ``seq`` is in the stream."""
        while self._acked.get(target, 0) < seq:
            self._acked_changed.clear()
            await self._acked_changed.wait()

    # ------------------------------------------------------------------ sending

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._expire(loop.time())
            now = self._clock.monotonic()
            if now >= self._resume_at and self.nc.is_connected and self._may_send():
                if self._check_stream:
                    self._check_stream = False
                    try:
                        # Bounded like a publish: in a cluster "no responders" usually means
                        # the stream is electing its leader, and a JetStream API request
                        # would wait out its 5 s default before the next publish is tried.
                        await ensure_stream(self.nc.jetstream(timeout=self.timeout), self.stream)
                    except Exception as exc:  # the server says why; try again after a backoff
                        self._failed(f"cannot create the state stream: {exc}")
                        continue
                await self._send(loop.time())
            io_wait, backoff = self._next_wakeup(loop.time(), self._clock.monotonic())
            self._wake.clear()
            if io_wait == 0 or backoff == 0:
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
            # that races with the event, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(io_wait):  # None: no I/O deadline
                    if backoff is None:
                        await self._wake.wait()
                    else:
                        await sleep_until_set(self._clock, self._wake, backoff)

    async def _send(self, io_now: float) -> None:
        ready = self._ready
        inflight = self._inflight
        deadline = io_now + self.timeout
        while ready and len(inflight) < self.window:
            target = ready.popleft()
            event = self._queues[target][0]
            try:
                await self.nc.publish(
                    self.subjects.state(target),
                    encode(event),
                    reply=f"{self._inbox}.{target}.{event.seq}",
                    headers={"Nats-Msg-Id": event.msg_id},
                )
            except Exception as exc:  # closed connection, full reconnect buffer, ...
                ready.appendleft(target)
                self._failed(str(exc) or type(exc).__name__)
                return
            inflight[target] = (event.seq, deadline)
            if event.seq > self._sent.get(target, 0):
                self._sent[event.target] = event.seq

    def _expire(self, io_now: float) -> None:
        # _inflight is in sending order, so deadlines ascend: stop at the first future one.
        late = []
        for target, (_, deadline) in self._inflight.items():
            if deadline > io_now:
                break
            late.append(target)
        for target in late:
            del self._inflight[target]
            self._ready.append(target)
        if late:
            self._failed(f"no ack within {self.timeout:g}s for {len(late)} events")

    def _failed(self, why: str) -> None:
        self._resume_at = self._clock.monotonic() + self._backoff
        self._warn(
            "publish",
            f"cannot publish StateChanged ({why}); {self._pending} waiting, retrying in {self._backoff:.2f}s",
        )
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _next_wakeup(self, io_now: float, now: float) -> tuple[float | None, float | None]:
        """(seconds until an I/O deadline on the loop's time, seconds of backoff left on the
        clock); None: no such wait."""
        io_times = []
        backoff = None
        if self._inflight:
            io_times.append(next(iter(self._inflight.values()))[1])  # the oldest: see _expire
        if self._ready and len(self._inflight) < self.window:
            if self.nc.is_connected and self._may_send():
                backoff = max(0.0, self._resume_at - now)
            else:
                io_times.append(io_now + MIN_BACKOFF)  # poll for the reconnect (or a renewed lease)
        return (max(0.0, min(io_times) - io_now) if io_times else None), backoff

    # ------------------------------------------------------------------ acks

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        target, _, seq_text = token.rpartition(".")
        flight = self._inflight.get(target)
        if flight is None or str(flight[0]) != seq_text:
            return  # a late ack of an earlier attempt, already settled
        del self._inflight[target]
        duplicates = self.duplicates
        problem = self._problem(msg)
        if problem is not None:
            self._ready.append(target)
            if "no responders" in problem:
                self._check_stream = True
            self._failed(problem)
            self._wake.set()
            return
        queue = self._queues[target]
        event = queue.pop(0)  # one or a few per target: cheap
        # The event's own target string, not the copy parsed from the ack subject: as a
        # new key of _acked the copy would be kept, one more string per target.
        target = event.target
        self._pending -= 1
        self.published += 1
        self._acked[target] = max(self._acked.get(target, 0), event.seq)
        recent = self._recent
        recent.pop(target, None)
        if self.duplicates == duplicates:
            # Stored as sent. A duplicate's stored copy may be an earlier leader's event
            # with this seq: readers read that one from the stream instead.
            recent[target] = event
            if len(recent) > MAX_DIGEST_EVENTS:
                del recent[next(iter(recent))]
        if queue:
            self._ready.append(target)
        else:
            del self._queues[target]
        self._backoff = MIN_BACKOFF
        self._acked_changed.set()
        self._wake.set()

    def _problem(self, msg: Msg) -> str | None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "503":
            return "no responders: the state stream does not exist"
        if status and not msg.data:
            return f"status {status} {headers.get('Description', '')}".strip()
        try:
            ack = _ack_decoder.decode(msg.data)
        except msgspec.DecodeError:
            return f"unreadable ack: {msg.data[:100]!r}"
        if ack.error is not None:
            return f"JetStream error: {ack.error.get('description') or ack.error}"
        if ack.duplicate:
            self.duplicates += 1
        return None
