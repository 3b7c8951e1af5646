"""Generated wire messages for the fuzz test: each with the drop it must cause, if any.

Every message is ``(subject, payload, expect)``; ``expect`` is ``"coordinator:<reason>"``
or ``"worker:<reason>"`` for a message that process must count as dropped under that
reason, or None for one that is no drop (handled, answered with an error, or on a
subject nobody subscribes to). Nothing here may change a configured target's verdict:
well-formed results only ever name unknown targets or carry a timestamp far outside
``stale_after``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from healthbus.protocol import MAX_MESSAGE_BYTES, probe_token, worker_token

Message = tuple[str, bytes, str | None]
_json = msgspec.json.encode

UNICODE = ["ünïcödé", "目标", "🚀", "Ωmega", "naïve-ß", "\u200b", "ℌ𝔢𝔩𝔩𝔬", "ا", "\ufeff", "\U0010fffd"]
COMMANDS = ("force-open", "disable", "reset", "status")
KINDS = ("timeout", "refused", "dns", "auth", "tls", "protocol", "unhealthy", "other", None)


class Fuzzer:
    """Messages for a coordinator and a probe worker of ``prefix`` watching ``known``."""

    def __init__(self, prefix: str, known: tuple[str, ...], seed: int, now: datetime | None = None) -> None:
        self.prefix = prefix
        self.known = known
        self.rng = random.Random(seed)
        self.now = now or datetime.now(UTC)
        self._texts: dict[int, list[str]] = {}
        self._tokens: list[str] = []

    # ------------------------------------------------------------------ pieces

    def _make_text(self, longest: int) -> str:
        rng = self.rng
        pick = rng.random()
        if pick < 0.3:
            return "".join(rng.choices(UNICODE, k=rng.randint(1, 4)))
        if pick < 0.5:
            return "".join(map(chr, rng.choices(range(0x20, 0x2FFF), k=rng.randint(1, longest))))
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-_", k=rng.randint(1, longest)))

    def text(self, longest: int = 40) -> str:
        """Free text, often unicode (from a pool drawn once: generating is then cheap)."""
        pool = self._texts.get(longest)
        if pool is None:
            pool = self._texts[longest] = [self._make_text(longest) for _ in range(2000)]
        return self.rng.choice(pool)

    def token(self) -> str:
        """A subject token that is none of the known targets (no space, dot or wildcard)."""
        if not self._tokens:
            while len(self._tokens) < 2000:
                tok = "".join(c for c in self._make_text(30) if not c.isspace() and c not in ".*>\x7f")
                if tok and tok not in self.known and tok.isprintable():
                    self._tokens.append(tok)
        return self.rng.choice(self._tokens)

    def far_timestamp(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.2:
            return rng.choice(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z"])
        days = rng.choice([-1, 1]) * rng.uniform(1 / 24, 3_000_000 / 86_400 * 100)
        when = self.now + timedelta(days=max(-700_000.0, min(days, 2_900_000.0)))
        return when.isoformat()

    def result(self, target: str, observed_at: str) -> dict[str, Any]:
        rng = self.rng
        outcome = rng.choice(["pass", "warn", "fail"])
        body: dict[str, Any] = {
            "target": target,
            "probe": self.text(60)[:128] or "p",
            "outcome": outcome,
            "latency_ms": rng.choice([0.0, 1.5, 1e9, rng.uniform(0, 5000)]),
            "observed_at": observed_at,
            "error_kind": rng.choice(KINDS) if outcome == "fail" else None,
        }
        if rng.random() < 0.3:
            body["error"] = self.text(200)[:1024]
        if rng.random() < 0.3:
            body["details"] = {
                self.text(10): rng.choice([1, 2.5, True, self.text(20)]) for _ in range(rng.randint(1, 4))
            }
        if rng.random() < 0.1:
            body["unexpected_field"] = self.text(10)
        return body

    def broken(self, target: str) -> bytes:
        """A payload that is no valid ProbeResult."""
        rng = self.rng
        body = self.result(target, self.now.isoformat())
        kind = rng.randrange(14)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 200))
        if kind == 1:
            return rng.choice([b"", b"{", b"null", b"[]", b"0", b'"x"', b"\xff\xfe", b"{}"])
        if kind == 2:
            body["outcome"] = rng.choice(["maybe", "", "PASS", 1, None])
        elif kind == 3:
            body["latency_ms"] = rng.choice(["fast", -1, None, [], {}])
        elif kind == 4:
            body["observed_at"] = rng.choice(
                ["yesterday", 12345, "2026-01-01T00:00:00", "", None, "2026-13-45T99:00:00Z"]
            )
        elif kind == 5:
            body["probe"] = rng.choice(["", "x" * 129, 123, None, ["p"]])
        elif kind == 6:
            body["target"] = rng.choice([5, None, "", "Bad Target!", "x" * 300])
        elif kind == 7:
            body["error_kind"] = rng.choice(["bogus", 3, "TIMEOUT"])
            body["outcome"] = "fail"
        elif kind == 8:
            body["details"] = {"nested": {"a": 1}}
        elif kind == 9:
            body["v"] = rng.choice([0, -1, "1", None])
        elif kind == 10:
            del body[rng.choice(["target", "probe", "outcome", "latency_ms", "observed_at"])]
        elif kind == 11:
            return _json(body)[: rng.randint(1, 40)]
        elif kind == 12:
            body["error"] = "e" * 1025
        else:
            return _json([body])
        return _json(body)

    # ------------------------------------------------------------------ messages

    def probe_message(self) -> Message:
        rng = self.rng
        base = f"{self.prefix}.probe."
        pick = rng.random()
        if pick < 0.2:  # a subject naming no configured target: whatever the payload
            target = self.token()
            body = self.result(target, self.now.isoformat())
            payload = _json(body) if rng.random() < 0.5 else self.broken(target)
            return f"{base}{target}.{probe_token(str(body['probe']))}", payload, "coordinator:unknown_target"
        target = rng.choice(self.known)
        if pick < 0.45:
            body = self.result(target, self.far_timestamp())
            return f"{base}{target}.{probe_token(body['probe'])}", _json(body), "coordinator:stale_timestamp"
        if pick < 0.75:
            return f"{base}{target}.{self.token()}", self.broken(target), "coordinator:malformed"
        if pick < 0.85:  # well-formed, fresh, but naming another target than its subject
            other = rng.choice([t for t in self.known if t != target] + ["ghost"])
            body = self.result(other, self.now.isoformat())
            return f"{base}{target}.{probe_token(body['probe'])}", _json(body), "coordinator:subject_mismatch"
        if pick < 0.95:  # well-formed, fresh, but speaking for another probe than its subject's
            body = self.result(target, self.now.isoformat())
            token = self.token()
            while token == probe_token(body["probe"]):
                token = self.token()
            return f"{base}{target}.{token}", _json(body), "coordinator:probe_mismatch"
        if pick < 0.995:  # the old subject form (no probe token): nobody listens to it by default
            return f"{base}{target}", _json(self.result(target, self.now.isoformat())), None
        # oversized: valid JSON padded past the limit
        body = self.result(target, self.now.isoformat())
        body["details"] = {"pad": "x" * (MAX_MESSAGE_BYTES + rng.randint(1, 4096))}
        return f"{base}{target}.{probe_token(body['probe'])}", _json(body), "coordinator:oversized"

    def ctl_message(self) -> Message:
        rng = self.rng
        base = f"{self.prefix}.ctl."
        pick = rng.random()
        if pick < 0.4:
            command = self.token()
            while command in COMMANDS:
                command = self.token()
            return base + command, self.broken("ghost"), "coordinator:bad_control"
        command = rng.choice(COMMANDS)
        if pick < 0.8:
            payload = rng.choice(
                [b"", b"{", b"[]", b"\xff", _json({"target": 5}), _json({"reason": "x"}),
                 _json({"target": "Bad Target!"}), _json({"target": "a", "reason": "r" * 2000})]
            )  # fmt: skip
            return base + command, payload, "coordinator:bad_control"
        # well-formed: an unknown target gets an error reply; status of a known one changes nothing
        target = f"ghost-{rng.randrange(1000)}" if command != "status" or rng.random() < 0.5 else rng.choice(self.known)
        return base + command, _json({"target": target, "reason": self.text(50)}), None

    def heartbeat_message(self) -> Message:
        rng = self.rng
        subject = f"{self.prefix}.worker.heartbeat.{self.token()}"
        if rng.random() < 0.7:
            payload = rng.choice(
                [b"", b"{", b"null", rng.randbytes(50),
                 _json({"worker": "", "at": self.now.isoformat(), "heartbeat_s": 1}),
                 _json({"worker": "w", "at": "soon", "heartbeat_s": 1}),
                 _json({"worker": "w", "at": self.now.isoformat(), "heartbeat_s": 0}),
                 _json({"worker": "w", "at": self.now.isoformat(), "heartbeat_s": -5}),
                 _json({"worker": self.text(20), "at": self.now.isoformat(), "heartbeat_s": "1s"})]
            )  # fmt: skip
            return subject, payload, "worker:malformed"
        # well-formed, from workers that do not exist, with extreme periods; on the subject of
        # the worker it names, or (a credential claiming another worker) on another one
        beat = {
            "worker": self.text(60)[:128] or "w",
            "at": self.far_timestamp() if rng.random() < 0.3 else self.now.isoformat(),
            "heartbeat_s": rng.choice([1e-9, 0.5, 2.0, 1e9, 1e300]),
            "sharding": rng.random() < 0.5,
            "targets": rng.randrange(10**6),
            "stopping": rng.random() < 0.2,
        }
        own = worker_token(str(beat["worker"]))
        if rng.random() < 0.5:
            while subject.rpartition(".")[2] == own:
                subject = f"{self.prefix}.worker.heartbeat.{self.token()}"
            return subject, _json(beat), "worker:subject_mismatch"
        return f"{self.prefix}.worker.heartbeat.{own}", _json(beat), None

    def stray_message(self) -> Message:
        """Subjects off the usual paths: most reach nobody; a deeper control subject reaches
        the coordinator (it listens on ``<prefix>.ctl.>``) and is a bad control request."""
        rng = self.rng
        pick = rng.randrange(5)
        if pick == 0:
            return f"{self.prefix}.ctl.{self.token()}.{self.token()}", self.broken("ghost"), "coordinator:bad_control"
        subject = [
            f"{self.prefix}.probes.{self.token()}",
            f"{self.prefix}.probe.{rng.choice(self.known)}.{self.token()}.{self.token()}",  # too deep
            f"{self.token()}.probe.{rng.choice(self.known)}",
            f"{self.prefix}.worker",
        ][pick - 1]
        return subject, self.broken("ghost"), None

    def messages(self, count: int) -> Iterator[Message]:
        rng = self.rng
        for _ in range(count):
            pick = rng.random()
            if pick < 0.6:
                yield self.probe_message()
            elif pick < 0.75:
                yield self.ctl_message()
            elif pick < 0.95:
                yield self.heartbeat_message()
            else:
                yield self.stray_message()
