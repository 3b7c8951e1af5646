"""Subject names (docs/contract.md) and the target-name rule.

A target name is a single NATS token: ``^[a-z0-9][a-z0-9_-]{0,63}$``. Subjects are
``<prefix>.probe.<target>.<probe>``, ``<prefix>.state.<target>``, ``<prefix>.ctl.<command>``,
``<prefix>.worker.<...>``, ``<prefix>.report.<target>``, ``<prefix>.confirm.<target>`` and
``<prefix>.group.<group>``;
the prefix defaults to ``healthbus`` and may itself contain dots (``acme.healthbus``), so tests
and tenants can share one NATS server.

``<probe>`` is the :func:`probe_token` of the vantage point's probe id, so NATS
permissions can bind a credential to the one vantage point it speaks for.
"""

from __future__ import annotations

import re
from typing import Final

TARGET_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PREFIX_PATTERN: Final = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
DEFAULT_PREFIX: Final = "healthbus"

_TARGET_RE: Final = re.compile(TARGET_PATTERN)
_PREFIX_RE: Final = re.compile(PREFIX_PATTERN)
_TOKEN_RE: Final = re.compile(r"[^A-Za-z0-9_-]")


def probe_token(probe_id: str) -> str:
    """The subject token of a probe (worker) id: every character outside ``A-Za-z0-9_-``
    becomes ``_`` (a single NATS token; ``"_"`` for an empty id)."""
    return _TOKEN_RE.sub("_", probe_id) or "_"


#: Most partitions ``[coordinator] partitions`` accepts.
MAX_PARTITIONS: Final = 64

_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


def partition_of(name: str, partitions: int) -> int:
    """The partition (``0 … partitions-1``) of a target: FNV-1a 32-bit of the name's UTF-8
    bytes, modulo ``partitions`` — the hash of nats-server's subject-mapping function
    ``{{partition(N, i)}}`` (``getHashPartition`` in its ``server/subject_transform.go``),
    so a mapping on the target token routes each target exactly as the coordinators split
    them (tests/cli/test_partitions.py checks it against a real server).

    >>> partition_of("redis-main", 1), partition_of("t1", 3), partition_of("t2", 3)
    (0, 1, 2)
    """
    if partitions <= 1:
        return 0
    h = _FNV_OFFSET
    for byte in name.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h % partitions


def is_valid_target(name: str) -> bool:
    """True when ``name`` follows the target-name rule."""
    return _TARGET_RE.match(name) is not None and not name.endswith("\n")


def validate_target(name: str) -> str:
    """Return ``name`` or raise ValueError saying what the rule is."""
    if not is_valid_target(name):
        raise ValueError(
            f"invalid target name {name!r}: expected 1-64 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class Subjects:
    """Builds and parses the subjects of one prefix.

    >>> s = Subjects("healthbus")
    >>> s.probe("redis-main", "web-1"), s.state_all
    ('healthbus.probe.redis-main.web-1', 'healthbus.state.*')
    """

    __slots__ = (
        "_group_base",
        "_probe_base",
        "_state_base",
        "ctl_all",
        "digest",
        "group_all",
        "prefix",
        "probe_all",
        "state_all",
        "worker_all",
    )

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if _PREFIX_RE.match(prefix) is None:
            raise ValueError(
                f"invalid subject prefix {prefix!r}: expected dot-separated tokens of letters, digits, '_' or '-'"
            )
        self.prefix = prefix
        self._probe_base = f"{prefix}.probe."
        self._state_base = f"{prefix}.state."
        self.probe_all = f"{prefix}.probe.*.*"
        self.state_all = f"{prefix}.state.*"
        self._group_base = f"{prefix}.group."
        self.group_all = f"{prefix}.group.*"
        self.ctl_all = f"{prefix}.ctl.>"
        self.worker_all = f"{prefix}.worker.>"
        self.digest = f"{prefix}.digest"
        """``<prefix>.digest``: the coordinator's StateDigest (every target's latest seq)."""

    def probe(self, target: str, probe: str) -> str:
        """``<prefix>.probe.<target>.<probe-token>``: where the ProbeResults of probe id
        ``probe`` for ``target`` go."""
        return f"{self._probe_base}{validate_target(target)}.{probe_token(probe)}"

    def partition_probe_all(self, partition: int) -> str:
        """``<prefix>.part.<p>.probe.*.*``: partition ``p``'s results once nats-server maps
        ``<prefix>.probe.*.*`` there with ``{{partition(N,1)}}`` (``[coordinator]
        partition_routing = "server"``, deploy/nats/partitions.example.conf)."""
        return f"{self.prefix}.part.{partition}.probe.*.*"

    def state(self, target: str) -> str:
        """``<prefix>.state.<target>``: where StateChanged for ``target`` go."""
        return self._state_base + validate_target(target)

    def group(self, name: str) -> str:
        """``<prefix>.group.<group>``: where GroupChanged for group ``name`` go (extension)."""
        return self._group_base + validate_target(name)

    def group_name(self, subject: str) -> str | None:
        """The group token of a group subject, or None if it is not one (or is invalid)."""
        return self._target_after(subject, self._group_base)

    def ctl(self, command: str) -> str:
        """``<prefix>.ctl.<command>``: operator request/reply."""
        return f"{self.prefix}.ctl.{command}"

    def worker(self, *tokens: str) -> str:
        """``<prefix>.worker.<tokens...>``: probe-worker heartbeats and membership."""
        return ".".join((f"{self.prefix}.worker", *tokens))

    def report(self, target: str) -> str:
        """``<prefix>.report.<target>``: where a service instance reports a failure it saw."""
        return f"{self.prefix}.report.{validate_target(target)}"

    @property
    def report_all(self) -> str:
        """``<prefix>.report.*``: every target's failure reports (the coordinator reads them)."""
        return f"{self.prefix}.report.*"

    def confirm(self, target: str) -> str:
        """``<prefix>.confirm.<target>``: the coordinator asks the workers to check ``target`` now."""
        return f"{self.prefix}.confirm.{validate_target(target)}"

    @property
    def confirm_all(self) -> str:
        """``<prefix>.confirm.*``: every target's confirmation requests (probe workers read them)."""
        return f"{self.prefix}.confirm.*"

    def report_target(self, subject: str) -> str | None:
        """The target token of a report subject, or None if it is not one (or is invalid)."""
        return self._target_after(subject, f"{self.prefix}.report.")

    def confirm_target(self, subject: str) -> str | None:
        """The target token of a confirm subject, or None if it is not one (or is invalid)."""
        return self._target_after(subject, f"{self.prefix}.confirm.")

    def probe_target(self, subject: str) -> str | None:
        """The target token of a probe subject (``<prefix>.probe.<target>.<probe>``), or None
        if it is not one (or is invalid)."""
        if not subject.startswith(self._probe_base):
            return None
        target, dot, token = subject[len(self._probe_base) :].partition(".")
        if not dot or not token or "." in token:
            return None
        return target if is_valid_target(target) else None

    def state_target(self, subject: str) -> str | None:
        """The target token of a state subject, or None if it is not one (or is invalid)."""
        return self._target_after(subject, self._state_base)

    @staticmethod
    def _target_after(subject: str, base: str) -> str | None:
        if not subject.startswith(base):
            return None
        token = subject[len(base) :]
        return token if is_valid_target(token) else None
