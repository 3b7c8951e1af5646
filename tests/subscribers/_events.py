"""Helpers for subscriber tests: publishing StateChanged events like the coordinator, with a seq chain per target."""

from __future__ import annotations

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from healthbus.bus import ensure_stream
from healthbus.protocol import State, StateChanged, StreamSettings
from tests.helpers import publish_states, state_changed


class Publisher:
    """Publishes StateChanged into the state stream of ``prefix`` with ``Nats-Msg-Id`` (as the coordinator does)."""

    def __init__(self, js: JetStreamContext, prefix: str) -> None:
        self.js = js
        self.prefix = prefix
        self.settings = StreamSettings.for_prefix(prefix)
        self.seqs: dict[str, int] = {}
        self.last: dict[str, State] = {}
        self.stored: dict[str, StateChanged] = {}  # the last acked event per target, in ack order

    def recent(self) -> list[StateChanged]:
        """The last stored event of every target, oldest first (a digest's ``events``, as the coordinator's outbox)."""
        return list(self.stored.values())

    async def ensure(self) -> None:
        """Create the state stream."""
        await ensure_stream(self.js, self.settings)

    async def publish(self, target: str, state: State, **kw: object) -> StateChanged:
        """Publish the next event for ``target``."""
        seq = self.seqs.get(target, 0) + 1
        ev = state_changed(target, seq, state, previous=self.last.get(target, "unknown"), **kw)  # type: ignore[arg-type]
        # Sent counts from before the ack, as the coordinator's digest counts it ("stored, or
        # on its way"): a digest taken while the ack is awaited must not name the old seq.
        self.seqs[target] = seq
        self.last[target] = state
        for attempt in range(3):
            try:
                await self.publish_event(ev)
                self.stored.pop(target, None)
                self.stored[target] = ev
                break
            except NatsTimeoutError:
                # No ack in time (a server just restarted, on a busy machine): send it again,
                # as the coordinator's outbox does; Nats-Msg-Id stores it once.
                if attempt == 2:
                    raise
        return ev

    async def publish_event(self, ev: StateChanged) -> None:
        """Publish a ready-made event."""
        await publish_states(self.js, self.prefix, [ev], ensure=False)
