"""healthbus subscribers: the client library services embed (being built; see docs/)."""

from healthbus.subscribers._bus import BusUnavailable, connect, ensure_stream, resolve_url

__all__ = ["BusUnavailable", "connect", "ensure_stream", "resolve_url"]
