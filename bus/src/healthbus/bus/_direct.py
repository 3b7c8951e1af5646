"""Reading the state stream without a JetStream consumer: batched direct gets.

A direct get is a plain request to ``$JS.API.DIRECT.GET.<STREAM>`` answered by the
stream itself (the stream needs ``allow_direct``, which :func:`~healthbus.bus.stream_config`
sets). It leaves no state in the server, so 10,000 subscribers reading current states
cost the server 10,000 short requests instead of 10,000 consumers.

- :func:`last_per_subject` sends ``{"multi_last": [filter, ...], "batch": N}``: the server
  answers with up to N messages (the last one of each subject, in stream order) and then
  an end-of-batch marker, an empty message with the header ``Status: 204``, whose
  ``Nats-Num-Pending`` says how many are still to come and ``Nats-UpTo-Sequence`` pins the
  snapshot. The next page asks for the same snapshot (``up_to_seq``) from the sequence
  after the last one received (``seq``), until nothing is pending.
- :func:`read_range` reads the history: ``{"seq": S, "next_by_subj": filter, "batch": N}``
  (or ``"start_time"`` instead of ``"seq"``) answers the next N matching messages from S,
  each with ``Nats-Num-Pending`` (how many more match), then the end-of-batch marker. The
  read is pinned to the stream as it was at the first answer by counting: the first
  message's pending plus one. (nats-server 2.15 ignores ``up_to_seq`` and
  ``up_to_time`` in this form, and ``up_to_seq`` with ``last_by_subj``: checked.)
- :func:`last_message` asks ``$JS.API.DIRECT.GET.<STREAM>.<subject>`` for one subject's
  last message (a gap repair).
- :func:`direct_get_problem` says why a stream does not answer direct gets (missing, or
  without ``allow_direct``) when the connection may ask for stream info (the subscriber
  role of ``deploy/`` may not: then it says nothing).

None of these needs the JetStream consumer API, which deploy/ grants to the coordinator
only. nats-py 2.16 has no helper for them, so all are raw requests on an inbox. Anything
other than the expected answers raises :class:`DirectGetError` with what went wrong: no
stream answering (``no responders``: the stream is missing, or has no ``allow_direct``),
an error status, a batch that stopped before its marker (``timeout``), or a server too
old for batched gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from healthbus.protocol import format_timestamp, parse_timestamp

DEFAULT_BATCH: Final = 1000
"""Messages per page of a batched direct get (the server answers 1,000 in about 15 ms)."""

_CONNECTION_CHECK: Final = 0.1  # how often a wait for a reply checks the connection
_BEHIND_RETRY: Final = 0.05  # how soon a read answered by a replica behind the leader asks again


class DirectGetError(NatsError, RuntimeError):
    """A direct get on the state stream failed; ``kind`` says how.

    ``no_responders`` (no stream answers: missing, or without ``allow_direct``),
    ``no_jetstream`` (nothing answers the JetStream API: nats-server runs without ``-js``),
    ``timeout`` (no answer, or a batch cut short before its end marker), ``status`` (the
    server answered with an error status), ``too_many`` (a ``multi_last`` request matched
    more subjects than the server answers at once: 1,024 in nats-server 2.11–2.15;
    :func:`last_per_subject` reads the range instead), ``unsupported`` (the server does not do
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


def _pending(stored: StoredMessage) -> int:
    try:
        return int(stored.headers["Nats-Num-Pending"])
    except (KeyError, ValueError):
        raise DirectGetError("unsupported", "a batched direct get answered without Nats-Num-Pending") from None


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
    if not queue.empty():  # the common case inside a batch: no timer needed
        return queue.get_nowait()

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


class _Pages:
    """One reply inbox for a series of batched direct gets on ``stream``: :meth:`page` sends
    one request and collects its answer, the stored messages up to the end-of-batch marker.

    The reply subject is our own inbox (not nc.request's one-answer mux): a page is several
    messages. Without a responder nats-server answers "no responders" (a 503 status) on
    the inbox, as for any request with headers support.
    """

    def __init__(self, nc: Client, stream: str, timeout: float) -> None:
        self.nc = nc
        self.stream = stream
        self.timeout = timeout
        self._api = f"$JS.API.DIRECT.GET.{stream}"
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Subscription | None = None

    async def __aenter__(self) -> _Pages:
        async def on_reply(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        self._sub = await self.nc.subscribe(self.nc.new_inbox(), cb=on_reply)
        return self

    async def __aexit__(self, *exc: object) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def page(self, request: dict[str, object]) -> tuple[list[StoredMessage], Msg | None]:
        """The messages of one page and its end-of-batch marker (None: nothing matched)."""
        assert self._sub is not None, "use `async with _Pages(...)`"
        await self.nc.publish(self._api, json.dumps(request).encode(), reply=self._sub.subject)
        out: list[StoredMessage] = []
        while True:
            msg = await _next_reply(self.nc, self._queue, self.timeout, self.stream, len(out))
            status = _status(msg)
            if status is None:
                out.append(_stored(msg))
                continue
            code, description = status
            if code == "204":  # end of this page
                return out, msg
            if code == "404":  # nothing matches the request (or nothing left)
                return out, None
            if code == "503":
                raise DirectGetError(
                    "no_responders", f"no answer from stream {self.stream} (missing, or no allow_direct)"
                )
            if code == "413":  # multi_last matched more subjects than the server answers (1,024)
                raise DirectGetError("too_many", f"direct get on {self.stream}: {code} {description}".rstrip())
            raise DirectGetError("status", f"direct get on {self.stream}: {code} {description}".rstrip())


@dataclass(frozen=True, slots=True)
class LeaderMark:
    """The last message matching a filter as the stream's leader knows it (``seq`` 0: none)."""

    seq: int
    time: datetime | None


async def leader_mark(nc: Client, stream: str, subject_filter: str, *, timeout: float = 5.0) -> LeaderMark:
    """Where the stream's *leader* is for ``subject_filter``: its last matching message.

    A direct get may be answered by any replica of the stream, and a follower can lag
    behind the leader by what it has not replicated yet (ms, or longer while a node that
    came back catches up). ``$JS.API.STREAM.MSG.GET`` (``last_by_subj``) is answered by the
    leader only: a reader that must see every stored event reads until it has reached this
    mark (``at_least`` / ``until`` below). Raises :class:`DirectGetError`.
    """
    request = json.dumps({"last_by_subj": subject_filter}).encode()
    try:
        msg = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", request, timeout=timeout)
    except NoRespondersError:  # nothing answers the JetStream API at all
        raise DirectGetError("no_jetstream", "JetStream is not available (nats-server runs without -js)") from None
    except NatsTimeoutError:
        raise DirectGetError("timeout", f"no answer from the leader of {stream} within {timeout:g}s") from None
    try:
        body = json.loads(msg.data)
        error = body.get("error")
        if error is None:
            found = body["message"]
            return LeaderMark(int(found["seq"]), parse_timestamp(found["time"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DirectGetError("status", f"{stream}: an unreadable answer to a message get") from None
    if error.get("err_code") == 10037:  # no message found
        return LeaderMark(0, None)
    if error.get("err_code") == 10059:  # stream not found
        raise DirectGetError("no_responders", f"no stream {stream}")
    raise DirectGetError("status", f"{stream}: {error.get('code')} {error.get('description', '')}".rstrip())


def _behind(stream: str, seen: int, mark: int) -> DirectGetError:
    return DirectGetError(
        "timeout", f"direct get on {stream}: the replicas answering stayed behind the leader (seq {seen} of {mark})"
    )


async def last_per_subject(
    nc: Client,
    stream: str,
    subject_filter: str | Sequence[str],
    *,
    batch: int = DEFAULT_BATCH,
    timeout: float = 5.0,
    at_least: int = 0,
) -> list[StoredMessage]:
    """The last message of every subject matching ``subject_filter``, in stream order.

    ``subject_filter`` may be several filters (one request all the same: ``multi_last``
    takes a list), e.g. ``$KV.<bucket>.leader`` and ``$KV.<bucket>.leader.*``.

    One request per page of ``batch`` messages; every page reads the same snapshot (the
    stream as it was at the first answer). With ``at_least`` (a :func:`leader_mark`), a
    snapshot of a replica that had not reached that stream sequence is read again until
    one has, for up to ``timeout``. Raises :class:`DirectGetError`; ``timeout`` bounds
    the wait for each message of a page.
    """
    if batch < 1:
        raise ValueError(f"invalid batch {batch!r}: expected at least 1")
    filters = [subject_filter] if isinstance(subject_filter, str) else list(subject_filter)
    if not filters:
        raise ValueError("no subject filter")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            out, up_to = await _last_per_subject(nc, stream, filters, batch, timeout)
        except DirectGetError as exc:
            if exc.kind != "too_many":
                raise
            return await _last_per_subject_by_range(nc, stream, filters, batch, timeout, at_least)
        if up_to >= at_least:
            return out
        if loop.time() >= deadline:
            raise _behind(stream, up_to, at_least)
        await asyncio.sleep(_BEHIND_RETRY)


async def _last_per_subject(
    nc: Client, stream: str, filters: list[str], batch: int, timeout: float
) -> tuple[list[StoredMessage], int]:
    """One snapshot and the stream sequence it reached (0 when nothing matched)."""
    out: list[StoredMessage] = []
    async with _Pages(nc, stream, timeout) as pages:
        request: dict[str, object] = {"multi_last": filters, "batch": batch}
        while True:
            page, end = await pages.page(request)
            out.extend(page)
            if end is None:
                return out, 0
            pending = _header_int(end, "Nats-Num-Pending")
            up_to = _header_int(end, "Nats-UpTo-Sequence")
            if pending == 0:
                return out, up_to
            if not page:
                raise DirectGetError("status", f"direct get on {stream}: an empty page with {pending} pending")
            # The next page: the same snapshot, from the sequence after the last one received.
            request = request | {"up_to_seq": up_to, "seq": page[-1].stream_seq + 1}


async def _last_per_subject_by_range(
    nc: Client, stream: str, filters: list[str], batch: int, timeout: float, at_least: int
) -> list[StoredMessage]:
    """:func:`last_per_subject` for more subjects than ``multi_last`` answers (the server
    refuses with 413 above 1,024): every matching message, a page at a time (one read per
    filter), keeping the last of each subject. Costs a read of the history the stream
    keeps (``max_age``)."""
    last: dict[str, StoredMessage] = {}
    until = LeaderMark(at_least, None) if at_least > 0 else None
    for subject_filter in filters:
        pages = read_range(nc, stream, subject_filter, until=until, batch=batch, timeout=timeout)
        async with contextlib.aclosing(pages):
            async for page in pages:
                for message in page:
                    last[message.subject] = message
    return sorted(last.values(), key=lambda message: message.stream_seq)


async def read_range(
    nc: Client,
    stream: str,
    subject_filter: str,
    *,
    start_seq: int = 1,
    start_time: datetime | None = None,
    until: LeaderMark | None = None,
    batch: int = DEFAULT_BATCH,
    timeout: float = 5.0,
) -> AsyncGenerator[list[StoredMessage], None]:
    """Every message matching ``subject_filter`` from stream sequence ``start_seq`` (or
    the first one stored at or after ``start_time``), in stream order, a page at a time.

    With ``until`` (a :func:`leader_mark`) the read ends at that message, and a replica
    that answers "nothing more" before it is asked again (for up to ``timeout``): every
    message the leader had stored is read. Without it the read ends with the stream as the
    answering replica had it at the first answer: the first message's ``Nats-Num-Pending``
    says how many more match. One request per page of ``batch`` messages: ``{"seq" |
    "start_time", "next_by_subj", "batch"}``. Raises :class:`DirectGetError`; ``timeout``
    bounds the wait for each message of a page. Close the iterator
    (``contextlib.aclosing``) when leaving it early.
    """
    if batch < 1:
        raise ValueError(f"invalid batch {batch!r}: expected at least 1")
    if start_seq < 1:
        raise ValueError(f"invalid start_seq {start_seq!r}: expected at least 1")
    if until is not None and (until.seq < start_seq or (start_time and until.time and until.time < start_time)):
        return  # the leader has nothing there
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with _Pages(nc, stream, timeout) as pages:
        request: dict[str, object] = {"next_by_subj": subject_filter, "batch": batch}
        if start_time is not None:
            request["start_time"] = format_timestamp(start_time)
        else:
            request["seq"] = start_seq
        left: int | None = None  # without `until`: messages still to read of the snapshot
        seen = start_seq - 1
        while True:
            page, end = await pages.page(request)
            if until is not None:
                page = [m for m in page if m.stream_seq <= until.seq]
            elif page:
                if left is None:
                    left = _pending(page[0]) + 1
                page = page[:left]
                left -= len(page)
            if page:
                seen = page[-1].stream_seq
                yield page
            if until is None:
                if not page or end is None or (left is not None and left <= 0):
                    return
                if _header_int(end, "Nats-Num-Pending") == 0:
                    return
            else:
                if seen >= until.seq:
                    return
                if end is None or _header_int(end, "Nats-Num-Pending") == 0:
                    # The replica that answered has nothing more: it is behind the leader.
                    if loop.time() >= deadline:
                        raise _behind(stream, seen, until.seq)
                    await asyncio.sleep(_BEHIND_RETRY)
                else:
                    deadline = loop.time() + timeout  # progress
            if seen >= start_seq:
                request = {"next_by_subj": subject_filter, "batch": batch, "seq": seen + 1}


STREAM_INFO_API: Final = "$JS.API.STREAM.INFO."
"""The subject prefix of a stream-info request (a reader checking it may be refused)."""


async def direct_get_problem(nc: Client, stream: str, *, timeout: float = 0.5) -> str | None:
    """Why ``stream`` gives no direct-get answers: it does not exist, or lacks ``allow_direct``.

    Asks ``$JS.API.STREAM.INFO.<stream>``; None when that is not allowed or not answered
    (the subscriber role of ``deploy/`` may not ask: the server then reports a permissions
    violation for ``STREAM_INFO_API``, which a caller following errors should expect), or
    when the stream looks fine.
    """
    try:
        msg = await nc.request(f"{STREAM_INFO_API}{stream}", b"", timeout=timeout)
        info = json.loads(msg.data)
    except (NoRespondersError, NatsTimeoutError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    error = info.get("error")
    if isinstance(error, dict):
        if error.get("code") == 404:
            return f"stream {stream} does not exist (start the coordinator: it creates it)"
        return None
    config = info.get("config")
    if isinstance(config, dict) and not config.get("allow_direct"):
        return (
            f"stream {stream} has no allow_direct, so subscribers cannot read it "
            "(start the coordinator: it turns allow_direct on)"
        )
    return None


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
