"""Suite ``failover``: how long a fault keeps a decided transition out of the audit stream.

The suite starts a 3-node JetStream cluster (the state stream on three replicas) and two
coordinators in child processes, each connected to its own node, sharing a 3 s leader
lease (with ``--partitions N`` > 1: ``[coordinator] partitions = N``, a lease per
partition, each process a :class:`~healthbus.coordinator.PartitionedCoordinator`; the
first started leads every partition, the other stands by for each). Three vantage
points, one per node, publish a result for each of five targets every 250 ms; each
target alternates 8 s passing and 8 s failing (``--size smoke``: 4 s), the targets
staggered so that a phase changes somewhere every 1.6 s. While that traffic flows it
SIGKILLs, one after the other, with a quiet spell between:

1. the leading coordinator (with partitions: partition 0's leader; a new standby is
   started in its place once every partition it led was taken over);
2. the node leading the state stream (started again after the spell);
3. the node the leading coordinator is connected to (started again after the spell).

At the end it reads the whole state stream with the time the server stored each event
and reports, in one JSON object:

``coordinator_kill_gap_s``, ``stream_leader_kill_gap_s``, ``coordinator_node_kill_gap_s``
  per fault, the worst time from a phase change (around the fault) to the event that
  announces it (``unavailable`` for a failing phase, ``healthy`` for a passing one)
  being stored;
``lost_transitions``
  *provable* phases that ended with no such event in the stream (goal 0): a phase is
  provable when one coordinator received ``THRESHOLD`` results of its outcome, observed
  inside it and received within ``stale_after``, from each of ``QUORUM`` vantage points
  (what deciding it takes); ``unprovable_phases`` counts the others without their event
  (``unprovable_detail`` names them): no coordinator heard enough to decide them;
``duplicate_seqs``
  ``(target, seq)`` pairs stored more than once (goal 0), with ``seq_gaps`` beside it
  and ``chain_breaks`` (events whose ``previous`` is not the state of the seq before);
``nats_reelection_s``
  from the servers: how long after the stream leader's node was killed the stream
  reported a new leader; ``lease_reelection_s`` the same for the lease bucket when the
  third fault took its leader.

``baseline_gap_s`` is the worst gap in the quiet spell before the first fault (both
coordinators up), the floor the fault gaps compare with.

The work directory (kept with ``--keep``) holds each coordinator's log
(``coordinator-<holder>.log``: every transition, takeover and catch-up), what its
connection received (``heard-<holder>.log``), the servers' logs and ``timeline.json``
(the faults' times, the phases and every stored event).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from healthbus.bench._framework import BenchOptions, Goal, SuiteResult
from healthbus.bench._harness import require_coordinator
from healthbus.bench._measure import machine_description
from healthbus.bench._procs import Child, ChildGroup, Link
from healthbus.protocol import (
    Outcome,
    ProbeResult,
    ProtocolError,
    StateChanged,
    Subjects,
    decode_probe_result,
    decode_state_changed,
    encode,
)

__all__ = ["run"]

PREFIX = "healthbus"
TARGETS = [f"t{i}" for i in range(5)]
ROUND_S = 0.25
LEASE_S = 3.0
#: The coordinators' ``failure_threshold`` and ``success_threshold``.
THRESHOLD = 2
#: The coordinators' ``stale_after``: a result received later than this after it was observed is rejected.
STALE_S = 3.0
#: Vantage points whose results prove a phase: the majority of the three.
QUORUM = 2
#: Expected announcement of each phase.
ANNOUNCES: dict[str, str] = {"pass": "healthy", "fail": "unavailable"}


def config_text(partitions: int = 1) -> str:
    """The coordinators' configuration: quick decisions, a 3 s lease, three replicas,
    ``partitions`` partitions (1: the setting left out, as before partitions)."""
    text = (
        f'[bus]\nprefix = "{PREFIX}"\n\n'
        "[defaults]\n"
        'interval = "250ms"\ntimeout = "200ms"\n'
        f"failure_threshold = {THRESHOLD}\nsuccess_threshold = {THRESHOLD}\n"
        f'stale_after = "{STALE_S:g}s"\n'
        'backoff = { base = "300ms", multiplier = 2.0, max = "1s", jitter = "none" }\n'
        "flap = { enabled = false }\n\n"
        "[coordinator]\n"
        f'tick = "50ms"\nlease_ttl = "{LEASE_S:g}s"\nstream_replicas = 3\n'
        + (f"partitions = {partitions}\n" if partitions > 1 else "")
        + "\n"
    )
    for name in TARGETS:
        text += f'[[targets]]\nname = "{name}"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n\n'
    return text


# ---------------------------------------------------------------- child role


def _log_to(path: Path) -> None:
    """The coordinator's own log (INFO: every transition, takeover and catch-up) into ``path``;
    the child's stderr keeps its level."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(max(handler.level, root.level))
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("healthbus.coordinator")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)


