"""What every suite shares: options, the result of a run, and how it is printed.

A suite is ``async def run(opts: BenchOptions) -> SuiteResult``. Its JSON object holds
the keys the issue names (``data``), plus ``suite``, ``size``, ``goals`` (each with
``met`` true/false/null and a sentence) and ``machine``. The human table shows the same.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["SUITES", "BenchOptions", "Goal", "SuiteResult", "SuiteUnavailable", "load_suite", "settings_not_default"]

Size = Literal["smoke", "full"]

#: Suite name → module that provides ``async def run(opts) -> SuiteResult``.
SUITES: dict[str, str] = {
    "coordinator": "healthbus.bench._coordinator",
    "latency": "healthbus.bench._latency",
    "scale": "healthbus.bench._scale",
    "fanout": "healthbus.bench._fanout",
    "client": "healthbus.bench._client",
    "failover": "healthbus.bench._failover",
    "fleet": "healthbus.bench._fleet",
    "outage": "healthbus.bench._outage",
    "groups": "healthbus.bench._groups",
    "partitions": "healthbus.bench._partitions",
}


class SuiteUnavailable(RuntimeError):
    """A suite cannot run here (a component it measures is missing); the text says which."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Sizes and knobs; ``None`` means the suite's default for ``size``."""

    size: Size = "full"
    workdir: Path = Path(".")
    messages: int | None = None
    targets: int | None = None
    subscribers: int | None = None
    instances: int | None = None
    duration: float | None = None
    repeat: int | None = None
    calls: int | None = None
    interval: float | None = None
    partitions: int | None = None
    seed: int = 1

    def pick(self, name: str, *, smoke: Any, full: Any) -> Any:
        """The explicit option ``name`` if given, else the default for this size."""
        value = getattr(self, name)
        if value is not None:
            return value
        return smoke if self.size == "smoke" else full


@dataclass(slots=True)
class Goal:
    """A target figure from the issue and whether this run met it (None: not judged)."""

    text: str
    met: bool | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """``{"goal", "met", "detail"}``."""
        return {"goal": self.text, "met": self.met, "detail": self.detail}


@dataclass(slots=True)
class SuiteResult:
    """One suite's figures: ``data`` becomes the top-level JSON keys."""

    suite: str
    size: Size
    data: dict[str, Any]
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object printed with ``--json``."""
        out: dict[str, Any] = {"suite": self.suite, "size": self.size}
        out.update(self.data)
        out["goals"] = [g.to_json() for g in self.goals]
        if self.notes:
            out["notes"] = list(self.notes)
        out["machine"] = self.machine
        return out

    def json_line(self) -> str:
        """One line of JSON (no spaces to spare, keys in a stable order)."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    def table(self) -> str:
        """A readable two-column table, then the goals and notes."""
        rows = [(k, _fmt(v)) for k, v in self.data.items() if not isinstance(v, dict | list)]
        width = max((len(k) for k, _ in rows), default=10)
        lines = [f"== healthbus bench {self.suite} ({self.size}) =="]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        for k, v in self.data.items():
            if isinstance(v, dict | list):
                lines.append(f"  {k:<{width}}  {json.dumps(v)}")
        for g in self.goals:
            mark = "n/a " if g.met is None else ("MET " if g.met else "MISS")
            lines.append(f"  [{mark}] {g.text}" + (f": {g.detail}" if g.detail else ""))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def load_suite(name: str) -> Callable[[BenchOptions], Awaitable[SuiteResult]]:
    """The ``run`` function of suite ``name`` (KeyError for an unknown name)."""
    module = importlib.import_module(SUITES[name])
    run: Callable[[BenchOptions], Awaitable[SuiteResult]] = module.run
    return run


def settings_not_default(config_text: str) -> dict[str, Any]:
    """The per-target settings of ``config_text`` (its first target) that differ from the
    shipped defaults, as ``{key: value}`` (nested tables as ``"backoff.base"``): what a
    suite's JSON says it changed."""
    import msgspec

    from healthbus.protocol import CheckSettings, load_config_text

    target = load_config_text(config_text, source="<bench>", env={}).targets[0]
    shipped = msgspec.structs.asdict(CheckSettings())
    mine = msgspec.structs.asdict(target)
    out: dict[str, Any] = {}
    for key, default in shipped.items():
        value = mine[key]
        if isinstance(default, msgspec.Struct):
            for sub, sub_default in msgspec.structs.asdict(default).items():
                sub_value = getattr(value, sub)
                if sub_value != sub_default:
                    out[f"{key}.{sub}"] = sub_value
        elif value != default:
            out[key] = value
    return out
