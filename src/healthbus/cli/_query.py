"""``healthbus status | tail | replay | state-at | ctl | reload``: the operator's commands.

Contract (docs/contract.md): with ``--json`` each command prints exactly one StateChanged
(``healthbus.protocol.encode``) per line on stdout and nothing else; every message for a
person goes to stderr. Without ``--json`` a readable table, coloured only on a terminal.
Exit codes: 0 ok, 1 NATS unreachable or the stream cannot be read, 2 bad arguments.

All reading goes through :class:`healthbus.bus.StateStream`; this module only
chooses what to read and how to print it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from healthbus.bus import DirectGetError, StateStream, connect, resolve_url
from healthbus.cli._common import EXIT_FAILURE, EXIT_OK, UsageError, bus_settings, load_args_config, stop_on_signals
from healthbus.cli._format import (
    GROUP_HEADERS,
    HISTORY_HEADERS,
    STATUS_HEADERS,
    event_rows,
    group_rows,
    history_rows,
    parse_when,
    render_table,
    tail_line,
    use_colour,
)
from healthbus.protocol import (
    MAX_MAINTENANCE_S,
    ControlReply,
    ControlRequest,
    ProtocolError,
    StateChanged,
    Subjects,
    decode_control_reply,
    encode,
    format_timestamp,
    is_valid_target,
    parse_duration,
    redact_url,
    utcnow,
)

__all__ = [
    "PartitionLeader",
    "cmd_ctl",
    "cmd_replay",
    "cmd_state_at",
    "cmd_status",
    "cmd_tail",
    "fold_state_at",
    "read_leaders",
    "state_at",
]

#: How long a reply to a control request may take before we say nobody answered.
CTL_TIMEOUT_S = 5.0


@dataclass
class _Session:
    nc: Client
    stream: StateStream
    server: str  # for messages: the URL without credentials


@contextlib.asynccontextmanager
async def _session(args: argparse.Namespace, command: str) -> AsyncIterator[_Session]:
    config = load_args_config(args)
    settings = bus_settings(args, config)
    nc = await connect(settings, name=f"healthbus-{command}")
    try:
        yield _Session(nc, StateStream(nc, settings.prefix), redact_url(resolve_url(settings)))
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def _explain(exc: BaseException, session: _Session) -> str:
    stream = session.stream.stream
    kind = exc.kind if isinstance(exc, DirectGetError) else None
    # Direct gets are answered by the stream itself: none answers when it does not exist.
    if isinstance(exc, nats.js.errors.NotFoundError) or kind == "no_responders":
        return (
            f"no state stream {stream} on NATS at {session.server}: nothing recorded yet "
            f"(is a coordinator running with prefix {session.stream.subjects.prefix!r}?)"
        )
    if (
        isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.errors.NoRespondersError)
        or kind == "no_jetstream"
    ):
        return f"JetStream is not available on NATS at {session.server} (start nats-server with -js)"
    if isinstance(exc, DirectGetError):
        return f"reading {stream} on NATS at {session.server} failed: {exc}"
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return f"reading {stream} on NATS at {session.server} timed out"
    if isinstance(exc, nats.js.errors.APIError):
        return f"reading {stream} on NATS at {session.server} failed: {exc.description or exc}"
    return f"reading {stream} on NATS at {session.server} failed: {type(exc).__name__}: {exc}"


_READ_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


class _Out:
    """stdout for one command: JSON lines or a table; a closed pipe ends output quietly."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.colour = not json_mode and use_colour(sys.stdout, os.environ)
        self.closed = False

    def line(self, text: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # `healthbus tail --json | head -1`: the reader is gone, which is not an error.
            self.closed = True
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def event(self, event: StateChanged) -> None:
        self.line(encode(event).decode())


def _note(command: str, text: str) -> None:
    print(f"healthbus {command}: {text}", file=sys.stderr)


def _print_states(out: _Out, events: Iterable[StateChanged], now: datetime) -> None:
    # A target whose last event retired it has left the configuration: not a current state.
    events = sorted((e for e in events if not e.retired), key=lambda e: e.target)
    if out.json:
        for e in events:
            out.event(e)
    else:
        out.line(render_table(STATUS_HEADERS, event_rows(events, now), colour=out.colour))


def _time_arg(value: str | None, option: str, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value, now)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _target_arg(value: str | None) -> str | None:
    if value is not None and not is_valid_target(value):
        raise UsageError(f"--target: invalid target name {value!r} (expected 1-64 characters of a-z, 0-9, '_' or '-')")
    return value


# ------------------------------------------------------------------ commands


async def cmd_status(args: argparse.Namespace) -> int:
    """``healthbus status [--json]``: every target's current state."""
    out = _Out(args.json)
    async with _session(args, "status") as s:
        try:
            states = await s.stream.current()
            groups = await s.stream.groups() if not out.json or args.groups else []
        except _READ_ERRORS as exc:
            _note("status", _explain(exc, s))
            return EXIT_FAILURE
        leads = {} if out.json else await _leaders(s)
    if out.json and args.groups:
        for g in sorted(groups, key=lambda g: g.group):
            out.line(encode(g).decode())
        return EXIT_OK
    if not any(not e.retired for e in states.values()) and not out.json:
        _note("status", f"no targets recorded yet in {s.stream.stream} on {s.server}")
        return EXIT_OK
    _print_states(out, states.values(), utcnow())
    if groups and not out.json:
        out.line("")
        out.line(render_table(GROUP_HEADERS, group_rows(groups, utcnow()), colour=out.colour))
    if leads:
        out.line("")
        out.line(render_table(LEADER_HEADERS, leads, colour=out.colour))
    return EXIT_OK


LEADER_HEADERS = ("PARTITION", "LEADER", "REVISION")


class PartitionLeader(msgspec.Struct, frozen=True):
    """Who leads one partition now: ``partition`` is ``"all"`` without partitions (lease
    key ``leader``), else the partition's number (``leader.<p>``); ``revision`` is the
    lease key's revision now (it grows with every renewal: the ``term`` a leader stamps on
    its events is the revision at which it took the lease)."""

    partition: str
    leader: str
    revision: int


async def read_leaders(nc: Client, stream: str) -> list[PartitionLeader]:
    """Who holds each leader lease of ``stream`` now, by partition; none when there is no
    election or the lease bucket cannot be read. ``status`` and the dashboard show this."""
    from healthbus.coordinator import LEASE_KEY, bucket_for, leaders

    try:
        held = await leaders(nc, bucket_for(stream))
    except _READ_ERRORS:
        return []

    def order(key: str) -> tuple[int, str]:
        tail = key.removeprefix(f"{LEASE_KEY}.")
        return (int(tail), "") if tail.isdigit() else (-1, key)

    return [
        PartitionLeader("all" if key == LEASE_KEY else key.removeprefix(f"{LEASE_KEY}."), holder, revision)
        for key, (holder, revision) in sorted(held.items(), key=lambda kv: order(kv[0]))
    ]


async def _leaders(s: _Session) -> list[tuple[str, str, str]]:
    """:func:`read_leaders` as ``status`` table rows."""
    return [(p.partition, p.leader, str(p.revision)) for p in await read_leaders(s.nc, s.stream.stream)]


async def cmd_replay(args: argparse.Namespace) -> int:
    """``healthbus replay [--since T] [--until T] [--target X] [--json]``: the audit log."""
    now = utcnow()
    since = _time_arg(args.since, "--since", now)
    until = _time_arg(args.until, "--until", now)
    target = _target_arg(args.target)
    if since is not None and until is not None and since > until:
        raise UsageError("--since must not be later than --until")
    out = _Out(args.json)
    events: list[StateChanged] = []
    printed = 0
    async with _session(args, "replay") as s:
        try:
            async for event in s.stream.history(since=since, until=until, target=target):
                if since is not None and event.at < since:
                    continue  # stream time and decision time differ by a hair; the contract is `at`
                printed += 1
                if out.json:
                    out.event(event)  # stream it: a long history never sits in memory
                else:
                    events.append(event)
            # A mistyped --target must not read as "nothing happened in that range".
            known = await s.stream.current() if target is not None and not printed else None
        except _READ_ERRORS as exc:
            _note("replay", _explain(exc, s))
            return EXIT_FAILURE
    if known is not None and target not in known:
        names = ", ".join(sorted(known)) or "none yet"
        _note("replay", f"no target {target!r} in {s.stream.stream} on {s.server} (known: {names})")
        return EXIT_FAILURE
    if not out.json:
        if events:
            out.line(render_table(HISTORY_HEADERS, history_rows(events), colour=out.colour))
        else:
            _note("replay", "no state changes in that range")
    return EXIT_OK


def fold_state_at(states: dict[str, StateChanged], event: StateChanged, when: datetime) -> None:
    """Fold one history event into ``states`` (target → its last event with ``at <= when``)."""
    if event.at > when:
        return
    old = states.get(event.target)
    if old is None or event.seq > old.seq:
        states[event.target] = event


def state_at(events: Iterable[StateChanged], when: datetime) -> dict[str, StateChanged]:
    """Every target's state at ``when``: its last event (highest seq) with ``at <= when``."""
    states: dict[str, StateChanged] = {}
    for e in events:
        fold_state_at(states, e, when)
    return states


async def cmd_state_at(args: argparse.Namespace) -> int:
    """``healthbus state-at T [--json]``: every target's state as it was at T, rebuilt from history."""
    now = utcnow()
    when = _time_arg(args.time, "T", now)
    assert when is not None
    out = _Out(args.json)
    async with _session(args, "state-at") as s:
        try:
            states: dict[str, StateChanged] = {}
            async for event in s.stream.history(until=when):
                fold_state_at(states, event, when)
        except _READ_ERRORS as exc:
            _note("state-at", _explain(exc, s))
            return EXIT_FAILURE
    if not states and not out.json:
        _note("state-at", "no target had a recorded state at that time")
        return EXIT_OK
    _print_states(out, states.values(), when)
    return EXIT_OK


async def cmd_tail(args: argparse.Namespace) -> int:
    """``healthbus tail [--json]``: live state changes until Ctrl-C (exit 0)."""
    out = _Out(args.json)
    stop = asyncio.Event()

    def show(event: StateChanged) -> None:
        if out.json:
            out.event(event)
        else:
            out.line(tail_line(event, colour=out.colour))
        if out.closed:
            stop.set()

    async with _session(args, "tail") as s:
        try:
            follower = await s.stream.follow(show, start="new")
        except _READ_ERRORS as exc:
            _note("tail", _explain(exc, s))
            return EXIT_FAILURE
        # On stderr also with --json: the moment from which no change is missed.
        _note("tail", f"following {s.stream.stream} on {s.server} (Ctrl-C to stop)")
        try:
            with stop_on_signals(stop):
                await stop.wait()
        finally:
            await follower.stop()
    return EXIT_OK


def _maintenance_duration(action: str, text: str | None) -> float | None:
    """``--for``'s seconds: required by ``maintenance``, refused with anything else (usage errors)."""
    if action != "maintenance":
        if text is not None:
            raise UsageError(f"--for applies to maintenance only, not to {action}")
        return None
    if text is None:
        raise UsageError("maintenance needs --for DURATION (e.g. --for 1h)")
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if not 0 < seconds <= MAX_MAINTENANCE_S:
        raise UsageError(f"--for: expected a duration above 0 and at most 366d, got {text!r}")
    return seconds


async def _ctl_request(
    args: argparse.Namespace, action: str, payload: bytes, command: str = "ctl"
) -> ControlReply | None:
    """Send one control request; the coordinator's reply, or None after saying why there is none."""
    async with _session(args, command) as s:
        subject = Subjects(s.stream.subjects.prefix).ctl(action)
        try:
            msg = await s.nc.request(subject, payload, timeout=CTL_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            _note(command, f"no coordinator is listening on {subject} at {s.server}")
            return None
        except (nats.errors.TimeoutError, TimeoutError):
            _note(command, f"no reply on {subject} within {CTL_TIMEOUT_S:g}s")
            return None
    try:
        return decode_control_reply(msg.data)
    except ProtocolError as exc:
        _note(command, f"the coordinator's reply was not understood: {exc}")
        return None


async def _reload(args: argparse.Namespace, command: str) -> int:
    """The active coordinator re-reads its file, then tells the others (``<prefix>.ctl.reload``)."""
    reply = await _ctl_request(args, "reload", b"{}", command)
    if reply is None:
        return EXIT_FAILURE
    if not reply.ok:
        _note(command, f"reload refused, the running configuration is kept: {reply.error or 'no reason given'}")
        return EXIT_FAILURE
    print("reload: ok (standby coordinators and probe workers were told to reload too)")
    return EXIT_OK


async def cmd_reload(args: argparse.Namespace) -> int:
    """``healthbus reload``: every coordinator and probe worker re-reads its configuration file."""
    return await _reload(args, "reload")


#: What ``healthbus ctl reload`` prints (to stderr) before it reloads, during the 0.x series.
CTL_RELOAD_DEPRECATED: Final = "`ctl reload` is deprecated: use `healthbus reload` (ctl reload goes in 1.0)"


async def cmd_ctl(args: argparse.Namespace) -> int:
    """``healthbus ctl ACTION TARGET [--reason R]``: ask the coordinator to force-open, disable or reset."""
    if args.action == "reload":
        _note("ctl", CTL_RELOAD_DEPRECATED)
        if args.target is not None:
            raise UsageError("reload takes no target: every coordinator and probe worker re-reads its configuration")
        _maintenance_duration(args.action, getattr(args, "duration", None))
        return await _reload(args, "ctl")
    if args.target is None:
        raise UsageError(f"{args.action} needs a TARGET")
    if not is_valid_target(args.target):
        raise UsageError(f"invalid target name {args.target!r} (expected 1-64 characters of a-z, 0-9, '_' or '-')")
    duration = _maintenance_duration(args.action, getattr(args, "duration", None))
    request = ControlRequest(target=args.target, reason=args.reason or "", duration_s=duration)
    reply = await _ctl_request(args, args.action, encode(request))
    if reply is None:
        return EXIT_FAILURE
    if not reply.ok:
        _note("ctl", f"{args.action} {args.target} refused: {reply.error or 'no reason given'}")
        return EXIT_FAILURE
    if reply.event is not None:
        e = reply.event
        until = f" until {format_timestamp(e.retry_at)}" if e.breaker == "forced_open" and e.retry_at else ""
        print(f"{args.action} {args.target}: ok, now {e.state}{until} (breaker {e.breaker}, seq {e.seq})")
    else:
        print(f"{args.action} {args.target}: ok")
    return EXIT_OK
