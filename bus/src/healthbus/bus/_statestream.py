"""Reading the state stream: current states, history, and live changes.

The ``HEALTHBUS_STATE`` stream is the single source of truth (docs/contract.md §5): the last
message per subject is each target's current state, the history is the audit log.
Everything that reads it — the subscriber library, the coordinator's restore, probe
workers following ``retry_at``, the CLI and the dashboard — goes through this module.

No reader uses a JetStream consumer (``deploy/`` grants the consumer API to the
coordinator only, so no reading role can create, re-point or delete one): what exists is
read with batched direct gets (:mod:`._direct`), live changes come over a plain
subscription to ``<prefix>.state.*`` (the coordinator's JetStream publishes reach core
subscribers too).

A :class:`Follower` subscribes first, then reads what exists (the subscription is in
place before the read's request reaches the server: one connection's commands are
processed in order), then hands over the live messages queued meanwhile. Each target's
``seq`` grows by exactly one per event, so a live event is a repeat when its seq is not
above the last one handed over for its target (dropped), and shows a gap when it is more
than one above: the missing events are read from the target's subject, starting at a
stream sequence known to be at or before the last one handed over. After a reconnect
(what was published meanwhile never reaches a plain subscription) the follower reads
every subject's last message and repairs gaps the same way, so it never misses or
repeats an event across a NATS restart.

"Caught up" means every message that existed when the read began has been handed
over. Messages in the stream that are not valid StateChanged are skipped, counted in
``StateStream.malformed`` and logged; they never stop a reader.

The coordinator publishes every event with ``Nats-Msg-Id: <target>:<seq>``. A last
message without that header (or with one that does not match its body) was not published
by a coordinator — a forgery or a hand-made test message — so ``current`` does not trust
it to be the latest: it reads that subject's history and keeps the highest ``seq``.
Otherwise a stale forged event would make a restarting coordinator reuse a ``seq`` that
is already in the stream, and JetStream would drop the real event as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from healthbus.bus._direct import (
    DEFAULT_BATCH,
    LeaderMark,
    StoredMessage,
    last_message,
    last_per_subject,
    leader_mark,
    read_range,
)
from healthbus.bus._tasks import raise_if_cancelled
from healthbus.protocol import (
    DEFAULT_PREFIX,
    GroupChanged,
    ProtocolError,
    StateChanged,
    Subjects,
    decode_group_changed,
    decode_state_changed,
    stream_name_for,
)

log = logging.getLogger("healthbus.statestream")

#: Subjects whose target token a live subscription remembers (cleared when full).
_SUBJECT_CACHE_SIZE = 100_000

#: Live messages a follower's subscription may hold before nats-py drops some (a slow consumer).
_PENDING_LIMIT = 65536

Handler = Callable[[StateChanged], Awaitable[None] | None]
Start = Literal["last_per_subject", "new", "all"]


async def _call(handler: Handler, event: StateChanged) -> None:
    """Hand ``event`` to a sync or async handler; an exception in it is logged, never raised."""
    try:
        result = handler(event)
        if result is not None and inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("state handler failed for %s seq %s", event.target, event.seq)


class Follower:
    """A live reader started by :meth:`StateStream.follow`; ``await stop()`` ends it."""

    def __init__(self, stream: StateStream, handler: Handler) -> None:
        self.caught_up = asyncio.Event()
        """Set once the messages that existed at the start have all been handled."""
        self.resyncs = 0
        """Reads of every subject's last message after a reconnect (for tests and logs)."""
        self._stream = stream
        self._handler = handler
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._seqs: dict[str, int] = {}
        """target -> the seq of the last event handed over."""
        self._floor: dict[str, int] = {}
        """target -> a stream sequence at or before its last event handed over."""
        self._base = 1
        """Where a target with no known stream sequence starts: after everything read at the start."""
        self._reconnects = stream.nc.stats["reconnects"]
        """The connection's reconnect count when the start was read (a change: read again)."""
        self._resync_queued = False
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def stop(self) -> None:
        """Stop following (idempotent)."""
        sub, self._sub = self._sub, None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _hand(self, event: StateChanged) -> None:
        await _call(self._handler, event)

    def _seen(self, event: StateChanged, stream_seq: int | None) -> None:
        self._seqs[event.target] = max(event.seq, self._seqs.get(event.target, 0))
        if stream_seq is not None:
            self._floor[event.target] = max(stream_seq, self._floor.get(event.target, 0))
            self._base = max(self._base, stream_seq + 1)

    async def _start(self, stored: list[StoredMessage], *, hand: bool) -> None:
        """What existed at the start: handed over in stream order (or only remembered)."""
        for message in stored:
            event = self._stream._decode(message)
            if event is None:
                continue
            if hand:
                await self._hand(event)
            self._seen(event, message.stream_seq)

    async def _accept(self, event: StateChanged, stream_seq: int | None) -> None:
        """Hand over a live (or re-read) event once, after any events it shows were missed."""
        last = self._seqs.get(event.target)
        if last is not None:
            if event.seq <= last:
                return
            if event.seq > last + 1:
                try:
                    await self._repair(event.target, event.seq)
                except Exception as exc:  # the stream does not answer: hand over what we have
                    log.warning(
                        "%s: events %d-%d of %s were missed and cannot be read (%s)",
                        self._stream.stream,
                        last + 1,
                        event.seq - 1,
                        event.target,
                        exc,
                    )
        await self._hand(event)
        self._seen(event, stream_seq)

    async def _repair(self, target: str, upto: int) -> None:
        """Hand over ``target``'s events between the last one handed over and ``upto``."""
        stream = self._stream
        start = self._floor.get(target, self._base)
        log.info("%s: reading the events before seq %d missed on %s", stream.stream, upto, target)
        pages = read_range(
            stream.nc, stream.stream, stream.subjects.state(target), start_seq=start, timeout=stream.api_timeout
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                for message in page:
                    event = stream._decode(message)
                    if event is None or event.target != target or event.seq >= upto:
                        continue
                    if event.seq > self._seqs.get(target, 0):
                        await self._hand(event)
                        self._seen(event, message.stream_seq)
                if self._seqs.get(target, 0) >= upto - 1:
                    return

    async def _resync(self) -> None:
        """After a reconnect: every subject's last message, with the gaps before it."""
        stream = self._stream
        mark = await stream._mark(self._subject)
        stored = await last_per_subject(
            stream.nc, stream.stream, self._subject, timeout=stream.api_timeout, at_least=mark.seq
        )
        self.resyncs += 1
        for message in stored:
            event = stream._decode(message)
            if event is not None:
                await self._accept(event, message.stream_seq)

    async def _run(self) -> None:
        """Hand over live messages in order; after a reconnect (a ``None`` from
        :meth:`_watch`), read what was missed."""
        nc = self._stream.nc
        state_target = self._stream.subjects.state_target
        queue = self._queue
        while True:
            raise_if_cancelled()  # a cancel racing a direct get's reply in _resync is lost (_tasks)
            msg = await queue.get()
            if msg is not None:
                event = self._stream._decode_for(msg, state_target(msg.subject))
                if event is not None:
                    await self._accept(event, None)
                continue
            self._resync_queued = False
            reconnects = nc.stats["reconnects"]
            try:
                await self._resync()
            except Exception as exc:  # JetStream not answering yet: the watcher asks again
                log.info(
                    "%s: reading what was missed while disconnected failed (%s); retrying", self._stream.stream, exc
                )
            else:
                self._reconnects = reconnects

    async def _watch(self) -> None:
        """Every ``idle_heartbeat``: after a reconnect, queue a re-read (once at a time)."""
        nc = self._stream.nc
        while True:
            await asyncio.sleep(self._stream.idle_heartbeat)
            if nc.stats["reconnects"] != self._reconnects and nc.is_connected and not self._resync_queued:
                self._resync_queued = True
                self._queue.put_nowait(None)

    @property
    def _subject(self) -> str:
        return self._sub.subject if self._sub is not None else self._stream.subjects.state_all


class StateStream:
    """The state stream of one subject prefix on one NATS connection."""

    def __init__(
        self,
        nc: Client,
        prefix: str = DEFAULT_PREFIX,
        *,
        stream: str | None = None,
        idle_heartbeat: float = 1.0,
        api_timeout: float = 5.0,
    ) -> None:
        self.nc = nc
        # How long a direct get may wait for each answer: a stream electing its leader
        # answers nothing until it has one.
        self.api_timeout = api_timeout
        # How often a follower with no live message looks whether its connection came
        # back (then it reads what it missed).
        self.idle_heartbeat = idle_heartbeat
        self.subjects = Subjects(prefix)
        self.stream = stream or stream_name_for(prefix)
        self.malformed = 0
        self._malformed_subjects: set[str] = set()

    def _decode(self, msg: Msg | StoredMessage) -> StateChanged | None:
        """The StateChanged in ``msg`` (checked against its subject), or None if malformed (counted)."""
        return self._decode_for(msg, self.subjects.state_target(msg.subject))

    def _decode_for(self, msg: Msg | StoredMessage, subject_target: str | None) -> StateChanged | None:
        """:meth:`_decode` with the target token of ``msg.subject`` already looked up."""
        try:
            return decode_state_changed(msg.data, subject_target=subject_target)
        except ProtocolError as exc:
            self.malformed += 1
            self._malformed_subjects.add(msg.subject)
            if self.malformed <= 10 or self.malformed % 1000 == 0:
                log.warning("skipping malformed message #%d in %s: %s", self.malformed, self.stream, exc)
            return None

    def _filter(self, target: str | None) -> str:
        return self.subjects.state(target) if target else self.subjects.state_all

    async def _mark(self, subject: str, *, timeout: float | None = None) -> LeaderMark:
        """The leader's last message on ``subject``: a read that must see every stored event reads up to it."""
        return await leader_mark(self.nc, self.stream, subject, timeout=timeout or self.api_timeout)

    async def follow(
        self,
        handler: Handler,
        *,
        start: Start = "last_per_subject",
        since: datetime | None = None,
        target: str | None = None,
    ) -> Follower:
        """Call ``handler`` for every StateChanged from ``start`` on, then live, in order.

        ``start``: ``last_per_subject`` (current states, then changes — what a
        subscriber wants), ``new`` (only changes from now), ``all`` (the whole history),
        or give ``since`` for history from that time on. ``handler`` may be sync or async;
        an exception in it is logged and the reader goes on. Raises
        :class:`~healthbus.bus.DirectGetError` when the stream cannot be read at the start.
        """
        follower = Follower(self, handler)
        subject = self._filter(target)

        async def on_msg(msg: Msg) -> None:
            follower._queue.put_nowait(msg)

        follower._sub = await self.nc.subscribe(subject, cb=on_msg, pending_msgs_limit=_PENDING_LIMIT)
        try:
            if since is not None or start == "all":
                mark = await self._mark(subject)
                pages = read_range(
                    self.nc, self.stream, subject, start_time=since, until=mark, timeout=self.api_timeout
                )
                async with contextlib.aclosing(pages):
                    async for page in pages:
                        await follower._start(page, hand=True)
            else:
                mark = await self._mark(subject)
                stored = await last_per_subject(
                    self.nc, self.stream, subject, timeout=self.api_timeout, at_least=mark.seq
                )
                await follower._start(stored, hand=start == "last_per_subject")
        except BaseException:
            await follower.stop()
            raise
        follower.caught_up.set()
        follower._tasks = [
            asyncio.create_task(follower._run(), name=f"follow-{self.stream}"),
            asyncio.create_task(follower._watch(), name=f"follow-{self.stream}-reconnects"),
        ]
        return follower

    async def snapshot(self, *, batch: int = DEFAULT_BATCH, timeout: float = 5.0) -> list[StateChanged]:
        """Every target's last StateChanged, read with batched direct gets (no consumer).

        What a subscriber loads at connect and after a reconnect: one request per
        ``batch`` targets to ``$JS.API.DIRECT.GET.<stream>``, nothing left behind in the
        server. Malformed messages are skipped (counted in :attr:`malformed`). Raises
        :class:`~healthbus.bus.DirectGetError` when the stream cannot be read.
        """
        stored = await last_per_subject(self.nc, self.stream, self.subjects.state_all, batch=batch, timeout=timeout)
        return [event for event in map(self._decode, stored) if event is not None]

    async def groups(self, *, batch: int = DEFAULT_BATCH, timeout: float = 5.0) -> list[GroupChanged]:
        """Every group's last GroupChanged (``<prefix>.group.*``, extension), by batched direct gets.

        Malformed ones are skipped (logged). Raises :class:`~healthbus.bus.DirectGetError`
        when the stream cannot be read.
        """
        stored = await last_per_subject(self.nc, self.stream, self.subjects.group_all, batch=batch, timeout=timeout)
        out: list[GroupChanged] = []
        for msg in stored:
            event = self.decode_group(msg.subject, msg.data)
            if event is not None:
                out.append(event)
        return out

    def decode_group(self, subject: str, data: bytes) -> GroupChanged | None:
        """The GroupChanged in a message on ``subject`` (checked against it), or None if malformed (logged)."""
        try:
            return decode_group_changed(data, subject_group=self.subjects.group_name(subject))
        except ProtocolError as exc:
            log.warning("skipping a malformed GroupChanged on %s in %s: %s", subject[:200], self.stream, exc)
            return None

    async def last(self, target: str, *, timeout: float = 5.0) -> StateChanged | None:
        """``target``'s last StateChanged by a direct get (None when it has none or it is malformed)."""
        stored = await last_message(self.nc, self.stream, self.subjects.state(target), timeout=timeout)
        return None if stored is None else self._decode(stored)

    async def live(self, handler: Handler, *, pending_msgs_limit: int = 65536) -> Subscription:
        """Call ``handler`` for every StateChanged published from now on, over a plain subscription.

        No JetStream consumer: the coordinator's JetStream publishes reach core
        subscribers of ``<prefix>.state.*`` too. nats-py subscribes again by itself after
        a reconnect; what was published meanwhile is not delivered (load it with
        :meth:`snapshot`). Returns the subscription (``await sub.unsubscribe()`` ends it).
        """

        # The hot path of every subscriber in a fleet: one decode (with the subject's
        # target looked up once per subject) and the handler, nothing else.
        targets: dict[str, str | None] = {}
        state_target = self.subjects.state_target

        async def on_msg(msg: Msg) -> None:
            subject = msg.subject
            try:
                subject_target = targets[subject]
            except KeyError:
                if len(targets) >= _SUBJECT_CACHE_SIZE:
                    targets.clear()
                subject_target = targets[subject] = state_target(subject)
            event = self._decode_for(msg, subject_target)
            if event is None:
                return
            await _call(handler, event)

        return await self.nc.subscribe(self.subjects.state_all, cb=on_msg, pending_msgs_limit=pending_msgs_limit)

    async def current(self, *, target: str | None = None, timeout: float = 10.0) -> dict[str, StateChanged]:
        """Every target's current state (its last valid StateChanged), keyed by target.

        Read with batched direct gets (no consumer). When the last message of a subject
        is not a valid StateChanged (it cannot be with the permissions of ``deploy/``, but
        a stream is data we do not control), that subject's history is read to find its
        last valid event, so a coordinator restoring from here never reuses a seq. The
        same when the last message lacks the ``Nats-Msg-Id: <target>:<seq>`` header every
        coordinator event carries: then the event with the highest seq in the subject's
        history is taken. ``timeout`` bounds the wait for each answer.
        """
        states: dict[str, StateChanged] = {}
        self._malformed_subjects.clear()
        unsigned: set[str] = set()

        def keep(event: StateChanged) -> None:
            old = states.get(event.target)
            if old is None or event.seq > old.seq:
                states[event.target] = event

        subject = self._filter(target)
        wait = min(timeout, self.api_timeout)
        mark = await self._mark(subject, timeout=wait)
        stored = await last_per_subject(self.nc, self.stream, subject, timeout=wait, at_least=mark.seq)
        for message in stored:
            event = self._decode(message)
            if event is None:
                continue
            keep(event)
            if message.headers.get("Nats-Msg-Id") != event.msg_id:
                unsigned.add(message.subject)
        rescan = {s for s in self._malformed_subjects if self.subjects.state_target(s) not in states}
        for subject in sorted(unsigned):
            log.warning(
                "last message on %s lacks its Nats-Msg-Id (not from a coordinator): reading its history", subject
            )
            rescan.add(subject)
        for subject in sorted(rescan):
            name = self.subjects.state_target(subject)
            if name is None:
                continue
            async for event in self.history(target=name, timeout=timeout):
                keep(event)
        return states

    async def history(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        target: str | None = None,
        timeout: float = 30.0,
    ) -> AsyncIterator[StateChanged]:
        """The audit log: every StateChanged from ``since`` (or the start) up to now.

        Read with batched direct gets by sequence (no consumer), ``since`` by stream time.
        Ends when caught up with the stream as it was when the read began, or at the
        first event after ``until``. Events come in stream order. ``timeout`` bounds the
        wait for each answer (:class:`~healthbus.bus.DirectGetError` after it).
        """
        subject = self._filter(target)
        wait = min(timeout, self.api_timeout)
        mark = await self._mark(subject, timeout=wait)
        pages = read_range(self.nc, self.stream, subject, start_time=since, until=mark, timeout=wait)
        async with contextlib.aclosing(pages):
            async for page in pages:
                for message in page:
                    event = self._decode(message)
                    if event is None:
                        continue
                    if until is not None and event.at > until:
                        return
                    yield event
