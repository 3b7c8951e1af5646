"""Durations in config: strings with a unit."""

from __future__ import annotations

import pytest

from healthbus.protocol import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("30d", 2592000.0), ("1m30s", 90.0), ("1.5s", 1.5)],
)
def test_parse(text: str, seconds: float) -> None:
    """Each unit and combinations parse to seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "", "5x", "s", "-1s", "5 s s", "1e3s"])
def test_parse_rejects(text: str) -> None:
    """A number without a unit, or anything else, is refused with the accepted forms."""
    with pytest.raises(ValueError, match="duration with a unit"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250ms"), (5, "5s"), (90, "1m30s"), (2592000, "30d")])
def test_format(seconds: float, text: str) -> None:
    """format_duration gives the short form, and parses back."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
