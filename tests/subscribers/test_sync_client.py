"""SyncHealthClient against a real nats-server: threads, callbacks, and processes forked after connect."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import StateChanged
from healthbus.subscribers import BusStatus, ForkedClientError, HealthView, SyncHealthClient
from healthbus.subscribers.testing import FakeHealthClient
from tests.helpers import open_event, state_changed

from ._sync_support import Worker, publish, wait_until_sync

pytestmark = pytest.mark.nats

PREFIX = "hbsync"
# connect() returns once every current state is loaded, or after connect_timeout: generous
# here, so a loaded machine cannot make a test see "not loaded yet" (it returns in ms otherwise).


def test_follows_states_and_calls_back_on_one_thread_in_order(nats_server: EmbeddedNats) -> None:
    """Loaded at connect, live afterwards; callbacks on one background thread, in arrival order."""
    publish(nats_server.url, PREFIX, state_changed("orders-db", 1, "healthy", features=["orders"]))
    with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10) as health:
        assert isinstance(health, HealthView)
        assert health.is_available("orders-db")
        assert health.feature_available("orders")
        assert health.bus.connected
        seen: list[tuple[int, int, str]] = []

        def record(event: StateChanged) -> None:
            known = health.state(event.target)
            seen.append((event.seq, known.seq if known else 0, threading.current_thread().name))

        health.on_change(record)
        events = [open_event("orders-db", 2, retry_in=5)]
        events += [state_changed("orders-db", seq, "healthy" if seq % 2 else "unavailable") for seq in range(3, 12)]
        publish(nats_server.url, PREFIX, *events)
        wait_until_sync(lambda: getattr(health.state("orders-db"), "seq", 0) == 11, 10, "seq 11")
        assert health.wait_for("orders-db", "healthy", timeout=10).seq == 11
        health.drain()
        assert [s[0] for s in seen] == list(range(2, 12))
        # The state was updated before each callback ran.
        assert all(known >= seq for seq, known, _ in seen), seen
        threads = {s[2] for s in seen}
        assert len(threads) == 1
        assert threads != {threading.current_thread().name}
        assert health.is_available("orders-db")  # seq 11: healthy
        with pytest.raises(TimeoutError, match="did not become"):
            health.wait_for("never", "healthy", timeout=0.2)
    # Closed: it still answers from the last known states; waiting is over.
    assert health.state("orders-db").seq == 11  # type: ignore[union-attr]
    assert health.is_available("orders-db")
    with pytest.raises(RuntimeError, match="closed"):
        health.wait_for("orders-db", "healthy", timeout=1)


def test_slow_or_failing_callback_never_delays_state_updates(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback blocked on something does not stop is_available from moving on; a failing one is logged."""
    caplog.set_level(logging.ERROR, logger="healthbus.subscribers")
    publish(nats_server.url, PREFIX, state_changed("cache", 1, "healthy"))
    with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10) as health:
        release = threading.Event()
        calls: list[int] = []

        def slow(event: StateChanged) -> None:
            calls.append(event.seq)
            release.wait(30)

        def failing(event: StateChanged) -> None:
            raise RuntimeError("callback bug")

        health.on_change(failing)
        health.on_change(slow)
        publish(nats_server.url, PREFIX, open_event("cache", 2, retry_in=5), state_changed("cache", 3, "healthy"))
        # seq 3 arrives while the slow callback is still blocked on seq 2.
        wait_until_sync(lambda: getattr(health.state("cache"), "seq", 0) == 3, 10, "seq 3")
        assert health.is_available("cache")
        release.set()
        health.drain()
        assert calls == [2, 3]
    # Each failure logged once, with its traceback, and the callback thread went on.
    failures = [r for r in caplog.records if r.name == "healthbus.subscribers" and "callback" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [f"on_change callback {failing!r} failed"] * 2
    assert all(r.exc_info is not None and str(r.exc_info[1]) == "callback bug" for r in failures)


def test_is_available_from_many_threads(nats_server: EmbeddedNats) -> None:
    """Any thread may ask; every thread sees the verdict once it arrived."""
    publish(nats_server.url, PREFIX, state_changed("search", 1, "healthy"))
    with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10) as health:
        flipped = threading.Event()
        answers: list[bool] = []
        lock = threading.Lock()

        def ask() -> None:
            assert health.is_available("search")
            flipped.wait(10)
            health.wait_for("search", "unavailable", timeout=10)
            with lock:
                answers.append(health.is_available("search"))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        publish(nats_server.url, PREFIX, open_event("search", 2, retry_in=5))
        flipped.set()
        for t in threads:
            t.join(20)
        assert answers == [False] * 4


