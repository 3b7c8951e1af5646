"""Shared pieces of the reliability (chaos) tests: configs, a result driver, the audit.

The audit is the heart of every test here: it reads the whole state stream with
``StateStream.history`` and checks, per target, what docs/reliability.md promises — ``seq`` runs
1..N without a gap or a repeat, each event's ``previous`` is the state of the event
before, and ``at`` never goes backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable
from datetime import datetime, timedelta

import nats.errors
from nats.aio.client import Client

from healthbus.bus import DirectGetError, StateStream
from healthbus.coordinator import is_refresh
from healthbus.protocol import Outcome, ProbeResult, StateChanged, Subjects, encode, utcnow
from healthbus.subscribers import HealthClient


def config_text(
    targets: Iterable[str],
    *,
    prefix: str = "healthbus",
    replicas: int = 1,
    lease: str = "0s",
    stale_after: str = "60s",
    threshold: int = 1,
    kind: str = "tcp",
    url: str = "tcp://127.0.0.1:1",
    extra_defaults: str = "",
) -> str:
    """A configuration with the given targets and quick, deterministic decisions."""
    text = (
        f'[bus]\nprefix = "{prefix}"\n\n'
        "[defaults]\n"
        'interval = "1s"\ntimeout = "500ms"\n'
        f"failure_threshold = {threshold}\nsuccess_threshold = {threshold}\n"
        f'stale_after = "{stale_after}"\n'
        'backoff = { base = "300ms", multiplier = 2.0, max = "1s", jitter = "none" }\n'
        "flap = { enabled = false }\n"
        f"{extra_defaults}\n"
        "[coordinator]\n"
        f'tick = "50ms"\nlease_ttl = "{lease}"\nstream_replicas = {replicas}\n\n'
    )
    for name in targets:
        text += f'[[targets]]\nname = "{name}"\nkind = "{kind}"\nurl = "{url}"\n\n'
    return text


def result(target: str, outcome: Outcome, probe: str = "p1", observed_at: datetime | None = None) -> bytes:
    """One encoded ProbeResult, as a probe worker publishes it (observed now, unless given)."""
    return encode(
        ProbeResult(
            target=target,
            probe=probe,
            outcome=outcome,
            latency_ms=1.0,
            observed_at=observed_at or utcnow(),
            error_kind="refused" if outcome == "fail" else None,
            error="connection refused" if outcome == "fail" else None,
        )
    )


async def publish_round(nc: Client, subjects: Subjects, targets: Iterable[str], outcome: Outcome) -> None:
    """Publish ``outcome`` once for every target and flush (bounded: the bus may be failing over)."""
    for name in targets:
        await nc.publish(subjects.probe(name, "p1"), result(name, outcome))
    # Mid-fault a flush may time out; the driver goes on.
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)


async def read_history(nc: Client, prefix: str = "healthbus", timeout: float = 20.0) -> list[StateChanged]:
    """The whole audit log of ``prefix``, in stream order.

    Tried again while JetStream does not answer: after a node loss the stream may still be
    electing its leader, which answers the direct gets.
    """
    reader = StateStream(nc, prefix, api_timeout=2.0)
    async with asyncio.timeout(timeout):
        while True:
            try:
                return [event async for event in reader.history(timeout=timeout)]
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, DirectGetError):
                await asyncio.sleep(0.2)


async def final_rounds(
    nc: Client, subjects: Subjects, targets: list[str], health: HealthClient, timeout: float = 20.0
) -> list[StateChanged]:
    """A last warn round then a last pass round; the history once it and ``health`` end on the final pass.

    With thresholds of 1 and flap detection off (:func:`config_text`), warn and pass alternate
    degraded and healthy with the breaker closed, no timer involved: the pass is the last event.

    A driver's last rounds may still be on their way when it stops: waiting for each target to
    be healthy could be answered by one of those, with the final rounds' events still to come.
    The event the final pass decided is known by its evidence (observed after the final warn
    round was flushed); every target's chain must end on it and the client must have seen it.
    """
    await publish_round(nc, subjects, targets, "warn")
    final_at = utcnow() - timedelta(microseconds=10)  # the kept observed_at is a float: sub-µs error
    await publish_round(nc, subjects, targets, "pass")

    def settled(name: str, chains: dict[str, list[StateChanged]]) -> bool:
        chain, seen = chains.get(name), health.state(name)
        if not chain or seen is None or seen.seq != chain[-1].seq or chain[-1].state != "healthy":
            return False
        evidence = chain[-1].evidence.get("p1")
        return evidence is not None and evidence.outcome == "pass" and evidence.at >= final_at

    async with asyncio.timeout(timeout):
        while True:
            events = await read_history(nc)
            if all(settled(name, by_target(events)) for name in targets):
                return events
            await asyncio.sleep(0.1)


def by_target(events: Iterable[StateChanged]) -> dict[str, list[StateChanged]]:
    """The events of each target, in stream order."""
    out: dict[str, list[StateChanged]] = {}
    for event in events:
        out.setdefault(event.target, []).append(event)
    return out


def audit(events: list[StateChanged]) -> str | None:
    """Why one target's events are not a clean chain, or None when they are.

    Clean: ``seq`` 1..N in stream order, ``previous`` equal to the state before (the
    first one's previous is ``unknown``), ``at`` never decreasing, and each event changes
    something (state, breaker, attempt or flapping: nothing is announced twice) — except
    the coordinator's retention refresh, which re-announces an unchanged state on purpose —
    and each names the coordinator that stored it and its lease term, which never goes
    down: no deposed leader stored an event after the next leader's first one.
    """
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        return f"seq not 1..{len(events)}: {seqs}"
    if events and events[0].previous != "unknown":
        return f"first event's previous is {events[0].previous}"
    for before, after in itertools.pairwise(events):
        if after.previous != before.state:
            return f"seq {after.seq}: previous {after.previous} but seq {before.seq} was {before.state}"
        if after.at < before.at:
            return f"seq {after.seq} decided at {after.at} before seq {before.seq} ({before.at})"
        if _shape(after) == _shape(before) and not is_refresh(after):
            return f"seq {after.seq} repeats seq {before.seq} ({after.state}, {after.breaker}): a re-announcement"
        if (after.term or 0) < (before.term or 0):
            return (
                f"seq {after.seq} stored by {after.coordinator} under term {after.term}"
                f" after seq {before.seq} by {before.coordinator} under term {before.term}"
            )
    for event in events:
        if event.coordinator is None or event.term is None:
            return f"seq {event.seq} names no coordinator or term"
    return None


def _shape(event: StateChanged) -> tuple[str, str, int, bool]:
    return (event.state, event.breaker, event.attempt, event.flapping)
