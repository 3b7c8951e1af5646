"""Pure helpers of the query commands: times given on the command line, colour, tables.

Nothing here does I/O or reads the clock: "now" is always passed in, so every helper is
tested with plain calls.

Rules:

- A time on the command line is RFC 3339 (``2026-11-25T19:00:00Z``; a bare date or a
  time without offset is taken as UTC), ``now``, or relative to now: ``-1h``, ``-30m``,
  ``-2d``, ``-1h30m`` (any duration of :func:`healthbus.protocol.parse_duration`, with a
  leading minus). Anything else is a :class:`ValueError` that shows the accepted forms.
- Colour (ANSI) only when the output is a terminal, ``NO_COLOR`` is unset or empty
  (https://no-color.org) and ``TERM`` is not ``dumb``.
- Table widths count visible characters: colour codes never shift a column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TextIO

from healthbus.protocol import GroupChanged, StateChanged, format_duration, parse_duration, parse_timestamp

__all__ = [
    "STATE_STYLES",
    "Cell",
    "event_rows",
    "format_age",
    "format_countdown",
    "format_time",
    "history_row",
    "history_rows",
    "parse_when",
    "render_table",
    "style",
    "tail_line",
    "use_colour",
]

_RESET: Final = "\x1b[0m"
#: ANSI SGR codes per state: green, yellow, red, cyan, dim.
STATE_STYLES: Final[Mapping[str, str]] = {
    "healthy": "32",
    "degraded": "33",
    "unavailable": "31;1",
    "recovering": "36",
    "unknown": "2",
}
BREAKER_STYLES: Final[Mapping[str, str]] = {
    "closed": "32",
    "open": "31",
    "half_open": "36",
    "forced_open": "35",
    "disabled": "2",
}
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*m")

_TIME_FORMS: Final = 'an RFC 3339 time like "2026-11-25T19:00:00Z", "now", or relative like "-1h", "-30m", "-2d"'


def parse_when(text: str, now: datetime) -> datetime:
    """A command-line time: RFC 3339, ``now``, or ``-DURATION`` before ``now``."""
    value = text.strip()
    if not value:
        raise ValueError(f"expected {_TIME_FORMS}, got an empty string")
    if value.lower() == "now":
        return now
    if value.startswith("-"):
        try:
            return now - timedelta(seconds=parse_duration(value[1:]))
        except ValueError:
            raise ValueError(f"expected {_TIME_FORMS}, got {text!r}") from None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ValueError(f"expected {_TIME_FORMS}, got {text!r}") from None


def use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when ANSI colour may be written to ``stream``."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or odd stream
        return False


def style(text: str, code: str | None, colour: bool) -> str:
    """``text`` wrapped in the ANSI ``code`` when colour is on."""
    if not colour or not code or not text:
        return text
    return f"\x1b[{code}m{text}{_RESET}"


def _visible_len(text: str) -> int:
    return len(_ANSI_RE.sub("", text))


Cell = tuple[str, str | None]
"""A table cell: its text and its ANSI style code (None for plain)."""


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Cell | str]], *, colour: bool) -> str:
    """Aligned columns separated by two spaces; the last column is not padded."""
    cells: list[list[Cell]] = [[(h, "1") for h in headers]]
    for row in rows:
        cells.append([c if isinstance(c, tuple) else (c, None) for c in row])
    widths = [max(_visible_len(r[i][0]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = []
        for i, (text, code) in enumerate(row):
            pad = "" if i == len(row) - 1 else " " * (widths[i] - _visible_len(text))
            parts.append(style(text, code, colour) + pad)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_time(ts: datetime) -> str:
    """UTC time to the second, e.g. ``2026-11-25 19:44:46Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(seconds: float) -> str:
    if seconds < 1:
        return format_duration(round(seconds, 3)) if seconds > 0 else "0s"
    return format_duration(round(seconds))


def format_age(ts: datetime, now: datetime) -> str:
    """How long before ``now`` ``ts`` was: ``3m12s ago`` (``in 5s`` for the future)."""
    delta = (now - ts).total_seconds()
    if delta < 0:
        return f"in {_short(-delta)}"
    return f"{_short(delta)} ago"


