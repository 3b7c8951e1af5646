"""Reading the state stream without a JetStream consumer: batched direct gets.

A direct get is a plain request to ``$JS.API.DIRECT.GET.<STREAM>`` answered by the
stream itself (the stream needs ``allow_direct``, which :func:`~healthbus.bus.stream_config`
sets). It leaves no state in the server, so 10,000 subscribers reading current states
cost the server 10,000 short requests instead of 10,000 consumers.

- :func:`last_per_subject` sends ``{"multi_last": [filter], "batch": N}``: the server
  answers with up to N messages (the last one of each subject, in stream order) and then
  an end-of-batch marker, an empty message with the header ``Status: 204``, whose
  ``Nats-Num-Pending`` says how many are still to come and ``Nats-UpTo-Sequence`` pins the
  snapshot. The next page asks for the same snapshot (``up_to_seq``) from the sequence
  after the last one received (``seq``), until nothing is pending.
- :func:`last_message` asks ``$JS.API.DIRECT.GET.<STREAM>.<subject>`` for one subject's
  last message (a gap repair).

nats-py 2.16 has no helper for either, so both are raw requests on an inbox. Anything
other than the expected answers raises :class:`DirectGetError` with what went wrong: no
stream answering (``no responders``: the stream is missing, or has no ``allow_direct``),
an error status, a batch that stopped before its marker (``timeout``), or a server too
old for batched gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

DEFAULT_BATCH: Final = 1000
"""Messages per page of a batched direct get (the server answers 1,000 in about 15 ms)."""

_CONNECTION_CHECK: Final = 0.1  # how often a wait for a reply checks the connection


class DirectGetError(RuntimeError):
    """A direct get on the state stream failed; ``kind`` says how.

    ``no_responders`` (no stream answers: missing, or without ``allow_direct``),
    ``timeout`` (no answer, or a batch cut short before its end marker), ``status`` (the
    server answered with an error status), ``unsupported`` (the server does not do
    batched direct gets: nats-server 2.11 or newer is needed).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message read from the stream: its subject, stream sequence, payload and headers."""

    subject: str
    stream_seq: int
    data: bytes
    headers: Mapping[str, str]


def _status(msg: Msg) -> tuple[str, str] | None:
    headers = msg.headers or {}
    status = headers.get("Status")
    if status is None:
        return None
    return status, headers.get("Description", "")


def _stored(msg: Msg) -> StoredMessage:
    headers = msg.headers or {}
    try:
        return StoredMessage(
            subject=headers["Nats-Subject"],
            stream_seq=int(headers["Nats-Sequence"]),
            data=msg.data,
            headers=headers,
        )
    except (KeyError, ValueError):
        raise DirectGetError("status", "direct get answered without Nats-Subject/Nats-Sequence") from None


def _header_int(msg: Msg, name: str) -> int:
    value = (msg.headers or {}).get(name)
    if value is None:
        raise DirectGetError("unsupported", f"the end-of-batch marker has no {name} (nats-server 2.11+ is needed)")
    try:
        return int(value)
    except ValueError:
        raise DirectGetError("status", f"bad {name} header {value!r}") from None


async def _next_reply(nc: Client, queue: asyncio.Queue[Msg], timeout: float, stream: str, received: int) -> Msg:
    """The next reply; DirectGetError after ``timeout``, or at once when the connection drops."""

    def describe() -> str:
        what = "no answer" if received == 0 else f"the batch stopped after {received} messages"
        return f"direct get on {stream}: {what} within {timeout:g}s"

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if not nc.is_connected:
            raise DirectGetError("timeout", f"{describe()}: the connection dropped")
        left = deadline - loop.time()
        if left <= 0:
            raise DirectGetError("timeout", describe())
        try:
            return await asyncio.wait_for(queue.get(), min(left, _CONNECTION_CHECK))
        except TimeoutError:
            continue


async def last_per_subject(
    nc: Client,
    stream: str,
    subject_filter: str,
    *,
    batch: int = DEFAULT_BATCH,
    timeout: float = 5.0,
) -> list[StoredMessage]:
    """The last message of every subject matching ``subject_filter``, in stream order.

    One request per page of ``batch`` messages; every page reads the same snapshot (the
    stream as it was at the first answer). Raises :class:`DirectGetError`; ``timeout``
    bounds the wait for each message of a page.
    """
    if batch < 1:
        raise ValueError(f"invalid batch {batch!r}: expected at least 1")
    api = f"$JS.API.DIRECT.GET.{stream}"
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_reply(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        out: list[StoredMessage] = []
        up_to: int | None = None
        start = 0
        while True:
            request: dict[str, object] = {"multi_last": [subject_filter], "batch": batch}
            if up_to is not None:
                request["up_to_seq"] = up_to
                request["seq"] = start
            # The reply subject is our own inbox (not nc.request's one-answer mux): a page
            # is several messages. Without a responder nats-server answers "no responders"
            # (a 503 status) on the inbox, as for any request with headers support.
            await nc.publish(api, json.dumps(request).encode(), reply=inbox)
            received = 0
            while True:
                msg = await _next_reply(nc, queue, timeout, stream, received)
                status = _status(msg)
                if status is None:
                    stored = _stored(msg)
                    out.append(stored)
                    start = stored.stream_seq + 1
                    received += 1
                    continue
                code, description = status
                if code == "204":  # end of this page
                    pending = _header_int(msg, "Nats-Num-Pending")
                    up_to = _header_int(msg, "Nats-UpTo-Sequence")
                    if pending == 0:
                        return out
                    if received == 0:
                        raise DirectGetError("status", f"direct get on {stream}: an empty page with {pending} pending")
                    break  # next page
                if code == "404":  # nothing matches the filter (or nothing left)
                    return out
                if code == "503":
                    raise DirectGetError(
                        "no_responders", f"no answer from stream {stream} (missing, or no allow_direct)"
                    )
                raise DirectGetError("status", f"direct get on {stream}: {code} {description}".rstrip())
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def last_message(nc: Client, stream: str, subject: str, *, timeout: float = 5.0) -> StoredMessage | None:
    """The last message on ``subject`` in ``stream``, or None when it has none."""
    try:
        msg = await nc.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=timeout)
    except NoRespondersError:
        raise DirectGetError("no_responders", f"no answer from stream {stream} (missing, or no allow_direct)") from None
    except NatsTimeoutError:
        raise DirectGetError("timeout", f"direct get on {stream}: no answer within {timeout:g}s") from None
    status = _status(msg)
    if status is None:
        return _stored(msg)
    code, description = status
    if code == "404":
        return None
    raise DirectGetError("status", f"direct get on {stream}: {code} {description}".rstrip())
