"""SyncHealthClient: HealthClient for synchronous code (Django, Flask, gunicorn sync workers, Celery).

It runs the real :class:`~healthbus.subscribers.HealthClient` on an event loop in a
background thread (one implementation of following the bus) and offers its read surface
to every thread of the process.

Invariants:

- ``is_available`` and ``feature_available`` *are* the inner client's methods (bound on
  the instance), so a call costs exactly what it costs on the async client: one dict
  lookup. Any thread may call them: the table is updated key by key in place.
- ``changes()`` is a blocking iterator of every state change from the call on (its own
  bounded queue, fed from the event-loop thread; the oldest dropped, logged, when it
  falls ``CHANGES_QUEUE_SIZE`` behind); it ends when the client closes. ``on_change`` and
  ``changes`` take ``refreshes=`` like the async client's: the coordinator's
  re-announcements of an unchanged state reach only those that ask for them.
- Callbacks (``on_change``, ``on_bus_change``) run on one callback thread of the client,
  one after another in the order the events arrived, never on the event-loop thread: a
  slow callback delays other callbacks, never the state updates. An exception in a
  callback is logged. The queue is bounded (``CHANGES_QUEUE_SIZE``): a callback stuck for
  that many events loses the oldest (logged).
- Fork safety: a process forked while the client is connected (gunicorn ``preload_app``,
  Celery prefork, ``multiprocessing`` with fork) never uses the parent's connection: in
  the child every descriptor of the parent's event loop (the NATS socket, the loop's
  wake-up pipe, its epoll) is pointed at ``/dev/null`` and the parent's objects are left
  alone (never closed, which would disturb the parent). With ``after_fork="reconnect"``
  (the default) the child connects anew on its first use of the client (bounded by
  ``connect_timeout``, like ``connect``); with ``after_fork="raise"`` every use in the
  child raises :class:`ForkedClientError` saying what to do. Callbacks registered
  before the fork stay registered in the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import queue
import selectors
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, Unpack

from healthbus.protocol import GroupChanged, StateChanged, is_refresh, validate_target
from healthbus.subscribers._client import ClientOptions, HealthClient
from healthbus.subscribers._queues import put_dropping_oldest
from healthbus.subscribers._report import FailureReporter
from healthbus.subscribers._state import BusStatus, TargetState
from healthbus.subscribers._view import CHANGES_QUEUE_SIZE

log = logging.getLogger("healthbus.subscribers")

AfterFork: TypeAlias = Literal["reconnect", "raise"]
AFTER_FORK_CHOICES: Final[tuple[AfterFork, ...]] = ("reconnect", "raise")

SyncChangeCallback = Callable[[StateChanged], object]
SyncBusCallback = Callable[[BusStatus], object]

_STOP: Final = object()
#: Extra seconds allowed on top of ``connect_timeout`` for starting the thread and the loop.
_START_MARGIN = 5.0

#: Every live SyncHealthClient of this process (the fork hook visits them).
_CLIENTS: weakref.WeakSet[SyncHealthClient] = weakref.WeakSet()
#: The parent's objects a forked child inherited: kept forever, never closed or collected
#: (finalising them could touch the epoll instance the child shares with its parent).
_INHERITED: list[object] = []


class ForkedClientError(RuntimeError):
    """A SyncHealthClient connected before ``fork()`` was used in the child with ``after_fork="raise"``."""


class _Runner:
    """One event loop in one daemon thread, running one HealthClient."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self.thread = threading.Thread(target=self._run, name="healthbus-sync-client", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Any, timeout: float | None) -> Any:
        """Run ``coro`` on the loop and wait for its result (``timeout``: seconds, None = forever)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("SyncHealthClient: a blocking call from the client's own event-loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        done, _ = concurrent.futures.wait([future], timeout)
        if not done:
            future.cancel()
            raise TimeoutError(f"SyncHealthClient: no answer from the client's event loop within {timeout}s")
        return future.result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(10.0)

    def abandon_in_child(self) -> None:
        """In a forked child: point every inherited descriptor at /dev/null and keep the objects alive.

        The parent's socket to NATS, its loop's wake-up pipe and its epoll instance are
        shared with the parent; the child must neither read, write nor unregister them,
        and must not keep the NATS connection open after the parent closes it.
        """
        if self.loop.is_closed():
            # Its descriptors are closed and their numbers may belong to something else
            # by now (another library's epoll): touch nothing.
            return
        fds = {key.fd for key in self.selector.get_map().values()}
        with contextlib.suppress(Exception):
            fds.add(self.selector.fileno())
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        _INHERITED.append(self)


class _Dispatcher:
    """The callback thread: runs every callback in arrival order, one at a time."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(CHANGES_QUEUE_SIZE)
        self.thread = threading.Thread(target=self._run, name="healthbus-sync-callbacks", daemon=True)
        self.thread.start()

    def put(self, item: tuple[list[Callable[[Any], object]], Any, str]) -> None:
        if put_dropping_oldest(self.queue, item):
            log.warning("SyncHealthClient callbacks are %d events behind: dropped the oldest", CHANGES_QUEUE_SIZE)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is _STOP:
                    return
                callbacks, value, what = item
                for callback in callbacks:
                    try:
                        callback(value)
                    except Exception:
                        log.exception("%s callback %r failed", what, callback)
            finally:
                self.queue.task_done()

    def drain(self, timeout: float | None) -> None:
        if threading.current_thread() is self.thread:
            return  # a callback waiting for the callbacks: they are this one
        done = threading.Event()
        self.put(([lambda _: done.set()], None, "drain"))
        if not done.wait(timeout):
            raise TimeoutError(f"SyncHealthClient callbacks did not catch up within {timeout}s")

    def stop(self) -> None:
        self.queue.put(_STOP)
        if threading.current_thread() is not self.thread:
            self.thread.join(10.0)


