"""Pure helpers of the query commands: command-line times, colour decision, tables."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from healthbus.cli._format import (
    HISTORY_HEADERS,
    Cell,
    event_rows,
    format_age,
    format_countdown,
    history_rows,
    parse_when,
    reason_text,
    render_table,
    tail_line,
    use_colour,
)
from healthbus.cli._query import state_at
from tests.cli._support import event, story

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1h", NOW - timedelta(hours=1)),
        ("-30m", NOW - timedelta(minutes=30)),
        ("-2d", NOW - timedelta(days=2)),
        ("-1h30m", NOW - timedelta(minutes=90)),
        ("-250ms", NOW - timedelta(milliseconds=250)),
        ("now", NOW),
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T11:00:00+01:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-24", datetime(2026, 11, 24, tzinfo=UTC)),
    ],
)
def test_parse_when_accepts_rfc3339_and_relative(text: str, expected: datetime) -> None:
    """RFC 3339 (naive = UTC), `now` and `-DURATION` all resolve against the given now."""
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "-1", "-1x", "1h", "-h", "2026-13-01", "--1h"])
def test_parse_when_rejects_with_the_accepted_forms(text: str) -> None:
    """Anything else is a ValueError that tells the user what would have worked."""
    with pytest.raises(ValueError, match="RFC 3339") as info:
        parse_when(text, NOW)
    assert "-1h" in str(info.value)


def test_colour_only_on_a_terminal_without_no_color() -> None:
    """ANSI colour needs a TTY, an unset/empty NO_COLOR and a TERM other than dumb."""
    assert use_colour(_Tty(), {}) is True
    assert use_colour(_Tty(), {"NO_COLOR": ""}) is True
    assert use_colour(_Tty(), {"NO_COLOR": "1"}) is False
    assert use_colour(_Tty(), {"TERM": "dumb"}) is False
    assert use_colour(io.StringIO(), {}) is False


def test_table_columns_align_with_and_without_colour() -> None:
    """Colour codes do not count toward column widths, so both renderings line up the same."""
    rows: list[list[Cell | str]] = [[("a", "31"), "x", "tail"], [("longer", "32"), "yy", "t"]]
    plain = render_table(["H1", "H2", "H3"], rows, colour=False)
    coloured = render_table(["H1", "H2", "H3"], rows, colour=True)
    assert "\x1b[" not in plain
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    lines = plain.splitlines()
    assert [line.index("H2") for line in lines[:1]] == [lines[2].index("yy")] == [lines[1].index("x")]


def test_countdown_and_age() -> None:
    """retry countdown reads `in Ns`, `due` once passed, empty without retry_at; ages read `ago`."""
    assert format_countdown(NOW + timedelta(seconds=12.4), NOW) == "in 12s"
    assert format_countdown(NOW + timedelta(seconds=90), NOW) == "in 1m30s"
    assert format_countdown(NOW - timedelta(seconds=1), NOW) == "due"
    assert format_countdown(None, NOW) == ""
    assert format_age(NOW - timedelta(seconds=192), NOW) == "3m12s ago"
    assert format_age(NOW + timedelta(seconds=5), NOW) == "in 5s"


def test_status_rows_show_every_column() -> None:
    """A status row has target, state, breaker, seq, since, retry countdown, features and reason."""
    e = event(
        "cache",
        7,
        "unavailable",
        NOW - timedelta(seconds=30),
        breaker="open",
        reason="2/2 probes failed: refused",
        retry_at=NOW + timedelta(seconds=4),
        features=["cache", "rate-limit"],
    )
    (row,) = event_rows([e], NOW)
    texts = [c[0] if isinstance(c, tuple) else c for c in row]
    assert texts == [
        "cache",
        "unavailable",
        "open",
        "7",
        "2026-11-25 11:59:30Z (30s ago)",
        "in 4s",
        "cache,rate-limit",
        "2/2 probes failed: refused",
    ]


def test_history_rows_and_tail_line_show_the_change() -> None:
    """replay/tail rows show previous → state; a tail line carries no ANSI without colour."""
    events = story(NOW)
    rows = history_rows(events)
    assert len(rows) == len(events)
    assert rows[2][3] == ("healthy → unavailable", "31;1")
    line = tail_line(events[2], colour=False)
    assert "healthy → unavailable" in line
    assert "cache" in line
    assert "retry at" in line
    assert "\x1b[" not in line
    assert "\x1b[" in tail_line(events[2], colour=True)


def test_state_at_takes_the_last_event_at_or_before_t() -> None:
    """state-at keeps, per target, the highest-seq event whose `at` is not after T."""
    events = story(NOW)
    t_outage = events[2].at + timedelta(seconds=5)
    states = state_at(events, t_outage)
    assert states["cache"].state == "unavailable"
    assert states["cache"].seq == 2
    assert states["db"].state == "healthy"
    assert state_at(events, events[0].at - timedelta(seconds=1)) == {}
    assert state_at(events, events[2].at)["cache"].seq == 2
    assert state_at(events, NOW)["cache"].state == "healthy"


def test_a_refresh_shows_since_when_it_is_unchanged() -> None:
    """A refresh's row names the time of the real change; a change shows its reason as is."""
    change = event("db", 1, "healthy", at=NOW - timedelta(days=15))
    refresh = msgspec.structs.replace(change, seq=2, previous="healthy", at=NOW, unchanged_since=change.at)
    assert reason_text(change) == change.reason
    assert reason_text(refresh) == f"unchanged since 2026-11-10 12:00:00Z (refresh): {change.reason}"
    assert reason_text(refresh) in tail_line(refresh, colour=False)


def test_history_rows_say_who_stored_each_event_under_which_lease_term() -> None:
    """replay's DECIDED BY column: the coordinator and its term; empty for older events."""
    old, *_ = story(NOW)
    new = msgspec.structs.replace(old, coordinator="coord-b-77", term=118)
    unleased = msgspec.structs.replace(old, coordinator="coord-c-1", term=0)
    column = HISTORY_HEADERS.index("DECIDED BY")
    rows = history_rows([old, new, unleased])
    assert [row[column] for row in rows] == ["", "coord-b-77 term 118", "coord-c-1 term 0"]
