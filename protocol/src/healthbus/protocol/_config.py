"""The configuration file (its keys are contract: docs/contract.md).

One TOML file, decoded and validated by msgspec into typed, frozen structs. Rules:

* Durations are strings with a unit (:mod:`._durations`); they become float seconds.
* Every key of ``[defaults]`` may be set per target; a target's effective settings are
  ``defaults`` overlaid with the target's own keys (tables such as ``backoff`` are
  merged key by key).
* ``${VAR}`` in any string is replaced by the environment variable ``VAR``
  (``${VAR:-fallback}`` gives a fallback, ``$$`` is a literal ``$``); a missing variable
  is an error naming the field. Secrets therefore never need to be written inline.
* Any error raises :class:`ConfigError`, whose text names the file, the field path and
  what was expected, and never contains a secret.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import msgspec

from healthbus.protocol._durations import format_duration, parse_duration
from healthbus.protocol._redact import redact, redact_url
from healthbus.protocol._stream import DEFAULT_DUPLICATE_WINDOW_S, DEFAULT_MAX_AGE_S
from healthbus.protocol._subjects import DEFAULT_PREFIX, PREFIX_PATTERN, TARGET_PATTERN

Kind: TypeAlias = Literal["redis", "postgres", "sqlalchemy", "milvus", "elasticsearch", "tcp", "http"]
KINDS: Final[tuple[Kind, ...]] = (
    "redis",
    "postgres",
    "sqlalchemy",
    "milvus",
    "elasticsearch",
    "tcp",
    "http",
)
Jitter: TypeAlias = Literal["full", "equal", "decorrelated", "none"]
QuorumName: TypeAlias = Literal["majority", "any", "all"]
Quorum: TypeAlias = QuorumName | int
OptionValue: TypeAlias = str | int | float | bool


class Duration(float):
    """Seconds, written in config as a string with a unit (``"5s"``)."""


PositiveInt = msgspec.Meta(ge=1)


class ConfigError(Exception):
    """A configuration file that cannot be used. ``str()`` names file, field and expectation."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")


class BackoffSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Exponential backoff of an open breaker: ``base * multiplier**attempt``, capped."""

    base: Duration = Duration(1.0)
    multiplier: float = 2.0
    max: Duration = Duration(60.0)
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError("backoff.base must be greater than 0")
        if self.multiplier < 1:
            raise ValueError("backoff.multiplier must be at least 1.0")
        if self.max < self.base:
            raise ValueError("backoff.max must be at least backoff.base")


class FlapSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Flap detection, as Nagios/Sensu: weighted share of state changes over the last
    ``window`` verdicts; above ``high`` the target is flapping, below ``low`` it settled."""

    enabled: bool = True
    window: int = 21
    low: float = 0.25
    high: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 3:
            raise ValueError("flap.window must be at least 3")
        if not 0 < self.low < self.high <= 1:
            raise ValueError("flap thresholds must satisfy 0 < low < high <= 1")


class CheckSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The keys of ``[defaults]``; each may be overridden per target."""

    interval: Duration = Duration(5.0)
    timeout: Duration = Duration(2.0)
    failure_threshold: int = 3
    success_threshold: int = 2
    quorum: Quorum = "majority"
    degraded_quorum: int = 1
    """Live vantage points that must be failing or warn (together) before a target whose
    breaker is closed is called ``degraded``; capped at the number of live ones. Fewer are
    ignored (the target stays ``healthy``), so with 3 workers and 2 here one compromised
    probe credential cannot move a target off ``healthy``."""
    backoff: BackoffSettings = BackoffSettings()
    stale_after: Duration | None = None
    """No results for this long → ``unknown``. Default: 3 intervals."""
    retry_interval: Duration | None = None
    """Re-check period after a failing result. Default: interval / 5."""
    warn_latency: Duration | None = None
    """A passing check slower than this is reported as ``warn``. Default: off."""
    flap: FlapSettings = FlapSettings()

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("failure_threshold and success_threshold must be at least 1")
        if isinstance(self.quorum, int) and not isinstance(self.quorum, bool) and self.quorum < 1:
            raise ValueError("quorum must be 'majority', 'any', 'all' or a number >= 1")
        if isinstance(self.degraded_quorum, bool) or self.degraded_quorum < 1:
            raise ValueError(
                f"degraded_quorum must be a whole number >= 1 (vantage points failing or warn), "
                f"got {self.degraded_quorum!r}"
            )

    @property
    def effective_stale_after(self) -> float:
        """``stale_after``, or 3 intervals when unset."""
        return float(self.stale_after) if self.stale_after is not None else 3 * float(self.interval)

    @property
    def effective_retry_interval(self) -> float:
        """``retry_interval``, or interval / 5 when unset."""
        if self.retry_interval is not None:
            return float(self.retry_interval)
        return float(self.interval) / 5


class TargetConfig(CheckSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One watched dependency: its identity plus its effective check settings."""

    name: str
    kind: Kind
    url: str
    features: list[str] = []
    options: dict[str, OptionValue] = {}
    """Kind-specific settings (see docs/probes.md), e.g. ``expect_status`` for http."""

    def __repr__(self) -> str:  # the URL may hold a password: never print it
        return f"TargetConfig(name={self.name!r}, kind={self.kind!r}, url={redact_url(self.url)!r})"


