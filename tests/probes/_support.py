"""Helpers for the probe tests: collecting published results, building configs, outage round trips."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime

from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bus import sync_subscriptions
from healthbus.bus.embedded import Restartable
from healthbus.probes import Checker
from healthbus.protocol import Config, ProbeResult, Subjects, decode_probe_result, load_config_text


def unique_prefix() -> str:
    """A subject prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def config_for(prefix: str, targets_toml: str, *, defaults: str = "", probes: str = "") -> Config:
    """A Config with ``prefix`` and the given ``[[targets]]`` TOML."""
    text = f'[bus]\nprefix = "{prefix}"\n[defaults]\n{defaults}\n[probes]\n{probes}\n{targets_toml}'
    return load_config_text(text, source="test.toml", env={})


def result_of(target: str, outcome: str | None = None) -> Callable[[ProbeResult], bool]:
    """A predicate: a result of ``target`` (with ``outcome``, when given)."""

    def matches(result: ProbeResult) -> bool:
        return result.target == target and (outcome is None or result.outcome == outcome)

    return matches


def result_since(target: str, since: datetime) -> Callable[[ProbeResult], bool]:
    """A predicate: a result of ``target`` observed at or after ``since``."""

    def matches(result: ProbeResult) -> bool:
        return result.target == target and result.observed_at >= since

    return matches


class Collector:
    """Every ProbeResult published under a prefix, with its raw bytes, and waiting on them."""

    def __init__(self, prefix: str) -> None:
        self.subjects = Subjects(prefix)
        self.raw: list[bytes] = []
        self.results: list[ProbeResult] = []
        self._changed = asyncio.Condition()

    async def subscribe(self, nc: Client) -> None:
        """Start collecting from ``nc``."""
        await nc.subscribe(self.subjects.probe_all, cb=self._on_msg)
        await sync_subscriptions(nc)

    async def _on_msg(self, msg: Msg) -> None:
        result = decode_probe_result(msg.data, subject_target=self.subjects.probe_target(msg.subject))
        async with self._changed:
            self.raw.append(bytes(msg.data))
            self.results.append(result)
            self._changed.notify_all()

    def mark(self) -> int:
        """An index: :meth:`wait_for` with ``after=mark()`` only sees results from now on."""
        return len(self.results)

    async def wait_for(
        self, predicate: Callable[[ProbeResult], bool], *, after: int = 0, timeout: float = 15.0
    ) -> ProbeResult:
        """The first result from index ``after`` on that satisfies ``predicate``."""

        def found() -> ProbeResult | None:
            return next((r for r in self.results[after:] if predicate(r)), None)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None)
        except TimeoutError:
            seen = [(r.target, r.outcome, r.error_kind) for r in self.results[after:][-20:]]
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for a result ({len(self.results) - after} others); "
                f"seen (the last 20): {seen!r}"
            ) from None
        result = found()
        assert result is not None
        return result

    async def wait(self, condition: Callable[[list[ProbeResult]], bool], timeout: float, what: str) -> None:
        """Until ``condition(results)`` holds, woken by each result; AssertionError naming ``what`` and the results."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: condition(self.results))
        except TimeoutError:
            seen = [(r.target, r.probe, r.outcome) for r in self.results]
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; seen: {seen!r}") from None

    def of(self, target: str) -> list[ProbeResult]:
        """Every result of ``target`` so far."""
        return [r for r in self.results if r.target == target]


async def assert_refused_while_stopped(checker: Checker, server: Restartable) -> None:
    """With ``server`` stopped, ``checker`` fails as refused; started again, it passes."""
    server.stop()
    down = await checker.check()
    assert (down.outcome, down.error_kind) == ("fail", "refused"), down
    server.start()
    again = await checker.check()
    assert again.outcome == "pass", again