class SyncChanges(Iterator[StateChanged]):
    """What ``SyncHealthClient.changes()`` returns: a blocking iterator whose queue is registered at creation."""

    def __init__(self, client: SyncHealthClient, refreshes: bool) -> None:
        self._client = client
        self._queue: queue.Queue[Any] | None = queue.Queue(CHANGES_QUEUE_SIZE)
        with client._changes_lock:
            client._change_queues[self._queue] = refreshes

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StateChanged:
        pending = self._queue
        if pending is None:
            raise StopIteration
        event = pending.get()
        if event is _STOP:
            self.close()
            raise StopIteration
        assert isinstance(event, StateChanged)
        return event

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        pending, self._queue = self._queue, None
        if pending is not None:
            with self._client._changes_lock:
                self._client._change_queues.pop(pending, None)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _put_dropping_oldest(pending: queue.Queue[Any], item: object) -> None:
    if put_dropping_oldest(pending, item):
        log.warning("a SyncHealthClient changes() iterator is %d events behind: dropped the oldest", CHANGES_QUEUE_SIZE)


class SyncHealthClient:
    """Live health of every target, for synchronous code (see the module docstring).

    ::

        health = SyncHealthClient.connect("nats://127.0.0.1:4222")
        if health.is_available("orders-db"): ...
        health.close()

    or ``with SyncHealthClient.connect(...) as health:``. The arguments are
    :meth:`HealthClient.connect`'s, plus ``after_fork`` (``reconnect`` or ``raise``).
    """

    def __init__(
        self, url: str | None = None, *, after_fork: AfterFork = "reconnect", **options: Unpack[ClientOptions]
    ) -> None:
        if after_fork not in AFTER_FORK_CHOICES:
            raise ValueError(f"invalid after_fork {after_fork!r}: expected one of {', '.join(AFTER_FORK_CHOICES)}")
        for own in ("nc", "clock"):
            if own in options:
                raise TypeError(f"SyncHealthClient takes no {own}=: it runs its own connection on its own loop")
        self._options: dict[str, Any] = {"url": url, **options}
        # Argument errors (a bad prefix or policy) surface here, in the caller's thread.
        probe = HealthClient(**{k: v for k, v in self._options.items() if k != "url"}, url=url)
        self.connect_timeout = probe.connect_timeout
        self.prefix = probe.prefix
        self.after_fork: AfterFork = after_fork
        # (callback, wants refreshes) pairs; the bus listeners' flag is unused.
        self._listeners: list[tuple[SyncChangeCallback, bool]] = []
        self._bus_listeners: list[tuple[SyncBusCallback, bool]] = []
        # Each changes() iterator's queue, and whether it wants refreshes. A lock of its own: the
        # event-loop thread takes it, and _lock is held by threads waiting for that loop.
        self._change_queues: dict[queue.Queue[Any], bool] = {}
        self._changes_lock = threading.Lock()
        self._lock = threading.Lock()
        self._runner: _Runner | None = None
        self._dispatcher: _Dispatcher | None = None
        self._client: HealthClient | None = None
        self._closed = False
        self._pid = os.getpid()
        self._forked_from: int | None = None
        self._install_lazy()
        _CLIENTS.add(self)

    @classmethod
    def connect(
        cls, url: str | None = None, *, after_fork: AfterFork = "reconnect", **options: Unpack[ClientOptions]
    ) -> SyncHealthClient:
        """Connect and load every target's current state, returning within about ``connect_timeout``.

        Like :meth:`HealthClient.connect`: when NATS is down it returns with no states
        (the bus-loss policy applies) and keeps trying in the background.
        """
        return cls(url, after_fork=after_fork, **options).start()

    # ------------------------------------------------------------ life cycle

    def start(self) -> Self:
        """Start the background thread and connect (idempotent; in a forked child: connect anew)."""
        self._ensure_started()
        return self

    def _ensure_started(self) -> HealthClient:
        current = self._client
        if current is not None:
            return current
        with self._lock:
            if self._closed:
                raise RuntimeError("SyncHealthClient is closed (it was never connected)")
            if self._forked_from is not None and self.after_fork == "raise":
                raise ForkedClientError(
                    f"this SyncHealthClient was connected in process {self._forked_from} before it forked; "
                    f"process {os.getpid()} must not share its connection. Connect in the child instead "
                    "(e.g. gunicorn's post_fork hook, Celery's worker_process_init signal), or pass "
                    "after_fork='reconnect' to connect anew on first use"
                )
            if self._client is not None:
                return self._client
            runner, dispatcher = _Runner(), _Dispatcher()
            self._runner, self._dispatcher = runner, dispatcher
            try:
                client: HealthClient = runner.call(self._open(), self.connect_timeout + _START_MARGIN)
            except BaseException:
                self._runner = self._dispatcher = None
                runner.stop()
                dispatcher.stop()
                raise
            self._attach(client)
            self._client = client
            return client

    async def _open(self) -> HealthClient:
        client = await HealthClient.connect(**self._options)
        client.on_change(self._deliver_change, refreshes=True)  # filtered per listener
        client.on_bus_change(self._deliver_bus)
        return client

    def _attach(self, client: HealthClient) -> None:
        # Bound on the instance: the hot path is the async client's own one dict lookup.
        self.__dict__["is_available"] = client.is_available
        self.__dict__["feature_available"] = client.feature_available
        self.__dict__["pick"] = client.pick

    def _install_lazy(self) -> None:
        """Until connected (in a forked child: until first used), the first query connects."""
        self.__dict__.pop("is_available", None)
        self.__dict__.pop("feature_available", None)
        self.__dict__.pop("pick", None)

    def close(self) -> None:
        """Close the connection and stop both threads (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runner, dispatcher, client = self._runner, self._dispatcher, self._client
            # The closed client keeps answering from the last known states, like HealthClient.
            self._runner = self._dispatcher = None
        _CLIENTS.discard(self)
        with self._changes_lock:
            queues = list(self._change_queues)
        for pending in queues:
            _put_dropping_oldest(pending, _STOP)
        if runner is not None:
            if client is not None:
                with contextlib.suppress(Exception):
                    runner.call(client.close(), 10.0)
            runner.stop()
        if dispatcher is not None:
            dispatcher.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        """Runs in a forked child (os.register_at_fork): drop the parent's threads, never use its connection."""
        self._lock = threading.Lock()  # the parent's may have been held by a thread the child does not have
        self._changes_lock = threading.Lock()
        if self._closed:
            return
        runner, dispatcher, client = self._runner, self._dispatcher, self._client
        if runner is None and client is None:
            return  # never connected: nothing inherited
        self._forked_from = self._pid
        self._pid = os.getpid()
        self._runner = self._dispatcher = self._client = None
        self._install_lazy()
        if runner is not None:
            runner.abandon_in_child()
        _INHERITED.extend(x for x in (dispatcher, client) if x is not None)

    # ------------------------------------------------------------ queries

    def is_available(self, target: str) -> bool:
        """True when callers should use ``target`` now (see :meth:`HealthClient.is_available`).

        Once connected this is the async client's own method: one dict lookup.
        """
        return self._ensure_started().is_available(target)

    def feature_available(self, feature: str) -> bool:
        """False while any target providing ``feature`` is not available."""
        return self._ensure_started().feature_available(feature)

    def state(self, target: str) -> TargetState | None:
        """The current :class:`TargetState` of ``target``, or None if it was never heard of."""
        return self._ensure_started().state(target)

    def states(self) -> dict[str, TargetState]:
        """A copy of every known target's current state."""
        return self._ensure_started().states()

    def pick(self, group: str, *, read_only: bool = False) -> str:
        """A usable member of ``group`` by its policy (see :meth:`HealthClient.pick`).

        Once connected this is the async client's own method.
        """
        return self._ensure_started().pick(group, read_only=read_only)

    def group(self, name: str) -> GroupChanged | None:
        """The last GroupChanged of group ``name`` (None: never heard of)."""
        return self._ensure_started().group(name)

    def groups(self) -> dict[str, GroupChanged]:
        """A copy of every known group's last GroupChanged."""
        return self._ensure_started().groups()

    @property
    def bus(self) -> BusStatus:
        """How the link to the bus is doing (connected, stale, since when lost)."""
        return self._ensure_started().bus

    @property
    def forked_from(self) -> int | None:
        """The parent's pid when this client was inherited through ``fork()`` (None otherwise)."""
        return self._forked_from

    def wait_for(self, target: str, state: str | Iterable[str], *, timeout: float | None = None) -> TargetState:
        """Block until ``target`` is in ``state`` (one or several); TimeoutError after ``timeout`` seconds."""
        client = self._ensure_started()
        runner = self._runner
        if runner is None or self._closed:
            raise RuntimeError("SyncHealthClient is closed")
        margin = None if timeout is None else timeout + _START_MARGIN
        result: TargetState = runner.call(client.wait_for(target, state, timeout=timeout), margin)
        return result

    def drain(self, timeout: float | None = 10.0) -> None:
        """Wait until every callback has run for every event delivered so far."""
        self._ensure_started()
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.drain(timeout)

    def report_failure(self, target: str, kind: str = "other", error: BaseException | str | None = None) -> bool:
        """Tell the coordinator this instance saw ``target`` fail (see :meth:`HealthClient.report_failure`).

        Never blocks: the rate limit is applied in the calling thread and the publish is
        handed to the client's event loop. Before the client is connected (e.g. in a
        forked child not yet used) nothing is sent and False is returned.
        """
        validate_target(target)
        client, runner = self._client, self._runner
        if client is None or runner is None:
            return False
        report = client.reporter.build(target, kind, error)
        if report is None:
            return False
        try:
            runner.loop.call_soon_threadsafe(client._dispatch_report, report)
        except RuntimeError:  # the loop is closing
            client.reporter.unsent += 1
            return False
        return True

    @property
    def reporter(self) -> FailureReporter | None:
        """The connected client's failure reporter (switch and counters); None before connecting."""
        client = self._client
        return client.reporter if client is not None else None

    # ------------------------------------------------------------ callbacks

    def on_change(self, callback: SyncChangeCallback, *, refreshes: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` on the callback thread after every state change; returns unsubscribe().

        With ``refreshes=True`` it also gets the coordinator's re-announcements of an
        unchanged state (``healthbus.protocol.is_refresh(event)``).
        """
        return self._subscribe(self._listeners, callback, refreshes)

    def on_bus_change(self, callback: SyncBusCallback) -> Callable[[], None]:
        """Call ``callback(BusStatus)`` on the callback thread when the bus link is lost, stale or back."""
        return self._subscribe(self._bus_listeners, callback, True)

    def changes(self, *, refreshes: bool = False) -> SyncChanges:
        """Every state change from this call on, as a blocking iterator (``for event in health.changes()``).

        Registered by the call itself (nothing delivered after it is missed); it ends when
        the client is closed, or stops early on its ``close()``. With ``refreshes=True``
        it also yields the coordinator's re-announcements of an unchanged state.
        """
        self._ensure_started()
        return SyncChanges(self, refreshes)

    def _subscribe(
        self, listeners: list[Any], callback: Callable[[Any], object], refreshes: bool
    ) -> Callable[[], None]:
        call = getattr(callback, "__call__", None)  # noqa: B004 - async callable objects count too
        if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(call):
            raise TypeError(
                f"SyncHealthClient callbacks are plain functions, run on its callback thread; {callback!r} is async "
                "(use HealthClient in asyncio code)"
            )
        entry = (callback, refreshes)
        with self._lock:
            listeners.append(entry)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                listeners.remove(entry)

        return unsubscribe

    def _deliver_change(self, event: StateChanged) -> None:  # on the loop thread
        refresh = is_refresh(event)
        with self._changes_lock:
            queues = [q for q, wants in self._change_queues.items() if wants or not refresh]
        for pending in queues:
            _put_dropping_oldest(pending, event)
        self._deliver([cb for cb, wants in self._listeners if wants or not refresh], event, "on_change")

    def _deliver_bus(self, status: BusStatus) -> None:  # on the loop thread
        self._deliver([cb for cb, _ in self._bus_listeners], status, "on_bus_change")

    def _deliver(self, callbacks: list[Any], value: Any, what: str) -> None:
        dispatcher = self._dispatcher
        if callbacks and dispatcher is not None:
            dispatcher.put((callbacks, value, what))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._client is not None else "not connected"
        return f"<SyncHealthClient prefix={self.prefix!r} {state}>"


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        try:
            client._after_fork_in_child()
        except Exception:  # a fork hook must never fail the fork
            log.exception("healthbus: resetting a SyncHealthClient after fork failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
