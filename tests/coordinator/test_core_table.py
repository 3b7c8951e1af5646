"""The decider's rules tables (``_core/_rules.py``): complete, and shown as they are in
docs/coordinator.md ("The rules as a table").

The tables are the rules; docs/coordinator.md renders them for users. This test renders
them again and requires the documented block to be exactly that, so the documentation
cannot drift from what the decider runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from healthbus.coordinator._core._rules import DEADLINES, DECISIONS, STEPS, Facts, Input, decide

DOC = Path(__file__).resolve().parents[2] / "docs" / "coordinator.md"
BEGIN = "<!-- rules tables: generated from coordinator/src/healthbus/coordinator/_core/_rules.py -->"
END = "<!-- end of rules tables -->"


def render() -> str:
    inputs = get_args(Input)
    lines = [
        "What each input does in each breaker phase:",
        "",
        "| phase | " + " | ".join(f"`{i}`" for i in inputs) + " |",
        "|---" * (len(inputs) + 1) + "|",
    ]
    lines += [f"| `{phase}` | " + " | ".join(steps[i] for i in inputs) + " |" for phase, steps in STEPS.items()]
    lines += ["", "What an evaluation decides, per phase (the first row that holds):", ""]
    lines += ["| phase | when | then |", "|---|---|---|"]
    for phase, rows in DECISIONS.items():
        lines += [f"| `{phase}` | {row.when} | {row.then} |" for row in rows]
    lines += ["", "The timers each phase runs (and, in every phase, the refresh):", ""]
    lines += ["| phase | timers |", "|---|---|"]
    lines += [f"| `{phase}` | {', '.join(kinds)} |" for phase, kinds in DEADLINES.items()]
    return "\n".join(lines)


def test_docs_show_the_tables_the_decider_runs() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert documented == render(), "docs/coordinator.md's rules tables differ from _rules.py: paste render()"


def test_every_phase_takes_a_step_for_every_input() -> None:
    assert set(STEPS) == {"closed", "half_open", "open", "forced_open", "disabled"}
    for phase, steps in STEPS.items():
        assert set(steps) == set(get_args(Input)), phase
        assert set(DEADLINES[phase]) >= {"forget"}, phase


@pytest.mark.parametrize("phase", sorted(DECISIONS))
def test_every_decision_table_ends_with_a_row_that_always_holds(phase: str) -> None:
    last = DECISIONS[phase][-1]  # type: ignore[index]
    nothing = Facts(0, 0, 0, 0, 0, 0, 0, 0, 0, False, False, False)
    busy = Facts(5, 1, 1, 1, 1, 1, 2, 3, 1, True, True, True)
    assert last.holds(nothing)
    assert last.holds(busy)
    assert decide(phase, nothing) in {row.then for row in DECISIONS[phase]}  # type: ignore[arg-type,index]
