"""JetStream settings of the state stream (docs/contract.md).

The stream is the single source of truth: its last message per subject is every
target's current state, its history the audit log. The settings live here as plain data
so that this package stays free of nats-py; the NATS layers turn them into a
``nats.js.api.StreamConfig``.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from healthbus.protocol._subjects import DEFAULT_PREFIX, Subjects

DEFAULT_STREAM: Final = "HEALTHBUS_STATE"
DEFAULT_MAX_AGE_S: Final = 30 * 24 * 3600.0
DEFAULT_DUPLICATE_WINDOW_S: Final = 120.0


def stream_name_for(prefix: str) -> str:
    """``HEALTHBUS_STATE`` for the default prefix, ``<PREFIX>_STATE`` for others."""
    if prefix == DEFAULT_PREFIX:
        return DEFAULT_STREAM
    return re.sub(r"[^A-Z0-9_]", "_", prefix.upper()) + "_STATE"


class StreamSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What the ``HEALTHBUS_STATE`` stream must look like.

    File storage, one subject per target (and one per group: GroupChanged), history kept ``max_age_s`` (the audit log),
    a ``duplicate_window_s`` long enough to drop a re-publish after a coordinator crash
    (``Nats-Msg-Id: <target>:<seq>``).
    """

    name: str
    subjects: list[str]
    max_age_s: float = DEFAULT_MAX_AGE_S
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    storage: str = "file"
    replicas: int = 1

    @classmethod
    def for_prefix(
        cls,
        prefix: str = DEFAULT_PREFIX,
        *,
        name: str | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        replicas: int = 1,
    ) -> StreamSettings:
        """The settings for the state stream of ``prefix``."""
        return cls(
            name=name or stream_name_for(prefix),
            subjects=[Subjects(prefix).state_all, Subjects(prefix).group_all],
            max_age_s=max_age_s,
            duplicate_window_s=duplicate_window_s,
            replicas=replicas,
        )
