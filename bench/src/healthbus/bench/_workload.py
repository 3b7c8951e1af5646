"""Synthetic probe traffic and the coordinator configuration that goes with it.

The message set is deterministic for a given size and seed (only ``observed_at`` is
the time of generation), so the baseline and the coordinator receive the same messages.
Each target follows a cycle of rounds (one result per vantage point per round) chosen so
the coordinator really decides: healthy → degraded (a minority fails) → healthy →
degraded (a warn) → healthy → unavailable (all fail, breaker opens) → trials (re-admitted).
Targets start at different points of the cycle so transitions are spread out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from healthbus.protocol import ProbeResult, encode, utcnow

__all__ = ["CYCLE", "bench_config_text", "probe_ids", "probe_messages", "target_names"]

# One entry per round: the outcome of vantage points 0, 1, 2 (extra ones copy the last).
CYCLE: tuple[tuple[str, ...], ...] = (
    *([("pass", "pass", "pass")] * 8),
    *([("fail", "pass", "pass")] * 3),  # minority failing -> degraded
    *([("pass", "pass", "pass")] * 8),
    *([("pass", "pass", "warn")] * 2),  # warn -> degraded
    *([("pass", "pass", "pass")] * 8),
    *([("fail", "fail", "fail")] * 3),  # quorum failing -> breaker opens -> unavailable
    *([("pass", "pass", "pass")] * 3),  # trials once retry_at has passed: re-admitted
)


def target_names(count: int) -> list[str]:
    """``bench-00000`` … (valid target names, one NATS token each)."""
    return [f"bench-{i:05d}" for i in range(count)]


def probe_ids(count: int) -> list[str]:
    """Vantage-point ids ``vp-0`` … ."""
    return [f"vp-{i}" for i in range(count)]


def probe_messages(
    targets: Sequence[str], probes: Sequence[str], total: int, seed: int = 1
) -> list[tuple[str, str, bytes]]:
    """``total`` (target, probe id, encoded ProbeResult) triples, round by round over all targets."""
    rng = random.Random(seed)
    phase = [rng.randrange(len(CYCLE)) for _ in targets]
    at = utcnow()
    cache: dict[tuple[str, str, str], bytes] = {}
    out: list[tuple[str, str, bytes]] = []
    rounds = 0
    while len(out) < total:
        for t_index, target in enumerate(targets):
            outcomes = CYCLE[(phase[t_index] + rounds) % len(CYCLE)]
            for p_index, probe in enumerate(probes):
                outcome = outcomes[min(p_index, len(outcomes) - 1)]
                key = (target, probe, outcome)
                data = cache.get(key)
                if data is None:
                    data = encode(_result(target, probe, outcome, at))
                    cache[key] = data
                out.append((target, probe, data))
                if len(out) == total:
                    return out
        rounds += 1
    return out


def _result(target: str, probe: str, outcome: str, at: object) -> ProbeResult:
    if outcome == "fail":
        return ProbeResult(
            target=target, probe=probe, outcome="fail", latency_ms=2.0, observed_at=at,  # type: ignore[arg-type]
            error_kind="refused", error="connection refused",
        )  # fmt: skip
    details: dict[str, str | int | float | bool] = {"version": "7.0.15"}
    return ProbeResult(
        target=target, probe=probe, outcome=outcome, latency_ms=0.4, observed_at=at, details=details,  # type: ignore[arg-type]
    )  # fmt: skip


def bench_config_text(
    targets: Sequence[str],
    *,
    prefix: str,
    interval: str = "5s",
    stale_after: str | None = None,
    failure_threshold: int = 2,
    success_threshold: int = 2,
    quorum: str = "majority",
    backoff_base: str = "50ms",
    backoff_max: str = "200ms",
    flap: bool = True,
    kind: str = "tcp",
    url: str = "tcp://127.0.0.1:9",
    features: Sequence[str] = (),
) -> str:
    """A healthbus TOML configuration watching ``targets`` (all of one kind and URL)."""
    lines = [
        "[bus]",
        f'prefix = "{prefix}"',
        "",
        "[defaults]",
        f'interval = "{interval}"',
        f"failure_threshold = {failure_threshold}",
        f"success_threshold = {success_threshold}",
        f'quorum = "{quorum}"' if not quorum.isdigit() else f"quorum = {quorum}",
        f'backoff = {{ base = "{backoff_base}", multiplier = 2.0, max = "{backoff_max}", jitter = "full" }}',
        # An open breaker's trials start as soon as a failed re-admission's backoff would.
        f'trial_interval = "{backoff_base}"',
        f"flap = {{ enabled = {'true' if flap else 'false'} }}",
    ]
    if stale_after is not None:
        lines.append(f'stale_after = "{stale_after}"')
    feats = ", ".join(f'"{f}"' for f in features)
    for name in targets:
        lines += ["", "[[targets]]", f'name = "{name}"', f'kind = "{kind}"', f'url = "{url}"', f"features = [{feats}]"]
    return "\n".join(lines) + "\n"
