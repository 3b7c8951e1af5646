"""The pure decision core of the coordinator: no I/O, no clock, no global random.

See :mod:`._decider` for the rules it enforces and the invariants of the events it emits.
"""

# Lives in healthbus.protocol (subscribers need it too); kept here for existing imports.
from healthbus.protocol import group_state, is_refresh

from ._backoff import backoff_delay, exponential_cap
from ._confirm import CONFIRM_WINDOW, ConfirmPlanner, ReportVerdict
from ._decider import (
    FORGET_AFTER_STALE,
    MAINTENANCE_MARK,
    MAX_VANTAGE_POINTS,
    PROBATION_MIN_S,
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
from ._groups import Latencies, group_event, supersede
from ._standby import Standby

__all__ = [
    "CONFIRM_WINDOW",
    "FORGET_AFTER_STALE",
    "MAINTENANCE_MARK",
    "MAX_VANTAGE_POINTS",
    "PROBATION_MIN_S",
    "RETIRED_REASON",
    "ConfirmPlanner",
    "ControlAction",
    "ControlError",
    "Decider",
    "DropReason",
    "FlapDetector",
    "Latencies",
    "Now",
    "Rejected",
    "ReportVerdict",
    "Standby",
    "backoff_delay",
    "degraded_need",
    "exponential_cap",
    "group_event",
    "group_state",
    "is_refresh",
    "quorum_need",
    "supersede",
]
