"""Prometheus metrics of the coordinator, read from plain counters at scrape time.

The hot path only increments ints in dicts; this collector turns them into metric
families when ``/metrics`` is scraped, so a result costs no lock and no label lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from healthbus.protocol import BREAKER_STATES, GROUP_STATES, STATES

if TYPE_CHECKING:
    from healthbus.coordinator._service import CoordinatorService

#: Upper bounds (seconds) of the decision-time histogram buckets.
DECISION_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2)


class ServiceCollector(Collector):
    """Exposes a :class:`CoordinatorService`'s counters."""

    def __init__(self, service: CoordinatorService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        """Build every metric family from the service's current counters."""
        s = self._service
        results = CounterMetricFamily(
            "healthbus_results", "ProbeResults accepted and decided, by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(s.results.items()):
            results.add_metric([outcome], n)
        yield results
        dropped = CounterMetricFamily(
            "healthbus_dropped_messages", "Messages counted and dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(s.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        transitions = CounterMetricFamily(
            "healthbus_transitions", "StateChanged events decided", labels=["target", "from", "to"]
        )
        for (target, old, new), n in sorted(s.transitions.items()):
            transitions.add_metric([target, old, new], n)
        yield transitions
        state = GaugeMetricFamily(
            "healthbus_target_state", "1 for the current state of each target", labels=["target", "state"]
        )
        breaker = GaugeMetricFamily(
            "healthbus_target_breaker", "1 for the current breaker state of each target", labels=["target", "breaker"]
        )
        for target in s.decider.names:
            current, current_breaker, _ = s.decider.state(target)
            for name in STATES:
                state.add_metric([target, name], 1.0 if name == current else 0.0)
            for mode in BREAKER_STATES:
                breaker.add_metric([target, mode], 1.0 if mode == current_breaker else 0.0)
        yield state
        yield breaker
        yield from _group_metrics(s)
        yield CounterMetricFamily(
            "healthbus_published_events", "StateChanged events acked by JetStream", value=s.published
        )
        yield GaugeMetricFamily(
            "healthbus_outbox_pending", "StateChanged events waiting to be published", value=s.pending
        )
        yield GaugeMetricFamily("healthbus_ready", "1 when connected and restored", value=1.0 if s.ready else 0.0)
        yield GaugeMetricFamily(
            "healthbus_leader", "1 while this coordinator is the active one", value=1.0 if s.active else 0.0
        )
        hist = HistogramMetricFamily(
            "healthbus_decision_seconds", "Time to decode and decide one ProbeResult (1 in 64 sampled)"
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(DECISION_BUCKETS, s.decision_buckets, strict=False):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + s.decision_buckets[-1]))
        hist.add_metric([], buckets, sum_value=s.decision_sum)
        yield hist


def _group_metrics(s: CoordinatorService) -> Iterator[Metric]:
    """``[[groups]]``: each group's state, members in, and each member's in/out and recent latency."""
    groups = s.groups
    state = GaugeMetricFamily(
        "healthbus_group_state", "1 for the current state of each group", labels=["group", "state"]
    )
    members_in = GaugeMetricFamily("healthbus_group_members_available", "Members of each group in", labels=["group"])
    member = GaugeMetricFamily(
        "healthbus_group_member_available", "1 while a member is in its group", labels=["group", "member"]
    )
    latency = GaugeMetricFamily(
        "healthbus_group_member_latency_ms", "A member's recent check latency (ms)", labels=["group", "member"]
    )
    for name in sorted(groups.groups):
        last = groups.last.get(name)
        if last is None:
            continue
        for st in GROUP_STATES:
            state.add_metric([name, st], 1.0 if st == last.state else 0.0)
        members_in.add_metric([name], float(last.available))
        for m in last.members:
            member.add_metric([name, m.target], 1.0 if m.available else 0.0)
            ms = groups.latencies.ms.get(m.target)
            if ms is not None:
                latency.add_metric([name, m.target], ms)
    yield state
    yield members_in
    yield member
    yield latency