DEFAULT_INBOX_PREFIX: Final = "_INBOX"
# A NATS subject without wildcards: non-empty tokens, no whitespace, no '*' or '>'.
_INBOX_RE: Final = re.compile(r"^[^.\s*>]+(\.[^.\s*>]+)*$")


class BusSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How to reach NATS. Credentials should come from ``${ENV}`` interpolation."""

    url: str | None = None
    prefix: str = DEFAULT_PREFIX
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    """CA bundle the server's certificate must chain to (PEM file)."""
    tls_cert: str | None = None
    """Client certificate (PEM file), for servers that verify clients (mutual TLS)."""
    tls_key: str | None = None
    """The client certificate's private key (PEM file, not encrypted)."""
    tls_handshake_first: bool = True
    """With TLS set up: start TLS before the server sends anything, so no byte (not even
    the password) goes over plaintext to an impostor that does not offer TLS. The server
    needs ``handshake_first`` in its ``tls`` block (``deploy/nats/healthbus-tls.conf``);
    ``false`` uses the classic upgrade after the server's greeting instead."""
    inbox_prefix: str | None = None
    """Subject prefix of this client's reply inboxes (request replies, JetStream acks and
    deliveries). Default ``_INBOX.<user>`` when ``user`` is set, else ``_INBOX``; the NATS
    user then needs subscribe permission on ``<inbox_prefix>.>`` only, so no other role
    can read its replies."""
    connect_timeout: Duration = Duration(2.0)

    def __repr__(self) -> str:  # never print secrets, even in a traceback
        return f"BusSettings(url={self.url!r}, prefix={self.prefix!r}, user={self.user!r})"

    @property
    def effective_inbox_prefix(self) -> str:
        """``inbox_prefix``, else ``_INBOX.<user>``, else ``_INBOX``; ValueError when not a subject."""
        if self.inbox_prefix is not None:
            if _INBOX_RE.match(self.inbox_prefix) is None:
                raise ValueError(
                    f"expected dot-separated subject tokens without spaces or wildcards, got {self.inbox_prefix!r}"
                )
            return self.inbox_prefix
        if self.user is None:
            return DEFAULT_INBOX_PREFIX
        if _INBOX_RE.match(self.user) is None:
            raise ValueError(f"user {self.user!r} cannot name an inbox subject (spaces, '*' or '>'): set inbox_prefix")
        return f"{DEFAULT_INBOX_PREFIX}.{self.user}"


class CoordinatorSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``[coordinator]``: the state stream and the coordinator's own behaviour."""

    stream_max_age: Duration = Duration(DEFAULT_MAX_AGE_S)
    refresh_after: Duration | None = None
    """An unchanged state is re-announced this long after a target's last event, so the
    state stream (which drops messages older than ``stream_max_age``) always keeps it.
    Default: half of ``stream_max_age``; must be less than it (``"0s"``, kept forever:
    no refresh unless set)."""
    duplicate_window: Duration = Duration(DEFAULT_DUPLICATE_WINDOW_S)
    stream_replicas: int = 1
    tick: Duration = Duration(0.25)
    """How often timers (staleness, retry_at) are evaluated without probe traffic."""
    lease: Duration = Duration(5.0)
    """Leader lease: a standby coordinator takes over this long after the leader died.
    ``"0s"`` turns leader election off (exactly one coordinator must run)."""
    http: str | None = None
    legacy_probe_subjects: bool = False
    """Also accept ProbeResults on the old ``<prefix>.probe.<target>`` subjects, which do not
    name the probe (for a rolling upgrade from workers older than the probe-bound subjects;
    turn it off once every worker is upgraded: on it, one probe credential can speak for
    any vantage point)."""
    confirm_window: Duration = Duration(1.0)
    """Failure reports start at most one confirmation round per target per this window,
    however many arrive (``"0s"``: a round for every report that is not a flood)."""

    def __post_init__(self) -> None:
        if self.lease < 0:
            raise ValueError("lease must be 0 (no election) or a positive duration")

    @property
    def effective_refresh_after(self) -> float | None:
        """``refresh_after``, or half of ``stream_max_age`` when unset (None: never, since
        ``stream_max_age = "0s"`` keeps the stream's messages forever)."""
        if self.refresh_after is not None:
            return float(self.refresh_after)
        return float(self.stream_max_age) / 2 if self.stream_max_age > 0 else None


class ProbeWorkerSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``[probes]``: probe-worker behaviour, including sharding for large fleets."""

    sharding: bool = False
    replicas: int = 2
    """With sharding: how many workers check each target."""
    heartbeat: Duration = Duration(2.0)
    jitter: float = 0.1
    """Random spread of each check's start, as a fraction of the interval."""
    http: str | None = None


