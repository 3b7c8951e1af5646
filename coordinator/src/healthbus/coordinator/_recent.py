"""The results a coordinator heard recently, kept for a takeover to catch up from.

Every coordinator with a leader lease keeps the ProbeResults it received in the last
:data:`WINDOW` seconds (at most :data:`MAX_RESULTS`), with the time it received each:
a standby from its own subscription, the leader from the hot path. When it takes the
lease, :func:`~._core.catch_up` replays them, so transitions a deposed leader decided but
could not store are recorded from the same evidence (docs/coordinator.md).
"""

from __future__ import annotations

from collections import deque
from typing import Final

import msgspec

from healthbus.coordinator._core import Now
from healthbus.protocol import MAX_MESSAGE_BYTES, ProbeResult, probe_token

#: Seconds of results kept: longer than any outage a takeover is expected to cover.
WINDOW: Final = 120.0
#: Most results kept, whatever the rate (about 300 bytes each).
MAX_RESULTS: Final = 200_000

_decoder: Final = msgspec.json.Decoder(ProbeResult)


class RecentResults:
    """A bounded, time-ordered log of ``(received, result)``."""

    def __init__(self, window: float = WINDOW, limit: int = MAX_RESULTS) -> None:
        self.window = window
        self._log: deque[tuple[Now, ProbeResult]] = deque(maxlen=max(1, limit))

    def __len__(self) -> int:
        return len(self._log)

    def add(self, now: Now, result: ProbeResult) -> None:
        """Keep one result received at ``now`` (the hot path: an append, a trim now and then)."""
        log = self._log
        log.append((now, result))
        if len(log) & 255 == 0:
            self.trim(now.mono)

    def add_raw(self, now: Now, prefix_len: int, subject: str, data: bytes) -> None:
        """Keep one raw message if it is a result the intake would accept from that subject.

        The same subject checks as :meth:`~._intake.Intake.handle_probe` (the payload names
        the subject's target, and its probe when the subject has one; the subject's probe
        token is the vantage point): a result kept here is replayed into the core.
        """
        if len(data) > MAX_MESSAGE_BYTES:
            return
        try:
            result = _decoder.decode(data)
        except msgspec.DecodeError:
            return
        name, dot, token = subject[prefix_len:].partition(".")
        if result.target != name:
            return
        if dot:
            if probe_token(result.probe) != token:
                return
            if result.probe != token:
                result = msgspec.structs.replace(result, probe=token)
        self.add(now, result)

    def trim(self, mono: float) -> None:
        """Forget what was received more than :attr:`window` seconds before ``mono``."""
        log = self._log
        oldest = mono - self.window
        while log and log[0][0].mono < oldest:
            log.popleft()

    def snapshot(self, mono: float) -> list[tuple[Now, ProbeResult]]:
        """The results of the last :attr:`window` seconds before ``mono``, oldest first."""
        self.trim(mono)
        return list(self._log)