async def coordinator_role(link: Link, config: str, urls: str, holder: str, logdir: str = "") -> None:
    """One coordinator on its home node (the first URL; the others only after it fails).

    With ``logdir`` it logs there (the work directory, kept with ``--keep``): ``coordinator-<holder>.log``, and
    ``heard-<holder>.log`` with every result its connection received (wall time, subject,
    payload), so a phase the stream lacks can be checked against what each coordinator heard.
    """
    from healthbus.bus import connect
    from healthbus.coordinator import CoordinatorService, PartitionedCoordinator
    from healthbus.protocol import load_config_text

    nc = await connect(url=urls, name=f"bench-{holder}", dont_randomize=True)
    heard: TextIO | None = None
    if logdir:
        _log_to(Path(logdir) / f"coordinator-{holder}.log")
        # Line-buffered: a coordinator the suite SIGKILLs keeps what it heard until then.
        heard = (Path(logdir) / f"heard-{holder}.log").open("a", buffering=1)
        log = heard

        async def on_result(msg: Msg) -> None:
            log.write(f"{time.time():.3f} {msg.subject} {msg.data.decode(errors='replace')}\n")

        await nc.subscribe(Subjects(PREFIX).probe_all, cb=on_result)
    parsed = load_config_text(config, source="bench")
    service: CoordinatorService | PartitionedCoordinator = (
        PartitionedCoordinator(parsed, nc, holder=holder)
        if parsed.coordinator.partitions > 1
        else CoordinatorService(parsed, nc, holder=holder)
    )
    await service.start()
    link.send("ready", bool(service.leading) if isinstance(service, PartitionedCoordinator) else service.active)
    try:
        while True:
            message = await link.recv(3600)
            if message[0] == "stop":
                return
    finally:
        with contextlib.suppress(Exception):
            await service.stop()
        with contextlib.suppress(Exception):
            await nc.close()
        if heard is not None:
            heard.close()


# ---------------------------------------------------------------- the run


class _Phases:
    """Which outcome each target reports when: alternating phases, targets staggered."""

    def __init__(self, start: float, length: float) -> None:
        self.start = start
        self.length = length
        self.offset = length * 2 / len(TARGETS)

    def outcome(self, index: int, t: float) -> Outcome:
        n = int((t - self.start + index * self.offset) // self.length)
        return "pass" if n % 2 == 0 else "fail"

    def changes(self, index: int, until: float) -> list[tuple[float, float, Outcome]]:
        """``(start, end, outcome)`` of every whole phase of target ``index`` before ``until``."""
        out: list[tuple[float, float, Outcome]] = []
        first = self.start - index * self.offset
        n = 0
        while True:
            begin = first + n * self.length
            end = begin + self.length
            if end > until:
                return out
            if begin >= self.start:
                out.append((begin, end, "pass" if n % 2 == 0 else "fail"))
            n += 1


async def _vantage(url: str, probe: str, phases: _Phases, stop: asyncio.Event) -> None:
    from healthbus.bus import connect

    subjects = Subjects(PREFIX)
    nc = await connect(url=url, name=f"bench-{probe}")
    try:
        next_round = time.time()
        while not stop.is_set():
            now = time.time()
            for i, name in enumerate(TARGETS):
                outcome = phases.outcome(i, now)
                result = ProbeResult(
                    target=name,
                    probe=probe,
                    outcome=outcome,
                    latency_ms=1.0,
                    observed_at=datetime.fromtimestamp(now, UTC),
                    error_kind="refused" if outcome == "fail" else None,
                )
                with contextlib.suppress(Exception):  # its node may be down: the round is lost
                    await nc.publish(subjects.probe(name, probe), encode(result))
            next_round += ROUND_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_round - time.time()))
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _lease_holders(nc: Client) -> dict[str, str]:
    """Lease key (``leader``, or ``leader.<p>`` per partition) → its holder now; empty when
    the bucket cannot be read."""
    from healthbus.coordinator import bucket_for, leaders

    try:
        held = await leaders(nc, bucket_for(_stream_name()))
    except Exception:
        return {}
    return {key: holder for key, (holder, _revision) in held.items()}


async def _leader_holder(nc: Client, partitions: int) -> str | None:
    """Who leads (with partitions: partition 0)."""
    from healthbus.coordinator import lease_key

    return (await _lease_holders(nc)).get(lease_key(0, partitions))


