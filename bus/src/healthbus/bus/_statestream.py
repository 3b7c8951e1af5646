"""Reading the state stream: current states, history, and live changes.

The ``HEALTHBUS_STATE`` stream is the single source of truth (docs/contract.md §5): the last
message per subject is each target's current state, the history is the audit log.
Everything that reads it — the subscriber library, the coordinator's restore, probe
workers following ``retry_at``, the CLI and the dashboard — goes through this module.

All readers use JetStream *ordered consumers*: ephemeral, flow-controlled, and
re-created by nats-py from the last stream sequence seen when two idle heartbeats are
missed (a NATS restart loses the ephemeral consumer), so a reader never misses or
repeats a message across a NATS restart. The heartbeat is 1 s rather than nats-py's
5 s so that a reader is live again within about 2-3 s of the server's return.

"Caught up" means every message that existed when the read began has been handed
over: it is detected from each message's ``num_pending`` (0 on the last one), or from
the consumer having nothing pending when the stream holds nothing for the filter.
Messages in the stream that are not valid StateChanged are skipped, counted in
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
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from healthbus.bus._direct import DEFAULT_BATCH, StoredMessage, last_message, last_per_subject
from healthbus.protocol import (
    DEFAULT_PREFIX,
    ProtocolError,
    StateChanged,
    Subjects,
    decode_state_changed,
    stream_name_for,
)

log = logging.getLogger("healthbus.statestream")

#: Subjects whose target token a live subscription remembers (cleared when full).
_SUBJECT_CACHE_SIZE = 100_000

Handler = Callable[[StateChanged], Awaitable[None] | None]
Start = Literal["last_per_subject", "new", "all"]


class Follower:
    """A live reader started by :meth:`StateStream.follow`; ``await stop()`` ends it."""

    def __init__(self) -> None:
        self.caught_up = asyncio.Event()
        """Set once the messages that existed at the start have all been handled."""
        self._sub: JetStreamContext.PushSubscription | None = None

    async def stop(self) -> None:
        """Stop following (idempotent)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


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
        # How long a JetStream API call (creating a reader's consumer, its info) may wait
        # for an answer: a stream electing its leader answers nothing until it has one.
        self.js = nc.jetstream(timeout=api_timeout)
        self.subjects = Subjects(prefix)
        self.stream = stream or stream_name_for(prefix)
        self.malformed = 0
        self._malformed_subjects: set[str] = set()
        self._unsigned_subjects: set[str] = set()
        self.idle_heartbeat = idle_heartbeat

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
        an exception in it is logged and the reader goes on.
        """
        follower = Follower()
        subject = self._filter(target)
        if since is not None:
            policy = DeliverPolicy.BY_START_TIME
        else:
            policy = {
                "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
                "new": DeliverPolicy.NEW,
                "all": DeliverPolicy.ALL,
            }[start]
        config = ConsumerConfig(
            deliver_policy=policy,
            opt_start_time=since,
        )

        async def on_msg(msg: Msg) -> None:
            event = self._decode(msg)
            if event is not None:
                headers = msg.headers
                if headers is None or headers.get("Nats-Msg-Id") != event.msg_id:
                    self._unsigned_subjects.add(msg.subject)
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("state handler failed for %s seq %s", event.target, event.seq)
            if msg.metadata.num_pending == 0:
                follower.caught_up.set()

        sub = await self.js.subscribe(
            subject,
            stream=self.stream,
            ordered_consumer=True,
            config=config,
            cb=on_msg,
            idle_heartbeat=self.idle_heartbeat,
        )
        follower._sub = sub
        if policy is DeliverPolicy.NEW:
            follower.caught_up.set()
        else:
            info = await sub.consumer_info()
            if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
                follower.caught_up.set()
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
            try:
                result = handler(event)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("state handler failed for %s seq %s", event.target, event.seq)

        return await self.nc.subscribe(self.subjects.state_all, cb=on_msg, pending_msgs_limit=pending_msgs_limit)

    async def current(self, *, target: str | None = None, timeout: float = 10.0) -> dict[str, StateChanged]:
        """Every target's current state (its last valid StateChanged), keyed by target.

        When the last message of a subject is not a valid StateChanged (it cannot be
        with the permissions of ``deploy/``, but a stream is data we do not control),
        that subject's history is read to find its last valid event, so a coordinator
        restoring from here never reuses a seq. The same when the last message lacks the
        ``Nats-Msg-Id: <target>:<seq>`` header every coordinator event carries: then the
        event with the highest seq in the subject's history is taken.
        """
        states: dict[str, StateChanged] = {}
        self._malformed_subjects.clear()
        self._unsigned_subjects.clear()

        def keep(event: StateChanged) -> None:
            old = states.get(event.target)
            if old is None or event.seq > old.seq:
                states[event.target] = event

        follower = await self.follow(keep, start="last_per_subject", target=target)
        try:
            await asyncio.wait_for(follower.caught_up.wait(), timeout)
        finally:
            await follower.stop()
        rescan = {s for s in self._malformed_subjects if self.subjects.state_target(s) not in states}
        for subject in sorted(self._unsigned_subjects):
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

        Ends when caught up with the stream as it was when the read began, or at the
        first event after ``until``. Events come in stream order.
        """
        queue: asyncio.Queue[StateChanged | None] = asyncio.Queue()
        follower = await self.follow(queue.put_nowait, start="all", since=since, target=target)
        done = asyncio.create_task(follower.caught_up.wait())
        try:
            while True:
                if queue.empty() and done.done():
                    return
                get = asyncio.create_task(queue.get())
                finished, _ = await asyncio.wait({get, done}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not finished:
                    get.cancel()
                    raise TimeoutError(f"reading {self.stream} stalled for {timeout:g}s")
                if get in finished:
                    event = get.result()
                    if event is None:
                        return
                    if until is not None and event.at > until:
                        return
                    yield event
                else:
                    get.cancel()
        finally:
            done.cancel()
            await follower.stop()
