"""What every ``healthbus`` command shares: exit codes, the usage error, the
configuration and bus settings from the command line, and stopping on signals.

Command modules import this, never :mod:`healthbus.cli._main` (which imports them): the
CLI's modules form no import cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import msgspec

from healthbus.protocol import BusSettings, Config, load_config

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "bus_settings",
    "load_args_config",
    "stop_on_signals",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments detected after parsing; exit code 2."""


def load_args_config(args: argparse.Namespace, *, required: bool = False) -> Config:
    """The config named by ``--config`` (or $HEALTHBUS_CONFIG), else an empty one."""
    path = getattr(args, "config", None) or os.environ.get("HEALTHBUS_CONFIG")
    if path is None:
        if required:
            raise UsageError("--config FILE is required")
        return Config()
    return load_config(path)


def bus_settings(args: argparse.Namespace, config: Config | None = None) -> BusSettings:
    """The config's ``[bus]`` overlaid with command-line options and environment."""
    base = (config or Config()).bus
    changes: dict[str, Any] = {}
    for field in ("user", "creds", "tls_ca", "tls_cert", "tls_key", "inbox_prefix", "prefix"):
        value = getattr(args, field, None)
        if value:
            changes[field] = value
    password = getattr(args, "password", None) or os.environ.get("HEALTHBUS_NATS_PASSWORD")
    token = getattr(args, "token", None) or os.environ.get("HEALTHBUS_NATS_TOKEN")
    if password:
        changes["password"] = password
    if token:
        changes["token"] = token
    if getattr(args, "nats", None):
        changes["url"] = args.nats
    return msgspec.structs.replace(base, **changes) if changes else base


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event | None = None) -> Iterator[asyncio.Event]:
    """An event that SIGINT or SIGTERM (Ctrl-C, ``docker stop``, Kubernetes) sets while the block runs.

    Pass ``stop`` when something else may end the command too. The handlers are removed on
    leaving the block, so a second Ctrl-C during the shutdown interrupts as usual.
    """
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