def _stream_name() -> str:
    from healthbus.protocol import stream_name_for

    return stream_name_for(PREFIX)


#: Timeout of one stream-info request while polling for a new leader: short, so a
#: request lost in the fault does not stretch the figure by a whole default timeout.
_POLL_TIMEOUT = 0.25


async def _stream_leader(nc: Client, stream: str, timeout: float = 5.0) -> str:
    try:
        info = await nc.jetstream(timeout=timeout).stream_info(stream)
    except Exception:
        return ""
    return (info.cluster.leader or "") if info.cluster is not None else ""


async def _reelection(nc: Client, stream: str, old: str, timeout: float) -> float | None:
    """Seconds until ``stream`` reports a leader other than ``old`` (polling the servers every 50 ms).

    ``nc`` must not use the killed node, or its own reconnection would be measured too.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        leader = await _stream_leader(nc, stream, _POLL_TIMEOUT)
        if leader and leader != old:
            return time.monotonic() - started
        await asyncio.sleep(0.05)  # polling a server for a state it reports on request
    return None


async def _watcher(nodes: list[Any], doomed: Any) -> Client:
    """A connection to the nodes that survive the fault, for asking them who leads."""
    from healthbus.bus import connect

    return await connect(url=",".join(s.url for s in nodes if s is not doomed), name="bench-watcher")


async def _bring_back(watcher: Client, doomed: Any, cluster: Any, spell: float) -> None:
    """After a node kill: a spell of traffic without it, then it restarts and rejoins."""
    await watcher.close()
    await asyncio.sleep(spell)
    await asyncio.to_thread(doomed.start)
    await asyncio.to_thread(cluster.wait_healthy)
    await asyncio.sleep(spell / 2)


async def _stored(nc: Client) -> list[tuple[StateChanged, float]]:
    """Every event in the state stream with the (server) time it was stored, in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(_stream_name())
    total = info.state.messages
    out: list[tuple[StateChanged, float]] = []
    if not total:
        return out
    sub = await js.subscribe(f"{PREFIX}.state.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while len(out) < total:
            msg = await sub.next_msg(timeout=10)
            out.append((decode_state_changed(msg.data), msg.metadata.timestamp.timestamp()))
    finally:
        await sub.unsubscribe()
    return out


def _analyse(
    stored: list[tuple[StateChanged, float]], phases: _Phases, until: float
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[str, float, Outcome]]]:
    """Per target, ``(phase change, gap)`` of every announced phase; and the phases never announced."""
    gaps: dict[str, list[tuple[float, float]]] = {}
    lost: list[tuple[str, float, Outcome]] = []
    for i, name in enumerate(TARGETS):
        events = [(e, ts) for e, ts in stored if e.target == name]
        out = gaps.setdefault(name, [])
        for begin, end, outcome in phases.changes(i, until):
            want = ANNOUNCES[outcome]
            found = next(
                (
                    ts
                    for e, ts in events
                    if e.state == want and begin <= e.at.timestamp() < end + 1.0 and e.previous != e.state
                ),
                None,
            )
            if found is None:
                lost.append((name, begin, outcome))
            else:
                out.append((begin, found - begin))
    return gaps, lost


#: One result as a coordinator's connection received it: (received, target, probe, outcome, observed).
Heard = tuple[float, str, str, Outcome, float]


def _read_heard(logdir: Path) -> dict[str, list[Heard]]:
    """What each coordinator heard, from its ``heard-<holder>.log`` (see :func:`coordinator_role`)."""
    out: dict[str, list[Heard]] = {}
    for path in sorted(logdir.glob("heard-*.log")):
        rows: list[Heard] = []
        for line in path.read_text(errors="replace").splitlines():
            received, subject, payload = [*line.split(" ", 2), "", ""][:3]
            try:
                result = decode_probe_result(payload.encode())
                rows.append(
                    (
                        float(received),
                        result.target,
                        subject.rpartition(".")[2],
                        result.outcome,
                        result.observed_at.timestamp(),
                    )
                )
            except (ProtocolError, ValueError):
                continue  # a line cut short by a SIGKILL
        out[path.stem.removeprefix("heard-")] = rows
    return out


def _proof(
    heard: dict[str, list[Heard]], name: str, begin: float, end: float, outcome: Outcome
) -> dict[str, dict[str, int]]:
    """Per coordinator, per vantage point: how many results of ``outcome`` observed in
    ``[begin, end)`` for ``name`` it received in time to accept them (within ``stale_after``)."""
    proof: dict[str, dict[str, int]] = {}
    for holder, rows in heard.items():
        counts: Counter[str] = Counter(
            probe
            for received, target, probe, said, observed in rows
            if target == name and said == outcome and begin <= observed < end and received - observed < STALE_S
        )
        proof[holder] = dict(sorted(counts.items()))
    return proof


