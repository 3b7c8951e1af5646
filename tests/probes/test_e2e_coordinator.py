"""End to end with the real coordinator: while its breaker is open, no worker checks before retry_at."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import ProbeResult, StateChanged, Subjects, decode_state_changed
from tests.e2e._stack import Stack, fast_config
from tests.harness._redis import RedisServer
from tests.probes._support import Collector, result_of, result_since

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.redis, pytest.mark.slow]

#: Delivery of a verdict to the workers takes milliseconds; a check may be in flight.
GRACE = timedelta(seconds=0.5)


async def test_workers_follow_the_breaker(nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path) -> None:
    """Redis stops: the breaker opens; both workers stay silent until retry_at, trial at once, reopen
    with a longer backoff, silent again; Redis back: healthy again."""
    stack = Stack(nats_server.url, fast_config([("cache", "redis", redis_server.url)], backoff_base="2s"), tmp_path)
    nc = await nats.connect(nats_server.url)
    results = Collector("healthbus")
    await results.subscribe(nc)
    states: list[StateChanged] = []

    async def on_state(msg: Msg) -> None:
        states.append(decode_state_changed(msg.data))

    await nc.subscribe(Subjects("healthbus").state_all, cb=on_state)
    try:
        await stack.start()
        # A worker started before the coordinator created the stream follows it within
        # half a second of its creation: let a second of traffic pass after the first verdict.
        first = await _wait_state(results, states, lambda e: e.seq == 1)
        for worker in ("w1", "w2"):
            await results.wait_for(_passed_from(worker, first.at + timedelta(seconds=1)), timeout=30)
        redis_server.stop()
        mark = results.mark()
        opens: list[StateChanged] = []
        for _ in range(2):
            await results.wait_for(result_of("cache", "fail"), after=mark, timeout=30)
            after_seq = opens[-1].seq if opens else 0
            opened = await _wait_state(results, states, _opened_after(after_seq))
            opens.append(opened)
            assert opened.retry_at is not None
            trial = await results.wait_for(result_since("cache", opened.retry_at), timeout=30)
            assert trial.observed_at - opened.retry_at < timedelta(seconds=2)
            held = [r for r in results.of("cache") if opened.at + GRACE < r.observed_at < opened.retry_at]
            assert held == [], f"checked while open: {held}"
            mark = results.mark()
        assert opens[1].retry_at is not None
        assert opens[0].retry_at is not None
        assert opens[1].retry_at - opens[1].at > opens[0].retry_at - opens[0].at  # the backoff grew
        redis_server.start()
        await _wait_state(results, states, lambda e: e.state == "healthy" and e.seq > opens[-1].seq)
        metrics = await stack.metrics("w1")
        assert 'healthbus_probe_skipped_total{reason="breaker_open",target="cache"}' in metrics
    except BaseException:
        print(stack.logs())
        raise
    finally:
        codes = await stack.stop()
        await nc.close()
    assert codes["w1"] == 0
    assert codes["w2"] == 0


def _opened_after(seq: int) -> Callable[[StateChanged], bool]:
    def matches(event: StateChanged) -> bool:
        return event.breaker == "open" and event.seq > seq

    return matches


def _passed_from(worker: str, since: datetime) -> Callable[[ProbeResult], bool]:
    def matches(result: ProbeResult) -> bool:
        return result.probe == worker and result.outcome == "pass" and result.observed_at >= since

    return matches


async def _wait_state(
    results: Collector, states: list[StateChanged], predicate: Callable[[StateChanged], bool]
) -> StateChanged:
    """The first StateChanged satisfying ``predicate``, waiting on result traffic as the clock."""

    def found() -> StateChanged | None:
        return next((e for e in states if predicate(e)), None)

    # States arrive on their own subscription; results arrive several times a second, so
    # waiting for "a result after which the state is there" waits on real traffic.
    await results.wait_for(lambda _r: found() is not None, timeout=30)
    event = found()
    assert event is not None
    return event
