"""The pure decision core of the coordinator: no I/O, no clock, no global random.

See :mod:`._decider` for the rules it enforces and the invariants of the events it emits.
"""

# Lives in healthbus.protocol (subscribers need it too); kept here for existing imports.
from healthbus.protocol import is_refresh

from ._backoff import backoff_delay, exponential_cap
from ._catchup import catch_up
from ._confirm import CONFIRM_WINDOW, ConfirmPlanner, ReportVerdict
from ._decider import (
    FORGET_AFTER_STALE,
    MAINTENANCE_MARK,
    MAX_VANTAGE_POINTS,
    RETIRED_REASON,
    ControlAction,
    ControlError,
    Decider,
    DropReason,
    Now,
    Rejected,
    degraded_need,
    quorum_need,
)
from ._flap import FlapDetector

__all__ = [
    "CONFIRM_WINDOW",
    "FORGET_AFTER_STALE",
    "MAINTENANCE_MARK",
    "MAX_VANTAGE_POINTS",
    "RETIRED_REASON",
    "ConfirmPlanner",
    "ControlAction",
    "ControlError",
    "Decider",
    "DropReason",
    "FlapDetector",
    "Now",
    "Rejected",
    "ReportVerdict",
    "backoff_delay",
    "catch_up",
    "degraded_need",
    "exponential_cap",
    "is_refresh",
    "quorum_need",
]
