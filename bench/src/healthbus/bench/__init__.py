"""healthbus benchmarks (docs/performance.md), run by ``healthbus bench``.

Every figure is a ratio or a distribution measured in one run on one machine against a
baseline measured in the same run: the machine is shared and absolute numbers drift.
Each suite starts its own servers on loopback and stops every process it started.
"""

from healthbus.bench._framework import SUITES, BenchOptions, Goal, SuiteResult, SuiteUnavailable, load_suite
from healthbus.bench._measure import ProcessUsage, machine_description, percentile, summarize_ms

__all__ = [
    "SUITES",
    "BenchOptions",
    "Goal",
    "ProcessUsage",
    "SuiteResult",
    "SuiteUnavailable",
    "load_suite",
    "machine_description",
    "percentile",
    "summarize_ms",
]