def test_nats_down_at_start_then_up(nats_server: EmbeddedNats) -> None:
    """connect() returns within its bound when NATS is down; the client goes live once it is up."""
    publish(nats_server.url, PREFIX, state_changed("cache", 1, "healthy"))
    nats_server.stop()
    bus: list[BusStatus] = []
    before = set(threading.enumerate())
    health = SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=0.5)
    started = [t for t in threading.enumerate() if t not in before and t.name.startswith("healthbus-sync-")]
    assert sorted(t.name for t in started) == ["healthbus-sync-callbacks", "healthbus-sync-client"]
    try:
        assert not health.is_available("cache")
        assert not health.bus.connected
        health.on_bus_change(bus.append)
        nats_server.start()
        assert health.wait_for("cache", "healthy", timeout=20).seq == 1
        wait_until_sync(lambda: health.bus.connected, 10, "the bus link")
        health.drain()
        assert bus
        assert bus[-1].connected
    finally:
        health.close()
    # close() returns once its event-loop thread and its callback thread have ended.
    assert [t.name for t in started if t.is_alive()] == []
    health.close()  # idempotent
    assert "closed" in repr(health)
    assert health.is_available("cache")  # still answers from the last known state


def test_bad_arguments_fail_in_the_caller() -> None:
    """A bad policy, after_fork or an async callback is an error at once, not a retry loop in a thread."""
    with pytest.raises(ValueError, match="after_fork"):
        SyncHealthClient(after_fork="share")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_bus_loss"):
        SyncHealthClient(on_bus_loss="maybe")  # type: ignore[arg-type]
    health = SyncHealthClient()  # not connected: nothing runs until first use

    async def callback(event: StateChanged) -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        health.on_change(callback)
    health.close()


# ---------------------------------------------------------------- fork


def _inherited_socket_fds(health: SyncHealthClient) -> list[int]:
    runner = health._runner
    assert runner is not None
    return [key.fd for key in runner.selector.get_map().values()]


def test_forked_child_reconnects_and_never_uses_the_parents_socket(nats_server: EmbeddedNats) -> None:
    """fork() after connect: the child's inherited descriptors point at /dev/null, it connects anew on first
    use and sees verdicts published after the fork; the parent's connection keeps working."""
    publish(nats_server.url, PREFIX, state_changed("orders-db", 1, "healthy"))
    with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10) as health:
        calls: list[int] = []
        health.on_change(lambda e: calls.append(e.seq))  # registered before the fork: kept in the child
        inherited = _inherited_socket_fds(health)
        # The loop's wake-up socket and the TCP connection to NATS, at least.
        assert sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in inherited) >= 2
        parent = os.getpid()

        def serve(request: dict[str, Any]) -> Any:
            if request["op"] == "fds":
                return {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in inherited}
            if request["op"] == "wait":
                got = health.wait_for("orders-db", request["state"], timeout=10)
                health.drain()
                return {"seq": got.seq, "available": health.is_available("orders-db"), "calls": calls}
            return {"forked_from": health.forked_from, "pid": os.getpid()}

        worker = Worker(serve)
        try:
            fds = worker.ask(op="fds")
            assert set(fds.values()) == {os.devnull}, fds
            assert worker.ask(op="who") == {"forked_from": parent, "pid": worker.pid}
            # First use in the child connected it anew: it loads the current state...
            assert worker.ask(op="wait", state="healthy")["seq"] == 1
            # ...and follows what is published after the fork.
            publish(nats_server.url, PREFIX, open_event("orders-db", 2, retry_in=5))
            answer = worker.ask(op="wait", state="unavailable")
            assert answer["seq"] == 2
            assert answer["available"] is False
            assert 2 in answer["calls"]
        finally:
            assert worker.stop() == 0
        # The parent's own connection was not disturbed by the child.
        publish(nats_server.url, PREFIX, state_changed("orders-db", 3, "healthy"))
        wait_until_sync(lambda: getattr(health.state("orders-db"), "seq", 0) == 3, 10, "seq 3 in the parent")
        assert health.forked_from is None
        health.drain()
        assert calls == [2, 3]


def test_forked_child_with_after_fork_raise_gets_a_clear_error(nats_server: EmbeddedNats) -> None:
    """after_fork='raise': any use in the child says what to do instead."""
    publish(nats_server.url, PREFIX, state_changed("orders-db", 1, "healthy"))
    with SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10, after_fork="raise") as health:

        def serve(request: dict[str, Any]) -> Any:
            try:
                health.is_available("orders-db")
            except ForkedClientError as exc:
                return str(exc)
            return "no error"

        worker = Worker(serve)
        try:
            message = worker.ask(op="use")
        finally:
            assert worker.stop() == 0
        assert f"connected in process {os.getpid()} before it forked" in message
        assert "post_fork" in message
        assert health.is_available("orders-db")  # the parent is fine


def test_fake_client_stands_in_for_the_sync_client() -> None:
    """Code written against the sync client's read surface runs with FakeHealthClient in tests."""

    def handler(health: HealthView) -> str:
        return "normal" if health.is_available("orders-db") else "degraded"

    fake = FakeHealthClient({"orders-db": "healthy"})
    assert handler(fake) == "normal"
    fake.set_state("orders-db", "unavailable")
    assert handler(fake) == "degraded"