def provable(proof: dict[str, dict[str, int]]) -> bool:
    """A phase is provable when one coordinator received ``THRESHOLD`` results of its
    outcome, observed inside it, from each of ``QUORUM`` vantage points: enough for a
    leader (or a standby catching up from what it heard) to decide it. Fewer, and no
    coordinator can announce it: not a lost transition, the run gave no evidence."""
    return any(sum(1 for n in per_probe.values() if n >= THRESHOLD) >= QUORUM for per_probe in proof.values())


def _chain_breaks(stored: list[tuple[StateChanged, float]]) -> int:
    """Events whose ``previous`` is not the state of the same target's event one seq before."""
    by_key = {(e.target, e.seq): e for e, _ in stored}
    return sum(
        1
        for (target, seq), event in by_key.items()
        if (before := by_key.get((target, seq - 1))) is not None and event.previous != before.state
    )


def _worst(gaps: dict[str, list[tuple[float, float]]], start: float, end: float) -> float | None:
    values = [gap for points in gaps.values() for change, gap in points if start <= change < end]
    return round(max(values), 3) if values else None


async def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench failover: {what} did not happen within {timeout:g}s")
        await asyncio.sleep(0.05)  # polling servers and children that offer no event


async def run(opts: BenchOptions) -> SuiteResult:
    """Run the three faults on a fresh 3-node cluster and report the figures."""
    require_coordinator()
    from healthbus.bench.support import NatsCluster
    from healthbus.bus import connect

    phase_s = opts.pick("duration", smoke=4.0, full=8.0)
    partitions: int = opts.pick("partitions", smoke=1, full=1)
    spell = 6.0 if opts.size == "smoke" else 16.0  # quiet seconds around each fault
    config = config_text(partitions)
    cluster = NatsCluster(Path(opts.workdir) / "cluster")
    await asyncio.to_thread(cluster.start)
    data: dict[str, Any] = {}
    notes: list[str] = []
    stop = asyncio.Event()
    try:
        nodes = cluster.servers
        urls = [s.url for s in nodes]
        nc = await connect(url=",".join(urls), name="bench-observer")
        phases = _Phases(time.time() + 1.0, phase_s)
        vantage = [asyncio.create_task(_vantage(urls[i], f"vp{i}", phases, stop)) for i in range(3)]
        homes: dict[str, int] = {}

        async with ChildGroup() as group:
            children: dict[str, Child] = {}

            def home_urls(home: int) -> str:
                return ",".join([urls[home], *(u for j, u in enumerate(urls) if j != home)])

            async def start_coordinator(holder: str, home: int) -> None:
                child = group.start(
                    f"coordinator-{holder}", coordinator_role, config, home_urls(home), holder, str(opts.workdir)
                )
                await child.link.expect("ready", 60)
                children[holder] = child
                homes[holder] = home

            await start_coordinator("c0", 0)
            await start_coordinator("c1", 1)
            stream = _stream_name()
            marks: dict[str, float] = {"baseline": time.time()}
            await asyncio.sleep(spell)  # the quiet spell measured as the baseline

            # 1. the leading coordinator
            leader = await _leader_holder(nc, partitions) or "c0"
            led = sorted(key for key, holder in (await _lease_holders(nc)).items() if holder == leader)
            marks["coordinator_kill"] = time.time()
            victim = children.pop(leader)
            if victim.pid is not None:
                os.kill(victim.pid, signal.SIGKILL)
            await group.stop(victim)

            async def new_leader() -> bool:
                # Every lease held, none by the dead process (with partitions: each taken over).
                held = await _lease_holders(nc)
                return len(held) == partitions and leader not in held.values()

            await _wait_for(new_leader, 30, "a takeover")
            await start_coordinator("c2", homes.pop(leader))
            await asyncio.sleep(spell)

            # 2. the node leading the state stream
            old = await _stream_leader(nc, stream)
            doomed = next(s for s in nodes if s.server_name == old)
            watcher = await _watcher(nodes, doomed)
            marks["stream_leader_kill"] = time.time()
            await asyncio.to_thread(doomed.kill)
            data["nats_reelection_s"] = await _reelection(watcher, stream, old, 30)
            await _bring_back(watcher, doomed, cluster, spell)

            # 3. the node of the leading coordinator
            leader = await _leader_holder(nc, partitions) or next(iter(children))
            doomed = nodes[homes[leader]]
            bucket = f"KV_{stream}_LEADER"
            lease_leader = await _stream_leader(nc, bucket)
            watcher = await _watcher(nodes, doomed)
            marks["coordinator_node_kill"] = time.time()
            await asyncio.to_thread(doomed.kill)
            if lease_leader == doomed.server_name:
                data["lease_reelection_s"] = await _reelection(watcher, bucket, lease_leader, 30)
            await _bring_back(watcher, doomed, cluster, spell)
            until = time.time()
            stop.set()
            await asyncio.gather(*vantage, return_exceptions=True)
            await asyncio.sleep(2.0)  # the last decisions reach the stream
            stored = await _stored(nc)
        await nc.close()
    finally:
        stop.set()
        await asyncio.to_thread(cluster.stop)

    gaps, missing = _analyse(stored, phases, until)
    # The run's timeline, for reading it against the coordinators' logs (kept with --keep).
    timeline = {
        "marks": marks,
        "phases_start": phases.start,
        "phase_s": phase_s,
        "offset_s": phases.offset,
        "until": until,
        "events": [[ts, e.target, e.seq, e.at.timestamp(), e.previous, e.state, e.breaker] for e, ts in stored],
    }
    (Path(opts.workdir) / "timeline.json").write_text(json.dumps(timeline))
    # A phase without its event is lost only if a coordinator heard enough to decide it.
    heard = _read_heard(Path(opts.workdir))
    proofs = {(name, begin): _proof(heard, name, begin, begin + phase_s, outcome) for name, begin, outcome in missing}

    def detail(name: str, begin: float, outcome: Outcome) -> dict[str, Any]:
        # Which phase, relative to the faults; what the stream holds around it; what each coordinator heard of it.
        return {
            "target": name,
            "outcome": outcome,
            "phase_start_s": round(begin - marks["baseline"], 2),
            "events": [
                f"{e.seq} {e.previous}->{e.state}/{e.breaker} at {e.at.timestamp() - marks['baseline']:.2f}"
                for e, _ in stored
                if e.target == name and begin - phase_s <= e.at.timestamp() < begin + 2 * phase_s
            ],
            "heard": proofs[name, begin],
        }

    lost_phases = [detail(*m) for m in missing if provable(proofs[m[0], m[1]])]
    unprovable = [detail(*m) for m in missing if not provable(proofs[m[0], m[1]])]
    lost = len(lost_phases)
    if lost_phases:
        data["lost_detail"] = lost_phases
    if unprovable:
        data["unprovable_detail"] = unprovable
    if missing:
        data["fault_at_s"] = {k: round(v - marks["baseline"], 2) for k, v in marks.items()}
    order = ["baseline", "coordinator_kill", "stream_leader_kill", "coordinator_node_kill"]
    for i, name in enumerate(order):
        begin = marks[name] - (0.0 if name == "baseline" else 1.0)
        end = marks[order[i + 1]] - 1.0 if i + 1 < len(order) else until
        key = "baseline_gap_s" if name == "baseline" else f"{name}_gap_s"
        data[key] = _worst(gaps, begin, min(end, begin + spell + 1.0))
    seen = Counter((e.target, e.seq) for e, _ in stored)
    data["lost_transitions"] = lost
    data["duplicate_seqs"] = sum(n - 1 for n in seen.values() if n > 1)
    data["seq_gaps"] = sum(
        1
        for name in TARGETS
        for a, b in itertools.pairwise(sorted(seq for (t, seq) in seen if t == name))
        if b != a + 1
    )
    data["unprovable_phases"] = len(unprovable)
    data["chain_breaks"] = _chain_breaks(stored)
    data["phases"] = sum(len(points) for points in gaps.values()) + len(missing)
    data["events"] = len(stored)
    data["phase_s"] = phase_s
    data["lease_s"] = LEASE_S
    data.setdefault("lease_reelection_s", None)
    goals = [
        Goal(
            "no decided transition lost",
            data["lost_transitions"] == 0,
            f"{lost} of {data['phases'] - len(unprovable)} provable phases",
        ),
        Goal("no seq stored twice", data["duplicate_seqs"] == 0, f"{data['duplicate_seqs']} duplicates"),
    ]
    notes.append("gaps: worst time from a phase change to its event being stored, per fault (server storage time)")
    if partitions > 1:
        notes.append(f"[coordinator] partitions = {partitions}: the coordinator killed held {', '.join(led)}")
    return SuiteResult("failover", opts.size, data, goals, notes, machine_description())
