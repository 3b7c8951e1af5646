"""The per-file score of a mutmut run: reads ``mutmut results --all true`` on stdin.

Used by scripts/mutation. A mutant is *detected* when a test failed on it (killed), it
ran out of time, or crashed the interpreter; *survived* when every test passed on it, or
no test reached the code it changed ("no tests"), or mutmut could not tell (suspicious).
Mutants not checked (yet) count for neither. The score is detected / (detected + survived).
"""

from __future__ import annotations

import sys
from collections import Counter

PACKAGES = {"healthbus.protocol", "healthbus.coordinator", "healthbus.coordinator._core"}
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests", "suspicious"}


def module_of(key: str) -> str:
    """``healthbus.coordinator._core._flap`` of ``healthbus.coordinator._core._flap.xǁFlap…``."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part.startswith(("x_", "xǁ")):
            return ".".join(parts[:i])
    return key.rpartition(".")[0]


def main() -> int:
    detected: Counter[str] = Counter()
    survived: Counter[str] = Counter()
    unchecked: Counter[str] = Counter()
    survivors: list[tuple[str, str]] = []
    for line in sys.stdin:
        key, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue
        module = module_of(key)
        if status in DETECTED:
            detected[module] += 1
        elif status in SURVIVED:
            survived[module] += 1
            survivors.append((key, status))
        else:
            unchecked[module] += 1
    modules = sorted(set(detected) | set(survived) | set(unchecked))
    if not modules:
        print("no mutants found", file=sys.stderr)
        return 1
    for key, status in survivors:
        print(f"{status:>10}  {key}")
    print(f"\n{'file':<44} {'mutants':>8} {'killed':>8} {'survived':>9} {'unchecked':>10} {'score':>7}")
    groups = [(m, [m]) for m in modules]
    groups.append(("coordinator/_core/ (all)", [m for m in modules if "._core" in m]))
    groups.append(("protocol/ (all)", [m for m in modules if m.startswith("healthbus.protocol")]))
    for name, members in groups:
        if not members:
            continue
        d = sum(detected[m] for m in members)
        s = sum(survived[m] for m in members)
        u = sum(unchecked[m] for m in members)
        score = f"{100 * d / (d + s):.1f}%" if d + s else "-"
        label = name.removeprefix("healthbus.").replace(".", "/")
        if name in modules:  # a package's own mutants carry its name (mutmut drops __init__)
            label += "/__init__.py" if name in PACKAGES else ".py"
        print(f"{label:<44} {d + s + u:>8} {d:>8} {s:>9} {u:>10} {score:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
