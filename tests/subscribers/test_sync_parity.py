"""SyncHealthClient and HealthClient offer the same public surface (names and parameters), and the sync face's
``changes()`` / ``on_change(refreshes=...)`` behave like the async face's, against a real nats-server."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import StateChanged
from healthbus.subscribers import HealthClient, SyncHealthClient
from tests.helpers import state_changed

from ._sync_support import publish, wait_until_sync

PREFIX = "hbparity"

#: Public names one face has and the other has not, with why (anything else is drift).
ONLY_ASYNC = {
    "nc": "the sync client runs its own connection on its own event loop",
    "clock": "the sync client takes no clock= (its loop runs on its own thread): adapters on it use SystemClock",
}
ONLY_SYNC = {
    "forked_from": "only a sync client is inherited through fork()",
    "reporter": "on HealthClient an attribute set per instance (the same FailureReporter)",
}
#: Parameters one face has and the other has not, with why.
EXTRA_PARAMETERS = {
    ("connect", "after_fork"): "what a forked child does: only the sync client is fork-safe",
    ("drain", "timeout"): "the sync drain waits on another thread: bounded",
}


def _public(cls: type) -> set[str]:
    # __init__ is not compared: the sync one takes connect()'s options as **options (ClientOptions).
    return {name for name in dir(cls) if not name.startswith("_")}


def _parameters(cls: type, name: str) -> dict[str, tuple[Any, Any]]:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, classmethod | staticmethod):
        member = member.__func__
    if isinstance(member, property) or not callable(member):
        return {}
    signature = inspect.signature(member)
    return {p.name: (p.kind, p.default) for p in signature.parameters.values()}


def test_both_faces_have_the_same_public_signatures() -> None:
    """Every public method of one face exists on the other with the same parameters (names, kinds, defaults)."""
    async_names, sync_names = _public(HealthClient), _public(SyncHealthClient)
    assert async_names - sync_names == set(ONLY_ASYNC), async_names - sync_names
    assert sync_names - async_names == set(ONLY_SYNC), sync_names - async_names
    drift = []
    for name in sorted(async_names & sync_names):
        on_async, on_sync = _parameters(HealthClient, name), _parameters(SyncHealthClient, name)
        for parameter in set(on_async) ^ set(on_sync):
            if (name, parameter) not in EXTRA_PARAMETERS:
                drift.append(f"{name}: {parameter} only on one face")
        for parameter in set(on_async) & set(on_sync):
            if on_async[parameter] != on_sync[parameter]:
                drift.append(f"{name}({parameter}): async {on_async[parameter]} != sync {on_sync[parameter]}")
    assert not drift, drift
    for kind in ("on_change", "changes"):
        assert "refreshes" in _parameters(SyncHealthClient, kind)


@pytest.mark.nats
def test_sync_changes_and_refreshes(nats_server: EmbeddedNats) -> None:
    """changes() is registered at the call, yields in order, ends when the client closes; refreshes reach only
    the iterators and callbacks that ask for them."""
    first = state_changed("pg", 1, "healthy")
    publish(nats_server.url, PREFIX, first)
    health = SyncHealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=10)
    try:
        changes = health.changes()
        with_refreshes = health.changes(refreshes=True)
        plain: list[int] = []
        everything: list[int] = []
        health.on_change(lambda event: plain.append(event.seq))
        health.on_change(lambda event: everything.append(event.seq), refreshes=True)
        refresh = state_changed("pg", 2, "healthy", previous="healthy", reason=first.reason, unchanged_since=first.at)
        publish(nats_server.url, PREFIX, refresh, state_changed("pg", 3, "unavailable", previous="healthy"))
        assert next(changes).seq == 3
        assert [next(with_refreshes).seq, next(with_refreshes).seq] == [2, 3]
        wait_until_sync(lambda: getattr(health.state("pg"), "seq", 0) == 3, 10, "seq 3")
        health.drain()
        assert (plain, everything) == ([3], [2, 3])

        ended: list[StateChanged] = []
        reader = threading.Thread(target=lambda: ended.extend(changes))
        reader.start()
    finally:
        health.close()
    reader.join(10)
    assert not reader.is_alive()  # the iteration ended with the client
    assert ended == []
    with_refreshes.close()
    assert list(with_refreshes) == []
