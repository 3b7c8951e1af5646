"""The public surface shared by HealthClient and FakeHealthClient, and the callback plumbing.

Invariants:

- The table is updated before anything is told: a callback, a ``changes()`` iterator or
  a ``wait_for`` woken by an event already sees the new state through ``state()`` and
  ``is_available()``.
- A callback never hurts the client: a sync callback runs inline and an exception from it
  is logged; an async callback runs in its own task, one event after another in order, so
  a slow or failing one never delays state updates or other callbacks.
- Refreshes (the coordinator re-announcing an unchanged state so the stream keeps it,
  ``StateChanged.unchanged_since`` set) update the table (seq, at) but reach only the
  callbacks and ``changes()`` iterators that asked for them (``refreshes=True``).
- ``changes()`` registers its queue when called, not when first iterated: every event
  delivered after the call reaches the iterator, however late the loop starts.
- ``changes()`` iterators and async callbacks each get their own bounded queue; a
  consumer that falls more than ``CHANGES_QUEUE_SIZE`` events behind (e.g. an async
  callback stuck on a hung call) loses the oldest ones (logged), it never makes the
  client grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from types import TracebackType
from typing import Any, Final, Generic, Protocol, Self, TypeVar, runtime_checkable

from healthbus.protocol import STATES, GroupChanged, StateChanged, is_refresh
from healthbus.protocol.clock import Clock, SystemClock, require_clock
from healthbus.subscribers._groups import GroupTable, Plan
from healthbus.subscribers._queues import put_dropping_oldest
from healthbus.subscribers._state import BusStatus, StateTable, TargetState

log = logging.getLogger("healthbus.subscribers")

CHANGES_QUEUE_SIZE: Final = 10_000

T = TypeVar("T")
ChangeCallback = Callable[[StateChanged], Awaitable[None] | None]
BusCallback = Callable[[BusStatus], Awaitable[None] | None]


class DependencyUnavailable(ConnectionError):
    """A dependency is unavailable according to healthbus (or failed to connect just now).

    Raised at once instead of waiting for a connect timeout. ``target`` names the
    dependency, ``retry_at`` (a datetime or None) says when it may be tried again,
    ``reason`` says why, never with a credential in it. ``kind`` classifies it:
    ``unavailable`` (healthbus said so) or the kind of connection failure seen locally
    (``refused``, ``timeout``, ``dns``, ``disconnected``, ...).
    """

    def __init__(self, target: str, retry_at: Any = None, reason: str = "", *, kind: str = "unavailable") -> None:
        self.target = target
        self.kind = kind
        self.retry_at = retry_at
        self.reason = reason
        text = f"{target} is unavailable"
        if reason:
            text += f": {reason}"
        if retry_at is not None:
            text += f" (retry at {retry_at.isoformat() if hasattr(retry_at, 'isoformat') else retry_at})"
        super().__init__(text)


@runtime_checkable
class HealthView(Protocol):
    """What the adapters need from a health client; HealthClient and FakeHealthClient both are one."""

    def state(self, target: str) -> TargetState | None:
        """The current state of ``target``, or None if it was never heard of."""
        ...

    def is_available(self, target: str) -> bool:
        """Whether callers should use ``target`` now."""
        ...

    def feature_available(self, feature: str) -> bool:
        """Whether every target providing ``feature`` is available."""
        ...

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback`` for every state change; returns a function that unsubscribes."""
        ...


@runtime_checkable
class GroupHealthView(HealthView, Protocol):
    """A health view that also knows groups (HealthClient, SyncHealthClient and FakeHealthClient are)."""

    def pick(self, group: str, *, read_only: bool = False) -> str:
        """A usable member of ``group`` by its policy; DependencyUnavailable when none is."""
        ...

    def group(self, name: str) -> GroupChanged | None:
        """The last GroupChanged of group ``name``."""
        ...


