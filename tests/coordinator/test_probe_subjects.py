"""The probe id travels in the subject: the coordinator service against a real nats-server.

Results go on ``<prefix>.probe.<target>.<probe>``; a result speaking for another probe than
its subject's is dropped (``probe_mismatch``); nothing listens on ``<prefix>.probe.<target>``
(no probe token), and the removed ``legacy_probe_subjects`` key is a clear config error.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from healthbus.bus import sync_subscriptions
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import ConfigError, Subjects, encode, load_config_text
from tests.helpers import probe_result

pytestmark = pytest.mark.nats

SUBJECTS = Subjects("healthbus")


CONFIG = (
    '[defaults]\ninterval = "1s"\ntimeout = "500ms"\nfailure_threshold = 1\nsuccess_threshold = 1\n'
    '[coordinator]\nlease_ttl = "0s"\n'
    '[[targets]]\nname = "db"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
)


async def test_payload_must_speak_for_the_subjects_probe(nc: Client) -> None:
    """Another probe's id on a subject is dropped; ids differing only in non-token characters are one point."""
    async with CoordinatorService(load_config_text(CONFIG), nc) as service:
        await nc.publish(SUBJECTS.probe("db", "w1"), encode(probe_result("db", "fail", probe="w2")))
        await nc.publish(SUBJECTS.probe("db", "w1"), encode(probe_result("db", "fail", probe="ghost")))
        await service.wait_handled(2)
        assert service.dropped == {"probe_mismatch": 2}
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


async def test_subject_without_a_probe_is_never_decided(nc: Client) -> None:
    """Nothing listens to <prefix>.probe.<target>; a direct call with such a subject is dropped as malformed."""
    async with CoordinatorService(load_config_text(CONFIG), nc) as service:
        service.handle_probe("healthbus.probe.db", encode(probe_result("db", "pass", probe="old")))
        assert service.dropped == {"malformed": 1}
        await sync_subscriptions(nc)
        await nc.publish("healthbus.probe.db", encode(probe_result("db", "pass", probe="old")))
        await nc.publish(SUBJECTS.probe("db", "new"), encode(probe_result("db", "pass", probe="new")))
        await service.wait_handled(2)  # the direct call and the new-form result
        # Published before the new form on the same connection: had it arrived, it would have come first.
        assert service.handled == 2
        assert service.decider.vantage_points("db") == 1


def test_removed_legacy_key_is_a_clear_config_error() -> None:
    """The removed ``[coordinator] legacy_probe_subjects`` names itself and what to do."""
    with pytest.raises(ConfigError, match=r"\$\.coordinator\.legacy_probe_subjects: removed: .*delete the key"):
        load_config_text(CONFIG.replace('lease_ttl = "0s"\n', 'lease_ttl = "0s"\nlegacy_probe_subjects = true\n'))
