"""Durations in configuration: strings with a unit, ``"250ms"``, ``"5s"``, ``"2m"``.

Units: ``ms``, ``s``, ``m``, ``h``, ``d``; parts may be combined (``"1m30s"``) and
numbers may have a fraction (``"1.5s"``). A bare number is refused: a unit-less
duration is the classic source of "was that seconds or milliseconds?" outages.
"""

from __future__ import annotations

import re
from typing import Final

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE_RE: Final = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError with the accepted forms when it is not a duration."""
    compact = text.strip()
    if not _WHOLE_RE.match(compact):
        raise ValueError(f'expected a duration with a unit like "250ms", "5s", "2m", "1h" or "30d", got {text!r}')
    return sum(float(n) * _UNITS[unit] for n, unit in _PART_RE.findall(compact))


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``: ``"250ms"``, ``"5s"``, ``"2m"``, ``"1h30m"``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    out = "".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v)
    return out or "0s"
