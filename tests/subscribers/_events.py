"""Helpers for subscriber tests: building StateChanged events and publishing them like the coordinator."""

from __future__ import annotations

from datetime import datetime, timedelta

from nats.js import JetStreamContext

from healthbus.protocol import BreakerState, State, StateChanged, StreamSettings, Subjects, encode, utcnow
from healthbus.subscribers import ensure_stream

BREAKER: dict[str, BreakerState] = {
    "unknown": "closed",
    "healthy": "closed",
    "degraded": "closed",
    "unavailable": "open",
    "recovering": "half_open",
}


def event(
    target: str,
    seq: int,
    state: State,
    *,
    previous: State = "unknown",
    features: list[str] | None = None,
    retry_in: float | None = None,
    reason: str = "test",
) -> StateChanged:
    """A StateChanged as the coordinator would emit it."""
    now = utcnow()
    retry_at: datetime | None = now + timedelta(seconds=retry_in) if retry_in is not None else None
    return StateChanged(
        target=target,
        seq=seq,
        at=now,
        previous=previous,
        state=state,
        breaker=BREAKER[state],
        reason=reason,
        retry_at=retry_at,
        features=features or [],
    )


class Publisher:
    """Publishes StateChanged into the state stream of ``prefix`` with ``Nats-Msg-Id`` (as the coordinator does)."""

    def __init__(self, js: JetStreamContext, prefix: str) -> None:
        self.js = js
        self.subjects = Subjects(prefix)
        self.settings = StreamSettings.for_prefix(prefix)
        self.seqs: dict[str, int] = {}
        self.last: dict[str, State] = {}

    async def ensure(self) -> None:
        """Create the state stream."""
        await ensure_stream(self.js, self.settings)

    async def publish(self, target: str, state: State, **kw: object) -> StateChanged:
        """Publish the next event for ``target``."""
        seq = self.seqs.get(target, 0) + 1
        ev = event(target, seq, state, previous=self.last.get(target, "unknown"), **kw)  # type: ignore[arg-type]
        await self.publish_event(ev)
        self.seqs[target] = seq
        self.last[target] = state
        return ev

    async def publish_event(self, ev: StateChanged) -> None:
        """Publish a ready-made event."""
        await self.js.publish(self.subjects.state(ev.target), encode(ev), headers={"Nats-Msg-Id": ev.msg_id})
