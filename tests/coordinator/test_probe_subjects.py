"""The probe id travels in the subject: the coordinator service against a real nats-server.

Results go on ``<prefix>.probe.<target>.<probe>``; a result speaking for another probe than
its subject's is dropped (``probe_mismatch``); the old ``<prefix>.probe.<target>`` form is
taken only behind ``[coordinator] legacy_probe_subjects``.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from healthbus.bus import sync_subscriptions
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import Subjects, encode, load_config_text
from tests.helpers import probe_result, wait_until

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")


def _config(legacy: bool) -> str:
    return (
        '[defaults]\ninterval = "1s"\ntimeout = "500ms"\nfailure_threshold = 1\nsuccess_threshold = 1\n'
        f'[coordinator]\nlease = "0s"\nlegacy_probe_subjects = {"true" if legacy else "false"}\n'
        '[[targets]]\nname = "db"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
    )


async def test_payload_must_speak_for_the_subjects_probe(nc: Client) -> None:
    """Another probe's id on a subject is dropped; ids differing only in non-token characters are one point."""
    async with CoordinatorService(load_config_text(_config(False)), nc) as service:
        await nc.publish(SUBJECTS.probe("db", "w1"), encode(probe_result("db", "fail", probe="w2")))
        await nc.publish(SUBJECTS.probe("db", "w1"), encode(probe_result("db", "fail", probe="ghost")))
        await wait_until(lambda: service.dropped.get("probe_mismatch") == 2, 10.0, "two probe_mismatch drops")
        assert service.decider.vantage_points("db") == 0
        # "web.1" and "web 1" both map to the token web_1: one vantage point, named by the token.
        await nc.publish(SUBJECTS.probe("db", "web.1"), encode(probe_result("db", "pass", probe="web.1")))
        await nc.publish(SUBJECTS.probe("db", "web 1"), encode(probe_result("db", "pass", probe="web 1")))
        await service.wait_handled(4)
        assert service.decider.vantage_points("db") == 1
        await service.wait_published("db", 1)
        current = service.decider.current("db")
        assert current is not None
        assert set(current.evidence) == {"web_1"}


async def test_old_subject_form_only_behind_the_switch(nc: Client) -> None:
    """Off (the default): nothing listens to <prefix>.probe.<target>, a direct call is dropped as
    legacy_subject. On: the old form is decided as before."""
    async with CoordinatorService(load_config_text(_config(False)), nc) as service:
        service.handle_probe(SUBJECTS.probe("db"), encode(probe_result("db", "pass", probe="old")))
        assert service.dropped == {"legacy_subject": 1}
        await nc.publish(SUBJECTS.probe("db"), encode(probe_result("db", "pass", probe="old")))
        await nc.publish(SUBJECTS.probe("db", "new"), encode(probe_result("db", "pass", probe="new")))
        await service.wait_handled(2)  # the direct call and the new-form result
        # Published before the new form on the same connection: had it arrived, it would have come first.
        assert service.handled == 2
        assert service.decider.vantage_points("db") == 1
    async with CoordinatorService(load_config_text(_config(True)), nc) as service:
        await sync_subscriptions(nc)
        await nc.publish(SUBJECTS.probe("db"), encode(probe_result("db", "fail", probe="old.worker")))
        await service.wait_handled(1)
        assert service.dropped == {}
        await service.wait_published("db", 2)
        current = service.decider.current("db")
        assert current is not None
        assert current.state == "unavailable"
        assert "old.worker" in current.evidence  # the old form keys the point by the payload, as before
