"""Choosing a group member for one call, for the adapters (SQLAlchemy GroupRouter, Redis HealthyRedisGroup).

``pick()`` knows what the bus and this instance's availability say; an adapter also knows
which members failed *here* moments ago (its per-member local trip). :func:`choose` takes
the policy's pick, passes over members the adapter cannot use now (up to one round of the
rotation), then any other usable member in configured order, and raises
:class:`DependencyUnavailable` (``target`` the group) when there is none.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from healthbus.subscribers._view import DependencyUnavailable, GroupHealthView


def choose(
    health: GroupHealthView,
    group: str,
    members: Sequence[str],
    usable: Callable[[str], bool],
    *,
    primary: str | None,
    read_only: bool,
    skip: Collection[str] = (),
) -> str:
    """The member a read (``read_only``) or write should use now (module docstring).

    ``usable(member)``: the adapter may call it now (available and not tripped here);
    ``skip``: members this call already failed on.
    """
    passed: list[str] = []
    for _ in range(len(members)):
        member = health.pick(group, read_only=read_only)
        if member not in skip and usable(member):
            return member
        if member in passed:
            break
        passed.append(member)
    spec = health.group(group)
    reads_on_primary = spec is not None and spec.reads_on_primary
    for member in members:
        if read_only and member == primary and not reads_on_primary:
            continue
        if member not in skip and member not in passed and usable(member):
            return member
    what = "replica" if read_only and primary is not None else "member"
    failed = ", ".join(dict.fromkeys([*skip, *passed]))
    raise DependencyUnavailable(group, None, f"no {what} usable here (failed here moments ago: {failed})")


def check_members(group: str, members: Collection[str], primary: str | None, what: str) -> None:
    """ValueError unless there is a ``what`` (client, engine) per member and the primary is one of them."""
    if not members:
        raise ValueError(f"group {group!r}: expected {what} per member, got none")
    if primary is not None and primary not in members:
        raise ValueError(f"group {group!r}: primary {primary!r} has no {what.removeprefix('a ').removeprefix('an ')}")
