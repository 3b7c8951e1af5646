"""The hot path: ProbeResult messages in, decisions out.

Checks, cheapest first: the subject names a configured target (before decoding, so
nothing from the wire creates state for an unconfigured target) and a probe, size,
decoding, subject/target and subject/probe match (a credential allowed to publish only
its own probe's subjects speaks only for its own vantage point); then the core decides.
Bad input is counted and logged at a bounded rate by :class:`~._counters.Counters`;
transitions go to ``emit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec
from nats.aio.msg import Msg

from healthbus.coordinator._core import Decider, Now, Rejected
from healthbus.coordinator._counters import Counters
from healthbus.coordinator._natsinternals import QueueBatcher
from healthbus.protocol import MAX_MESSAGE_BYTES, ProbeResult, StateChanged, probe_token

#: Most queued messages handled in one callback before yielding to the event loop.
BATCH_LIMIT: Final = 512

#: Probe ids whose subject token is remembered (the check runs once per result; workers are few).
TOKEN_CACHE: Final = 4096

#: The hot path decodes with its own msgspec decoder rather than
#: :func:`healthbus.protocol.decode_probe_result`: ``handle_probe`` has already checked
#: the size and matched the subject's target, so only the decoding itself is left, and
#: two Python calls per result are a measurable share of the per-result cost. Same type,
#: so the same validation (the target-name pattern included) and the same error text.
_probe_decoder: Final = msgspec.json.Decoder(ProbeResult)


class Intake:
    """Decodes and decides the results of one term as active coordinator."""

    def __init__(
        self,
        decider: Decider,
        counters: Counters,
        *,
        probe_base: str,
        now: Callable[[], Now],
        emit: Callable[[Iterable[StateChanged]], None],
        batcher: QueueBatcher | None = None,
        observe: Callable[[ProbeResult], None] | None = None,
        foreign: Callable[[str], bool] | None = None,
    ) -> None:
        self.decider = decider
        self.counters = counters
        self._known = decider.names
        self._probe_base_len = len(probe_base)
        self._now = now
        self._emit = emit
        self._batcher = batcher
        self._observe = observe
        self._foreign = foreign
        """With partitions: True for a name of another partition (ignored: not counted, not dropped)."""
        self._tokens: dict[str, str] = {}  # probe id -> its subject token

    def on_probe(self, msg: Msg) -> None:
        """This message, then whatever else is already queued on the subscription."""
        self.handle_probe(msg.subject, msg.data)
        # Batch: take whatever else is already queued without a task switch and a
        # coroutine per message (that overhead is as large as decoding and deciding).
        batcher = self._batcher
        if batcher is not None:
            batcher.take(BATCH_LIMIT, self.handle_probe)

    def handle_probe(self, subject: str, data: bytes) -> None:
        """Decode and decide one ProbeResult message (synchronous: the hot path).

        The subject names the target and the probe (``<prefix>.probe.<target>.<probe>``);
        the payload must agree with both."""
        counters = self.counters
        counters.handled += 1
        try:
            name, dot, token = subject[self._probe_base_len :].partition(".")
            if name not in self._known:
                if self._foreign is not None and self._foreign(name):
                    counters.handled -= 1  # another partition's leader handles it
                    return
                counters.drop(
                    "unknown_target", f"no target {name[:80]!r} in the configuration (subject {subject[:120]})"
                )
                return
            if not dot:  # only the subscription's own subjects arrive: a caller passed another one
                counters.drop("malformed", f"{subject[:120]} names no probe")
                return
            if len(data) > MAX_MESSAGE_BYTES:
                counters.drop("oversized", f"{len(data)} bytes on {subject}")
                return
            try:
                result = _probe_decoder.decode(data)
            except msgspec.DecodeError as exc:
                # The text decode_probe_result's ProtocolError would carry.
                counters.drop("malformed", f"on {subject}: {f'invalid ProbeResult: {exc}'[:300]}")
                return
            if result.target != name:
                counters.drop("subject_mismatch", f"target {result.target!r} published on {subject}")
                return
            expected = self._tokens.get(result.probe)
            if expected is None:
                if len(self._tokens) >= TOKEN_CACHE:
                    self._tokens.clear()  # bounded whatever ids arrive
                expected = self._tokens[result.probe] = probe_token(result.probe)
            if expected != token:
                counters.drop("probe_mismatch", f"probe {result.probe[:80]!r} published on {subject[:160]}")
                return
            if result.probe != token:
                # One vantage point per subject token: ids that differ only in characters
                # a token cannot hold ("web.1", "web 1") are the same vantage point.
                result = msgspec.structs.replace(result, probe=token)
            sample = (counters.handled & 63) == 0
            started = time.perf_counter() if sample else 0.0
            now = self._now()
            try:
                events = self.decider.on_result(result, now)
            except Rejected as exc:
                counters.drop(exc.reason, f"{name} from probe {result.probe[:80]!r}: {exc}")
                return
            if self._observe is not None:
                self._observe(result)
            counters.results[result.outcome] += 1
            if events:
                self._emit(events)
            if sample:
                counters.observe(time.perf_counter() - started)
        finally:
            if counters.handled >= counters.next_wake:
                counters.wake()