class _Listener(Generic[T]):
    """One registered callback; async ones get an ordered queue and a worker task."""

    def __init__(self, callback: Callable[[T], Awaitable[None] | None], what: str, *, refreshes: bool = True) -> None:
        self.callback = callback
        self.what = what
        self.refreshes = refreshes
        call = getattr(callback, "__call__", None)  # noqa: B004 - async callable objects count too
        self.is_async = inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(call)
        self.queue: asyncio.Queue[T] | None = None
        self.task: asyncio.Task[None] | None = None

    def deliver(self, item: T) -> None:
        if not self.is_async:
            try:
                result = self.callback(item)
            except Exception:
                log.exception("%s callback %r failed", self.what, self.callback)
                return
            if result is not None and inspect.isawaitable(result):  # a sync function returned an awaitable
                self.is_async = True
                self._ensure_worker()
                self._put(_AwaitableItem(result))  # type: ignore[arg-type]
            return
        self._ensure_worker()
        self._put(item)

    def _put(self, item: T) -> None:
        assert self.queue is not None
        dropped = put_dropping_oldest(self.queue, item)  # a stuck callback must not make the client grow
        for old in dropped:
            if isinstance(old, _AwaitableItem) and inspect.iscoroutine(old.awaitable):
                old.awaitable.close()  # never awaited: close it quietly
        if dropped:
            log.warning(
                "%s callback %r is %d events behind: dropped the oldest", self.what, self.callback, CHANGES_QUEUE_SIZE
            )

    def _ensure_worker(self) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue(CHANGES_QUEUE_SIZE)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        assert self.queue is not None
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item, _AwaitableItem):
                    await item.awaitable
                else:
                    result = self.callback(item)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                log.exception("%s callback %r failed", self.what, self.callback)
            finally:
                self.queue.task_done()

    async def drain(self) -> None:
        if self.queue is not None and self.task is not None and not self.task.done():
            await self.queue.join()

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _subscribe(listeners: list[_Listener[T]], listener: _Listener[T]) -> Callable[[], None]:
    """Register ``listener``; returns the function that unregisters and stops it (idempotent)."""
    listeners.append(listener)

    def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(listener)
        listener.stop()

    return unsubscribe


class _Changes:
    """What ``changes()`` returns: an async iterator whose queue is registered at creation.

    It unregisters when it ends (the client closed), on ``aclose()``, or when dropped.
    """

    def __init__(self, queues: dict[asyncio.Queue[StateChanged | None], bool], closed: bool, refreshes: bool) -> None:
        self._queues = queues
        self._queue: asyncio.Queue[StateChanged | None] | None = None
        if not closed:
            self._queue = asyncio.Queue(CHANGES_QUEUE_SIZE)
            queues[self._queue] = refreshes

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StateChanged:
        queue = self._queue
        if queue is None:
            raise StopAsyncIteration
        event = await queue.get()
        if event is None:
            self._end()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop receiving events (idempotent)."""
        self._end()

    def _end(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            self._queues.pop(queue, None)

    def __del__(self) -> None:
        self._end()


class _AwaitableItem:
    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[None]) -> None:
        self.awaitable = awaitable


def clock_of(health: object, clock: Clock | None, where: str) -> Clock:
    """The clock an adapter of ``health`` runs on: ``clock`` when given (a :class:`Clock`,
    else TypeError), else the health view's own (``HealthClient(clock=...)``, a
    ``FakeHealthClient``'s manual clock), else :class:`SystemClock`."""
    if clock is not None:
        return require_clock(clock, where)
    own = getattr(health, "clock", None)
    return own if isinstance(own, Clock) else SystemClock()


