"""Failure reports in, confirmation rounds out: reports start checks, never verdicts, but
one: a re-admission failing under the fleet's traffic.

Services publish :class:`~healthbus.protocol.FailureReport` on ``<prefix>.report.<target>``
when they see a dependency fail. :class:`~._core.ConfirmPlanner` turns them into at most
one confirmation round per target per window, published as a
:class:`~healthbus.protocol.ConfirmRequest` on ``<prefix>.confirm.<target>``; the probe
workers that check the target check it at once and their ordinary ProbeResults are
decided by the usual rules. The only state reports change is a re-admission ramp in
progress: the decision core (:meth:`~._core.Decider.on_report`) re-opens the breaker when
enough distinct instances report the target failing during it, and those events are
published like any other.

Checks, cheapest first (as for probe results): the subject names a configured target
(before decoding), size, decoding, subject/target match; then the planner. Reports for
unknown targets, oversized, malformed or mismatched ones and floods from one instance are
dropped and counted under ``report_*`` drop reasons. A report costs a dict lookup or two
and runs on its own subscription, so a flood of reports never delays probe results.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from healthbus.coordinator._core import ConfirmPlanner, Decider, Now
from healthbus.coordinator._counters import Counters
from healthbus.protocol import (
    MAX_MESSAGE_BYTES,
    ConfirmRequest,
    ProtocolError,
    StateChanged,
    Subjects,
    decode_failure_report,
    encode,
)

log = logging.getLogger("healthbus.coordinator")

#: Pending-message limit of the report subscription: beyond it nats-py drops (counted).
REPORT_PENDING_MSGS: Final = 50_000


class ReportIntake:
    """Counts failure reports and sends confirmation rounds for the active coordinator."""

    def __init__(
        self,
        planner: ConfirmPlanner,
        counters: Counters,
        *,
        subjects: Subjects,
        now: Callable[[], Now],
    ) -> None:
        self.planner = planner
        self.counters = counters
        self.subjects = subjects
        self._base = f"{subjects.prefix}.report."
        self._now = now
        self.decider: Decider | None = None
        self.nc: Client | None = None
        self._emit: Callable[[Sequence[StateChanged]], None] | None = None
        self.publish_errors = 0
        """Confirmation requests that could not be published."""
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, decider: Decider, nc: Client, emit: Callable[[Sequence[StateChanged]], None]) -> None:
        """Use ``decider`` (the current term's), publish rounds on ``nc`` and events with ``emit``."""
        self.decider = decider
        self.nc = nc
        self._emit = emit

    async def on_report(self, msg: Msg) -> None:
        """Subscription callback of ``<prefix>.report.*``."""
        self.handle_report(msg.subject, msg.data)

    def handle_report(self, subject: str, data: bytes) -> None:
        """Check, count and plan one FailureReport message (synchronous)."""
        decider = self.decider
        if decider is None:
            return
        counters = self.counters
        name = subject[len(self._base) :]
        if name not in decider.names:
            counters.drop("report_unknown_target", f"no target {name[:80]!r} in the configuration ({subject[:120]})")
            return
        if len(data) > MAX_MESSAGE_BYTES:
            counters.drop("report_oversized", f"{len(data)} bytes on {subject}")
            return
        try:
            report = decode_failure_report(data, subject_target=name)
        except ProtocolError as exc:
            counters.drop("report_malformed", f"on {subject}: {str(exc)[:300]}")
            return
        now = self._now()
        verdict = self.planner.on_report(name, report.instance, now.mono, held=self._held(decider, name, now))
        if verdict == "flood":
            counters.drop("report_flood", f"{name}: instance {report.instance[:80]!r} reports faster than 1/s")
            return
        if verdict == "round":
            self._send_round(name, now)
        events = decider.on_report(name, report.instance, report.kind, report.at, now)
        if events and self._emit is not None:
            self._emit(events)

    @staticmethod
    def _held(decider: Decider, name: str, now: Now) -> bool:
        """Whether a report must add no check of ``name`` now: disabled, open (before
        retry_at the backoff holds it, after it the workers trial it at their cadence:
        reports add nothing to that), or forced open until a future retry_at."""
        _, breaker, _ = decider.state(name)
        if breaker in ("disabled", "open"):
            return True
        if breaker != "forced_open":
            return False
        event = decider.current(name)
        retry_at = event.retry_at if event is not None else None
        return retry_at is None or retry_at > now.wall

    def _send_round(self, name: str, now: Now) -> None:
        nc = self.nc
        request = ConfirmRequest(
            target=name,
            round=self.planner.round_number(name),
            at=now.wall,
            reports=self.planner.take_pending(name),
            instances=self.planner.instances(name),
        )
        if nc is None or not nc.is_connected:
            self.publish_errors += 1
            return
        task = asyncio.get_running_loop().create_task(self._publish(nc, self.subjects.confirm(name), encode(request)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "%s: confirmation round %d (%d reports from %d instances so far)",
            name,
            request.round,
            self.planner.reports.get(name, 0),
            request.instances,
        )

    async def _publish(self, nc: Client, subject: str, data: bytes) -> None:
        try:
            await nc.publish(subject, data)
        except Exception as exc:  # closed or overfull connection: count it, never raise
            self.publish_errors += 1
            log.debug("confirmation request on %s not published: %s", subject, type(exc).__name__)


class ReportsCollector(Collector):
    """Exposes the report and confirmation counters per target."""

    def __init__(self, intake: Callable[[], ReportIntake]) -> None:
        self._intake = intake

    def collect(self) -> Iterator[Metric]:
        """Build the report metric families from the planner's counters."""
        intake = self._intake()
        planner = intake.planner
        reports = CounterMetricFamily(
            "healthbus_reports",
            "Failure reports from services accepted, by target and what they led to",
            labels=["target", "result"],
        )
        for (target, verdict), n in sorted(planner.outcomes.items()):
            if verdict != "flood":
                reports.add_metric([target, verdict], n)
        yield reports
        rounds = CounterMetricFamily(
            "healthbus_confirm_rounds", "Confirmation rounds sent to the probe workers, by target", labels=["target"]
        )
        instances = GaugeMetricFamily(
            "healthbus_report_instances", "Distinct service instances that reported the target", labels=["target"]
        )
        for target in sorted(planner.reports):
            rounds.add_metric([target], planner.rounds.get(target, 0))
            instances.add_metric([target], planner.instances(target))
        yield rounds
        yield instances
        yield CounterMetricFamily(
            "healthbus_confirm_publish_errors",
            "Confirmation requests that could not be published",
            value=intake.publish_errors,
        )
