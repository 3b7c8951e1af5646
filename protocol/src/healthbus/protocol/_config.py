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
from healthbus.protocol._subjects import DEFAULT_PREFIX, MAX_PARTITIONS, PREFIX_PATTERN, TARGET_PATTERN

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
GroupPolicy: TypeAlias = Literal["primary-first", "round-robin", "least-latency", "weighted"]
GROUP_POLICIES: Final[tuple[GroupPolicy, ...]] = ("primary-first", "round-robin", "least-latency", "weighted")


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


class RampSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The fleet-wide re-admission ramp (docs/coordinator.md, rule 4b): when a breaker
    closes, the share of instances for which ``is_available()`` answers True grows from
    ``from`` to 1 over ``duration``; ``reopen_reports`` distinct instances reporting the
    target failing during it re-open the breaker (a failed re-admission, backed off)."""

    start: float = msgspec.field(default=0.1, name="from")
    """Share of the fleet admitted at once (0 to 1; the TOML key is ``from``)."""
    duration: Duration = Duration(0.2)
    """How long the share takes to grow to 1; ``"0s"``: everyone at once, no probation."""
    reopen_reports: int = 2
    """Distinct instances whose failure reports during the probation (the ramp, and at least
    2 s) re-open the breaker."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"ramp.from must be a share between 0 and 1, got {self.start!r}")
        if self.duration < 0:
            raise ValueError("ramp.duration must be 0 or more")
        if isinstance(self.reopen_reports, bool) or self.reopen_reports < 1:
            raise ValueError(f"ramp.reopen_reports must be a whole number >= 1, got {self.reopen_reports!r}")


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
    trial_interval: Duration = Duration(0.1)
    """While the breaker is open (after ``retry_at``), probe workers trial-check the
    target this often, whatever the outcome: P checks per ``trial_interval``."""
    ramp: RampSettings = RampSettings()

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.trial_interval <= 0:
            raise ValueError("trial_interval must be greater than 0")
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


class GroupConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``[[groups]]``: several instances (targets) of one dependency, picked by a policy.

    ``members`` are target names, in order (``primary-first`` uses that order: the first
    usable one is picked). ``weights`` (``weighted``): a whole number >= 1 per member,
    default 1. The group is ``healthy`` while at least ``min_healthy`` members are
    available, ``degraded`` below, ``unavailable`` at none. ``panic_threshold`` (a share,
    0 to 1; 0 turns it off): while fewer than this share of members are available,
    ``pick()`` spreads over every member instead of crushing the few left (as Envoy's panic
    threshold does). ``primary``: the member that takes writes (adapters route
    read-only work away from it unless ``reads_on_primary``).
    """

    name: str
    members: list[str]
    policy: GroupPolicy = "round-robin"
    weights: dict[str, int] = {}
    min_healthy: int = 1
    panic_threshold: float = 0.0
    primary: str | None = None
    reads_on_primary: bool = False


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
    lease_ttl: Duration = Duration(5.0)
    """Leader lease: a standby coordinator takes over this long after the leader died.
    ``"0s"`` turns leader election off (exactly one coordinator must run)."""
    http: str | None = None
    confirm_window: Duration = Duration(1.0)
    """Failure reports start at most one confirmation round per target per this window,
    however many arrive (``"0s"``: a round for every report that is not a flood)."""
    digest_interval: Duration = Duration(0.5)
    """How often the active coordinator publishes the StateDigest on ``<prefix>.digest``
    (and at once when its connection comes back); subscribers catching up after a
    reconnect compare it with what they know. ``"0s"``: never (subscribers then reload
    every current state after a reconnect)."""
    partitions: int = 1
    """Split the targets into this many partitions by :func:`~._subjects.partition_of` of
    their names, each with its own leader lease (``leader.<p>``): any coordinator process
    may lead several, standbys take over each one separately. 1 (the default): one lease
    (``leader``), one leader deciding every target — the behaviour before partitions.
    More needs leader election (``lease_ttl`` > 0) and no ``[[groups]]`` yet."""
    partition_routing: Literal["filter", "server"] = "filter"
    """With partitions: ``"filter"`` (default) every partition service subscribes to every
    probe subject and ignores other partitions' targets; ``"server"``: nats-server maps
    ``<prefix>.probe.*.*`` to ``<prefix>.part.{{partition(N,1)}}.probe.…`` (a mapping the
    operator installs, deploy/nats/partitions.example.conf) and each partition service
    subscribes to its own ``<prefix>.part.<p>.probe.*.*`` only."""

    def __post_init__(self) -> None:
        if self.lease_ttl < 0:
            raise ValueError("lease_ttl must be 0 (no election) or a positive duration")

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
    workers_per_target: int = 2
    """With sharding: how many workers check each target."""
    heartbeat: Duration = Duration(2.0)
    spread: float = 0.1
    """Random spread of each check's start, as a fraction of the interval."""
    http: str | None = None


