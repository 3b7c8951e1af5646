"""The pure decision core of the coordinator: no I/O, no clock, no global random.

See :mod:`._decider` for the rules it enforces and the invariants of the events it emits.
"""

from ._backoff import backoff_delay, exponential_cap
from ._decider import (
    FORGET_AFTER_STALE,
    MAINTENANCE_MARK,
    MAX_VANTAGE_POINTS,
    REFRESH_MARK,
    RETIRED_REASON,
    ControlAction,
    ControlError,
    Decider,
    DropReason,
    Now,
    Rejected,
    is_refresh,
    quorum_need,
)
from ._flap import FlapDetector

__all__ = [
    "FORGET_AFTER_STALE",
    "MAINTENANCE_MARK",
    "MAX_VANTAGE_POINTS",
    "REFRESH_MARK",
    "RETIRED_REASON",
    "ControlAction",
    "ControlError",
    "Decider",
    "DropReason",
    "FlapDetector",
    "Now",
    "Rejected",
    "backoff_delay",
    "exponential_cap",
    "is_refresh",
    "quorum_need",
]
