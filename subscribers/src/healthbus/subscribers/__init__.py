"""healthbus subscribers: the client library services embed (being built; see docs/)."""

from healthbus.subscribers._bus import BusUnavailable, connect, ensure_stream, resolve_url
from healthbus.subscribers._statestream import Follower, StateStream

__all__ = ["BusUnavailable", "Follower", "StateStream", "connect", "ensure_stream", "resolve_url"]