class Config(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A whole, validated configuration file."""

    bus: BusSettings = BusSettings()
    defaults: CheckSettings = CheckSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    probes: ProbeWorkerSettings = ProbeWorkerSettings()
    targets: list[TargetConfig] = []
    groups: list[GroupConfig] = []
    source: str = "<config>"
    """Where this configuration came from (file path), for messages."""

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; KeyError if there is none."""
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def group(self, name: str) -> GroupConfig:
        """The group called ``name``; KeyError if there is none."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def target_names(self) -> list[str]:
        """Every configured target's name, in file order."""
        return [t.name for t in self.targets]


# --------------------------------------------------------------------------- loading

#: Keys removed or renamed during the 0.x series, (section, key) -> what to do instead: a
#: file that still sets one gets this error rather than msgspec's bare "unknown field".
REMOVED_KEYS: Final[Mapping[tuple[str, str], str]] = {
    ("coordinator", "legacy_probe_subjects"): (
        "removed: every ProbeResult goes on <prefix>.probe.<target>.<probe> (the probe worker's own "
        "subject); delete the key (CHANGELOG: Unreleased)"
    ),
    ("probes", "jitter"): (
        "renamed to spread (a fraction of the interval; `jitter` names the backoff strategy); "
        "write spread = <the same number>"
    ),
    ("coordinator", "lease"): (
        "renamed to lease_ttl (the name CoordinatorService(lease_ttl=...) has too); "
        "write lease_ttl = <the same duration>"
    ),
    ("probes", "replicas"): (
        "renamed to workers_per_target (not the stream's replicas, [coordinator] stream_replicas); "
        "write workers_per_target = <the same number>"
    ),
}


def _check_removed(raw: Mapping[str, Any], source: str) -> None:
    for (section, key), problem in REMOVED_KEYS.items():
        table = raw.get(section)
        if isinstance(table, Mapping) and key in table:
            raise ConfigError(source, f"$.{section}.{key}", problem)


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
    _check_partitions(config)
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
        _check_name(src, where, t.name, "target", seen, i)
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
    _check_groups(config, seen)


def _check_partitions(config: Config) -> None:
    src = config.source
    partitions = config.coordinator.partitions
    if isinstance(partitions, bool) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ConfigError(
            src,
            "$.coordinator.partitions",
            f"expected a whole number from 1 (one leader for every target) to {MAX_PARTITIONS}, got {partitions!r}",
        )
    if partitions > 1 and not config.coordinator.lease_ttl:
        raise ConfigError(
            src,
            "$.coordinator.partitions",
            "partitions > 1 needs leader election: lease_ttl must be positive (each partition has its own lease)",
        )
    if partitions == 1 and config.coordinator.partition_routing != "filter":
        raise ConfigError(
            src,
            "$.coordinator.partition_routing",
            'partition_routing = "server" needs partitions > 1 (with one partition nothing is mapped)',
        )
    if partitions > 1 and config.groups:
        raise ConfigError(
            src,
            "$.coordinator.partitions",
            "partitions > 1 with [[groups]] is not supported yet: a group's members may fall in different"
            " partitions (use partitions = 1)",
        )


def _check_name(src: str, where: str, name: str, what: str, seen: dict[str, int], index: int) -> None:
    """A target's or group's name: the target-name rule, and unique among its kind (recorded in ``seen``)."""
    if _TARGET_RE.match(name) is None:
        raise ConfigError(
            src,
            f"{where}.name",
            f"expected 1-64 characters of a-z, 0-9, '_' or '-' starting with a letter or digit, got {name!r}",
        )
    if name in seen:
        raise ConfigError(src, f"{where}.name", f"duplicate {what} name {name!r} (also {what}s[{seen[name]}])")
    seen[name] = index


def _check_groups(config: Config, targets: Mapping[str, int]) -> None:
    src = config.source
    names: dict[str, int] = {}
    for i, g in enumerate(config.groups):
        where = f"$.groups[{i}]"
        if g.name in targets:
            raise ConfigError(src, f"{where}.name", f"{g.name!r} is already a target's name")
        _check_name(src, where, g.name, "group", names, i)
        if not g.members:
            raise ConfigError(src, f"{where}.members", "expected at least one member (a target name)")
        for j, member in enumerate(g.members):
            if member not in targets:
                raise ConfigError(src, f"{where}.members[{j}]", f"no target is called {member!r}")
            if member in g.members[:j]:
                raise ConfigError(src, f"{where}.members[{j}]", f"{member!r} is listed twice")
        for member, weight in g.weights.items():
            if member not in g.members:
                raise ConfigError(src, f"{where}.weights.{member}", f"{member!r} is not a member of {g.name!r}")
            if isinstance(weight, bool) or weight < 1:
                raise ConfigError(src, f"{where}.weights.{member}", f"expected a whole number >= 1, got {weight!r}")
        if g.weights and g.policy != "weighted":
            raise ConfigError(
                src, f"{where}.weights", f"weights apply to policy 'weighted' only (policy is {g.policy!r})"
            )
        if isinstance(g.min_healthy, bool) or not 1 <= g.min_healthy <= len(g.members):
            raise ConfigError(
                src,
                f"{where}.min_healthy",
                f"expected a whole number from 1 to the number of members ({len(g.members)}), got {g.min_healthy!r}",
            )
        if not 0.0 <= g.panic_threshold <= 1.0:
            raise ConfigError(
                src, f"{where}.panic_threshold", f"expected a share from 0 to 1 (0: off), got {g.panic_threshold!r}"
            )
        if g.primary is not None and g.primary not in g.members:
            raise ConfigError(src, f"{where}.primary", f"{g.primary!r} is not a member of {g.name!r}")
        if g.reads_on_primary and g.primary is None:
            raise ConfigError(src, f"{where}.reads_on_primary", "needs primary (the member that takes writes)")


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
    _check_removed(raw, source)
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