class HealthViewBase:
    """State queries, callbacks, ``changes()`` and ``wait_for`` over a :class:`StateTable`."""

    def __init__(self, table: StateTable, clock: Clock | None = None) -> None:
        self._table = table
        self._time: Clock = require_clock(clock, f"{type(self).__name__}(clock=...)")
        self._clock = self._time.monotonic
        # The same dict objects as the table's (updated in place): one attribute lookup less.
        self._available = table.available
        self._features_ok = table.features_ok
        self._waiting = table.waiting
        self._groups = GroupTable()
        self._plans = self._groups.plans
        self._read_plans = self._groups.read_plans
        self._admission: asyncio.TimerHandle | None = None
        self._admission_at = 0.0
        self._listeners: list[_Listener[StateChanged]] = []
        self._bus_listeners: list[_Listener[BusStatus]] = []
        # Each changes() queue, and whether it wants refreshes; None in a queue: the client closed.
        self._queues: dict[asyncio.Queue[StateChanged | None], bool] = {}
        self._view_closed = False
        self._waiters: dict[str, list[tuple[Collection[str], asyncio.Future[TargetState]]]] = {}

    @property
    def clock(self) -> Clock:
        """The clock this view runs on (``clock=``, default :class:`SystemClock`); the
        adapters built on the view (``HealthyRedis``, ``DatabaseGuard``, the Django guard)
        use it too unless given their own."""
        return self._time

    # ------------------------------------------------------------ queries (hot path)

    def is_available(self, target: str) -> bool:
        """True when callers should use ``target`` now: one dict lookup, safe on every request.

        ``healthy`` and ``degraded`` are available; ``unknown``, ``unavailable``,
        ``recovering`` and targets never heard of are not. While the bus is lost and the
        states are stale, the bus-loss policy decides. During a re-admission ramp, a target
        is available here from this instance's own moment in the ramp on (docs/contract.md).
        """
        answer = self._available.get(target)
        if answer is None:
            return self._table.default_available
        if answer:
            return True
        if not self._waiting:
            # Re-read: the loop's timer may have admitted it since the first read (it writes
            # the answer before the target leaves ``waiting``), and this thread may already
            # have answered True for it by the clock.
            return self._available.get(target, self._table.default_available)
        # A ramp is waiting somewhere (rare, and for a moment): has this one's moment come?
        # Read-only: the loop's timer writes the answer (any thread may be asking).
        return self._table.admitted(target, self._clock())

    def feature_available(self, feature: str) -> bool:
        """False while any target providing ``feature`` is not available (see :meth:`is_available`)."""
        answer = self._features_ok.get(feature, self._table.default_feature)
        if answer:
            return True
        if not self._waiting:
            return self._features_ok.get(feature, self._table.default_feature)  # re-read, as above
        providers = self._table.providers.get(feature)
        if not providers:
            return answer
        return all(self.is_available(t) for t in tuple(providers))

    def pick(self, group: str, *, read_only: bool = False) -> str:
        """A usable member (target name) of ``group``, spreading load by its policy.

        A dict lookup and an index into a plan precomputed when anything it depends on
        changed (docs/subscribers.md, "Groups"). Usable means :meth:`is_available` here.
        While fewer than the group's ``panic_threshold`` share of members are usable, it
        spreads over every member. ``read_only``: never the group's ``primary`` (unless
        ``reads_on_primary``). Raises :class:`DependencyUnavailable` (``target`` is the
        group) when no member is usable or the group is not known.
        """
        plan = (self._read_plans if read_only else self._plans).get(group)
        if plan is None or plan.ramp:
            plan = self._replan(group, read_only)
        return plan.next()

    def _replan(self, group: str, read_only: bool) -> Plan:
        """The plan of ``group`` with ramp members whose moment came; raises if none.

        Read-only (any thread may ask): members are judged by :meth:`is_available`, and the
        loop's admission timer alone writes the table."""
        self._groups.rebuild((group,), self.is_available, self._waiting)
        plan = (self._read_plans if read_only else self._plans).get(group)
        if plan is None:
            raise DependencyUnavailable(group, reason=self._groups.why_not(group, reads=read_only))
        return plan

    def group(self, name: str) -> GroupChanged | None:
        """The last :class:`~healthbus.protocol.GroupChanged` of group ``name`` (None: never heard of)."""
        return self._groups.groups.get(name)

    def groups(self) -> dict[str, GroupChanged]:
        """A copy of every known group's last GroupChanged."""
        return dict(self._groups.groups)

    def _usable(self, target: str) -> bool:
        return self._available.get(target, self._table.default_available)

    def state(self, target: str) -> TargetState | None:
        """The current :class:`TargetState` of ``target``, or None if it was never heard of."""
        return self._table.states.get(target)

    def states(self) -> dict[str, TargetState]:
        """A copy of every known target's current state."""
        return dict(self._table.states)

    @property
    def bus(self) -> BusStatus:
        """How the link to the bus is doing (connected, stale, since when lost)."""
        return self._table.status(self._clock())

    # ------------------------------------------------------------ subscriptions

    def on_change(self, callback: ChangeCallback, *, refreshes: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` after every state change (sync or async); returns an unsubscribe function.

        The client's state is updated before the callback runs. An exception in the
        callback is logged and never stops the client. With ``refreshes=True`` the
        callback also gets the coordinator's re-announcements of an unchanged state
        (``healthbus.protocol.is_refresh(event)``).
        """
        return _subscribe(self._listeners, _Listener(callback, "on_change", refreshes=refreshes))

    def on_bus_change(self, callback: BusCallback) -> Callable[[], None]:
        """Call ``callback(BusStatus)`` when the bus link is lost, goes stale or comes back."""
        return _subscribe(self._bus_listeners, _Listener(callback, "on_bus_change"))

    def changes(self, *, refreshes: bool = False) -> AsyncIterator[StateChanged]:
        """Every state change from this call on, as an async iterator (``async for event in health.changes()``).

        The iterator is registered by the call itself, so events delivered between the call
        and the first ``async for`` step are not missed. The iteration ends when the client
        is closed; ``aclose()`` on the iterator stops it early. With ``refreshes=True`` it
        also yields the coordinator's re-announcements of an unchanged state.
        """
        return _Changes(self._queues, self._view_closed, refreshes)

    async def wait_for(self, target: str, state: str | Iterable[str], *, timeout: float | None = None) -> TargetState:
        """Wait until ``target`` is in ``state`` (one state or several); its TargetState.

        Returns at once if it already is. Raises TimeoutError after ``timeout`` seconds.
        """
        wanted: Collection[str] = frozenset((state,) if isinstance(state, str) else state)
        unknown = sorted(w for w in wanted if w not in STATES)
        if unknown or not wanted:
            raise ValueError(f"invalid state {', '.join(unknown) or '(none)'}: expected one of {', '.join(STATES)}")
        current = self._table.states.get(target)
        if current is not None and current.state in wanted:
            return current
        future: asyncio.Future[TargetState] = asyncio.get_running_loop().create_future()
        entry = (wanted, future)
        self._waiters.setdefault(target, []).append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            now = self._table.states.get(target)
            shown = now.state if now is not None else "never heard of"
            expected = "/".join(sorted(wanted))
            raise TimeoutError(f"{target} did not become {expected} within {timeout}s (now: {shown})") from None
        finally:
            waiters = self._waiters.get(target)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(entry)
                if not waiters:
                    del self._waiters[target]

    async def drain(self) -> None:
        """Wait until every async callback has handled every event delivered so far."""
        for listener in self._all_listeners():
            await listener.drain()

    # ------------------------------------------------------------ life cycle

    async def close(self) -> None:
        """Stop the async callback workers and end ``changes()`` iterators (a subclass closes its connection too)."""
        self._view_closed = True
        if self._admission is not None:
            self._admission.cancel()
            self._admission = None
        self._stop_listeners()
        for queue in list(self._queues):
            put_dropping_oldest(queue, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ delivery

    def _handle(self, event: StateChanged) -> TargetState | None:
        """Apply ``event`` to the table, then tell everyone; None if it was ignored."""
        new = self._table.apply(event, mono=self._clock(), wall=self._time.now())
        if new is None:
            return None
        if event.target in self._groups.of_member:
            self._groups.member_changed(event.target, self._usable, self._waiting)
        if self._waiting:
            self._arm_admission()
        # Every subscriber of a fleet runs this for every event: nothing it need not do.
        listeners, queues = self._listeners, self._queues
        refresh = (listeners or queues) and is_refresh(event)
        for listener in tuple(listeners):  # a callback may unsubscribe
            if not refresh or listener.refreshes:
                listener.deliver(event)
        for queue, refreshes in tuple(queues.items()) if queues else ():
            if refresh and not refreshes:
                continue
            if put_dropping_oldest(queue, event):
                log.warning("changes() consumer is %d events behind: dropped the oldest", CHANGES_QUEUE_SIZE)
        waiters = self._waiters.get(event.target)
        if waiters:
            for wanted, future in list(waiters):
                if new.state in wanted and not future.done():
                    future.set_result(new)
        return new

    def _handle_group(self, event: GroupChanged) -> bool:
        """Take a GroupChanged in (newer ``seq`` only); True if it was."""
        return self._groups.apply(event, self._usable, self._waiting)

    def _arm_admission(self) -> None:
        """A timer on this loop that admits waiting targets at their moment (none without a
        running loop: then the read-only answer of :meth:`is_available` is all there is)."""
        when = self._table.next_admission()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if when is None:
            return
        handle = self._admission
        if handle is not None and not handle.cancelled() and self._admission_at <= when:
            return
        if handle is not None:
            handle.cancel()
        self._admission_at = when
        self._admission = loop.call_later(max(0.0, when - self._clock()), self._admit)

    def _admit(self) -> None:
        self._admission = None
        self._table.admit_due(self._clock())
        if self._waiting:
            self._arm_admission()

    def _bus_changed(self) -> None:
        self._groups.rebuild(tuple(self._groups.groups), self._usable, self._waiting)
        status = self.bus
        for listener in list(self._bus_listeners):
            listener.deliver(status)

    def _all_listeners(self) -> list[_Listener[Any]]:
        return [*self._listeners, *self._bus_listeners]

    def _stop_listeners(self) -> None:
        for listener in self._all_listeners():
            listener.stop()