class Config(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A whole, validated configuration file."""

    bus: BusSettings = BusSettings()
    defaults: CheckSettings = CheckSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    probes: ProbeWorkerSettings = ProbeWorkerSettings()
    targets: list[TargetConfig] = []
    source: str = "<config>"
    """Where this configuration came from (file path), for messages."""

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; KeyError if there is none."""
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def target_names(self) -> list[str]:
        """Every configured target's name, in file order."""
        return [t.name for t in self.targets]


# --------------------------------------------------------------------------- loading

_ENV_RE: Final = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TARGET_RE: Final = re.compile(TARGET_PATTERN)
_PREFIX_RE: Final = re.compile(PREFIX_PATTERN)
_URL_SCHEMES: Final[dict[str, tuple[str, ...]]] = {
    "redis": ("redis", "rediss", "unix"),
    "postgres": ("postgres", "postgresql"),
    "sqlalchemy": (),  # any SQLAlchemy URL: dialect+driver://...
    "milvus": ("http", "https", "tcp", "grpc", "unix", "file", ""),
    "elasticsearch": ("http", "https"),
    "tcp": ("tcp",),
    "http": ("http", "https"),
}


def _interpolate(value: Any, path: str, env: Mapping[str, str], source: str, secrets: list[str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m[0] == "$$":
                return "$"
            name, fallback = m[1], m[2]
            if name in env:
                secrets.append(env[name])
                return env[name]
            if fallback is not None:
                return fallback
            raise ConfigError(source, path, f"environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}", env, source, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env, source, secrets) for i, v in enumerate(value)]
    return value


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        if isinstance(obj, str):
            return Duration(parse_duration(obj))
        raise ValueError(f'expected a duration string with a unit like "5s", got {obj!r}')
    raise NotImplementedError(type_)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _split_msgspec_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    text = str(exc)
    if " - at `" in text:
        problem, _, path = text.rpartition(" - at `")
        return path.rstrip("`"), problem
    return "$", text


def _check_semantics(config: Config) -> None:
    src = config.source
    coordinator = config.coordinator
    refresh = coordinator.refresh_after
    # stream_max_age "0s" is JetStream's "keep forever": any positive refresh_after fits.
    if refresh is not None and not (
        refresh > 0 and (refresh < coordinator.stream_max_age or not coordinator.stream_max_age)
    ):
        raise ConfigError(
            src,
            "$.coordinator.refresh_after",
            f"expected a duration greater than 0 and less than stream_max_age "
            f"({format_duration(coordinator.stream_max_age)}), so the current state is re-announced before "
            "the stream drops it",
        )
    if _PREFIX_RE.match(config.bus.prefix) is None:
        raise ConfigError(src, "$.bus.prefix", f"expected dot-separated tokens, got {config.bus.prefix!r}")
    try:
        config.bus.effective_inbox_prefix  # noqa: B018 - validates
    except ValueError as exc:
        path = "$.bus.inbox_prefix" if config.bus.inbox_prefix is not None else "$.bus.user"
        raise ConfigError(src, path, str(exc)) from None
    seen: dict[str, int] = {}
    for i, t in enumerate(config.targets):
        where = f"$.targets[{i}]"
        if _TARGET_RE.match(t.name) is None:
            raise ConfigError(
                src,
                f"{where}.name",
                f"expected 1-64 characters of a-z, 0-9, '_' or '-' starting with a letter or digit, got {t.name!r}",
            )
        if t.name in seen:
            raise ConfigError(src, f"{where}.name", f"duplicate target name {t.name!r} (also targets[{seen[t.name]}])")
        seen[t.name] = i
        schemes = _URL_SCHEMES[t.kind]
        scheme = t.url.split("://", 1)[0].lower() if "://" in t.url else ""
        if t.kind == "sqlalchemy":
            if "://" not in t.url and not t.url.startswith("sqlite"):
                raise ConfigError(src, f"{where}.url", "expected an SQLAlchemy URL like postgresql+asyncpg://host/db")
        elif scheme not in schemes:
            expected = ", ".join(f"{s}://" for s in schemes if s) or "a path"
            raise ConfigError(src, f"{where}.url", f"a {t.kind} target expects a URL starting with {expected}")
        if t.timeout > t.interval:
            raise ConfigError(src, f"{where}.timeout", "expected timeout <= interval")


def load_config_text(text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate TOML ``text``. ``source`` names it in errors."""
    environ = os.environ if env is None else env
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    secrets: list[str] = []
    raw = _interpolate(raw, "$", environ, source, secrets)
    if "source" in raw:
        raise ConfigError(source, "$.source", "unknown key")
    defaults = raw.get("defaults", {})
    targets = raw.get("targets", [])
    if isinstance(defaults, dict) and isinstance(targets, list):
        raw["targets"] = [_merge(defaults, t) if isinstance(t, dict) else t for t in targets]
    raw["source"] = source
    try:
        config = msgspec.convert(raw, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        path, problem = _split_msgspec_error(exc)
        raise ConfigError(source, path, redact(problem, secrets)) from None
    _check_semantics(config)
    return config


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the TOML file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None
    return load_config_text(text, source=str(p), env=env)
