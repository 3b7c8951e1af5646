"""Operator control requests on ``<prefix>.ctl.<command>``: force-open, force-close, reset.

Only a request on ``<prefix>.ctl.<command>`` that is no JetStream delivery is handled
(:meth:`Control.command_of`); anything else is dropped, counted and logged rate-limited.

A request is decoded and applied by the core; the reply carries the resulting event
once JetStream acked it (or, after :data:`CONTROL_ACK_TIMEOUT`, says it is applied but
not yet published), or the target's current event when nothing changed: in either case
the event as it went to the stream, with the deciding coordinator's id and lease term
(:meth:`~healthbus.coordinator._core.Decider.published`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Final

from nats.aio.msg import Msg

from healthbus.coordinator._core import ControlError, Decider, Now
from healthbus.coordinator._counters import Counters
from healthbus.protocol import (
    CONTROL_COMMANDS,
    ControlReply,
    ProtocolError,
    StateChanged,
    decode_control_request,
    encode,
)

log = logging.getLogger("healthbus.coordinator")

#: How long a control request waits for its event to be acked before replying anyway.
CONTROL_ACK_TIMEOUT: Final = 5.0


@dataclass(eq=False)
class Control:
    """Answers control requests for one term as active coordinator."""

    decider: Decider
    counters: Counters
    _: KW_ONLY
    ctl_base: str
    now: Callable[[], Now]
    emit: Callable[[Iterable[StateChanged]], None]
    wait_published: Callable[[str, int, float], Awaitable[None]]
    reload: Callable[[], Awaitable[str | None]] | None = None

    async def on_ctl(self, msg: Msg) -> None:
        """Subscription callback: apply, then reply if asked."""
        command = self.command_of(msg.subject, msg.reply)
        if command is None:
            return
        reply = await self.handle_control(command, msg.data)
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(encode(reply))

    def command_of(self, subject: str, reply: str) -> str | None:
        """The command of a request on ``<prefix>.ctl.<command>``, or None when the message is
        no control request: a JetStream delivery (its reply is a ``$JS.`` ack subject: a push
        consumer pointed at a control subject) or a subject outside ``<prefix>.ctl.``. Those
        are dropped unanswered, counted as ``unexpected_control`` and logged rate-limited. A
        deeper subject (``<prefix>.ctl.a.b``) is an unknown command (``bad_control``)."""
        if reply.startswith("$JS."):
            self.counters.drop("unexpected_control", f"a JetStream delivery on {subject[:120]!r}")
            return None
        if not subject.startswith(self.ctl_base) or len(subject) == len(self.ctl_base):
            self.counters.drop("unexpected_control", f"not <prefix>.ctl.<command>: {subject[:120]!r}")
            return None
        return subject[len(self.ctl_base) :]

    async def handle_control(self, command: str, data: bytes) -> ControlReply:
        """Apply one control request; the reply carries the resulting (or current) event."""
        if command not in CONTROL_COMMANDS:
            self.counters.drop("bad_control", f"unknown command {command[:40]!r}")
            return ControlReply(ok=False, error=f"unknown command {command!r}; expected one of {CONTROL_COMMANDS}")
        if command == "reload":  # no target: the command re-reads the configuration file
            error = "reload is not available here" if self.reload is None else await self.reload()
            return ControlReply(ok=error is None, error=error)
        try:
            request = decode_control_request(data)
        except ProtocolError as exc:
            self.counters.drop("bad_control", str(exc)[:300])
            return ControlReply(ok=False, error=str(exc))
        try:
            events = self.decider.control(
                command, request.target, request.reason, self.now(), duration=request.duration_s
            )
        except ControlError as exc:
            return ControlReply(ok=False, error=str(exc))
        log.warning("operator %s on %s: %s", command, request.target, request.reason or "no reason given")
        if events:
            self.emit(events)
            try:
                await self.wait_published(events[-1].target, events[-1].seq, CONTROL_ACK_TIMEOUT)
            except TimeoutError:
                return ControlReply(
                    ok=True,
                    error="applied, but not yet published: the state stream is unreachable",
                    event=self.decider.current(request.target),
                )
        return ControlReply(ok=True, event=self.decider.current(request.target))