def format_countdown(retry_at: datetime | None, now: datetime) -> str:
    """``in 12s`` until a retry, ``due`` once it has passed, empty when there is none."""
    if retry_at is None:
        return ""
    remaining = (retry_at - now).total_seconds()
    return "due" if remaining <= 0 else f"in {_short(remaining)}"


def _state_cell(event: StateChanged) -> Cell:
    text = event.state + (" (flapping)" if event.flapping else "")
    return text, STATE_STYLES.get(event.state)


def reason_text(event: StateChanged) -> str:
    """The reason as shown: a refresh says since when its state is unchanged."""
    if event.unchanged_since is not None:
        return f"unchanged since {format_time(event.unchanged_since)} (refresh): {event.reason}"
    return event.reason


STATUS_HEADERS: Final = ("TARGET", "STATE", "BREAKER", "SEQ", "SINCE", "RETRY", "FEATURES", "REASON")


def event_rows(events: Iterable[StateChanged], now: datetime) -> list[list[Cell | str]]:
    """Rows for the status / state-at table, sorted by target; times relative to ``now``."""
    rows: list[list[Cell | str]] = []
    for e in sorted(events, key=lambda e: e.target):
        rows.append(
            [
                (e.target, "1"),
                _state_cell(e),
                (e.breaker, BREAKER_STYLES.get(e.breaker)),
                str(e.seq),
                f"{format_time(e.at)} ({format_age(e.at, now)})",
                format_countdown(e.retry_at, now),
                ",".join(e.features),
                reason_text(e),
            ]
        )
    return rows


GROUP_HEADERS: Final = ("GROUP", "STATE", "IN", "POLICY", "SINCE", "MEMBERS")


def group_rows(groups: Iterable[GroupChanged], now: datetime) -> list[list[Cell | str]]:
    """Rows for the status table of groups: who is in (+) and out (-), with recent latencies."""
    rows: list[list[Cell | str]] = []
    for g in sorted(groups, key=lambda g: g.group):
        members = " ".join(
            ("+" if m.available else "-")
            + m.target
            + (f" {m.latency_ms:.1f}ms" if m.latency_ms is not None else "")
            + (" (primary)" if m.target == g.primary else "")
            for m in g.members
        )
        rows.append(
            [
                (g.group, "1"),
                (g.state, STATE_STYLES.get(g.state)),
                f"{g.available}/{len(g.members)}",
                g.policy,
                f"{format_time(g.at)} ({format_age(g.at, now)})",
                members,
            ]
        )
    return rows


HISTORY_HEADERS: Final = ("AT", "TARGET", "SEQ", "CHANGE", "BREAKER", "RETRY AT", "DECIDED BY", "REASON")


def decided_by(event: StateChanged) -> str:
    """``<coordinator> term <n>``: who stored the event, under which lease (empty if older)."""
    if event.coordinator is None:
        return ""
    return f"{event.coordinator} term {event.term}" if event.term is not None else event.coordinator


def history_rows(events: Iterable[StateChanged]) -> list[list[Cell | str]]:
    """Rows for the replay / tail table, in the order given."""
    rows: list[list[Cell | str]] = []
    for e in events:
        rows.append(history_row(e))
    return rows


def history_row(e: StateChanged) -> list[Cell | str]:
    """One replay / tail row."""
    state_text, state_code = _state_cell(e)
    return [
        format_time(e.at),
        (e.target, "1"),
        str(e.seq),
        (f"{e.previous} → {state_text}", state_code),
        (e.breaker, BREAKER_STYLES.get(e.breaker)),
        format_time(e.retry_at) if e.retry_at else "",
        decided_by(e),
        reason_text(e),
    ]


def tail_line(e: StateChanged, *, colour: bool) -> str:
    """One live change as a line of fixed-width fields (``tail`` cannot know widths ahead)."""
    state_text, state_code = _state_cell(e)
    change = f"{e.previous} → {state_text}"
    retry = f"  retry at {format_time(e.retry_at)}" if e.retry_at else ""
    fields = [
        format_time(e.at),
        style(e.target.ljust(20), "1", colour),
        "#" + str(e.seq).ljust(5),
        style(change.ljust(28), state_code, colour),
        style(e.breaker.ljust(11), BREAKER_STYLES.get(e.breaker), colour),
        reason_text(e) + retry,
    ]
    return "  ".join(fields).rstrip()
