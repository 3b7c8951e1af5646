"""Argument parsing and dispatch of the ``healthbus`` command (what the commands share is
in :mod:`healthbus.cli._common`; the command modules are imported only on use).

Exit codes: 0 ok, 1 runtime failure (e.g. NATS unreachable), 2 usage or config error
(the message names the bad field). Every subcommand that talks to the bus takes
``--config``, ``--nats`` and the NATS credential options (``bench`` starts its own
servers and ``nats-user`` is offline: they take none); the URL comes from ``--nats``,
then the config's ``[bus] url``, then ``NATS_URL``, then ``nats://127.0.0.1:4222``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from healthbus.bus import BusUnavailable
from healthbus.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from healthbus.protocol import ConfigError

# Any word starting with "-" and a digit is a value, never an option: negative numbers,
# relative times like -1h, -30m, -1h30m, -250ms, and mistyped ones like -1x or -2w, which
# then reach the time parser and its clear message instead of argparse's "expected one
# argument".
_RELATIVE_OR_NEGATIVE = re.compile(r"^-\.?\d")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _add_bus_options(p: argparse.ArgumentParser) -> None:
    """``--config`` and the NATS connection options, for the commands that talk to the bus."""
    g = p.add_argument_group("NATS connection")
    g.add_argument("--nats", metavar="URL", help="NATS server URL (default: config, $NATS_URL, nats://127.0.0.1:4222)")
    g.add_argument("--prefix", help="subject prefix (default: config or 'healthbus')")
    g.add_argument("--user", help="NATS user")
    g.add_argument("--password", help="NATS password (prefer $HEALTHBUS_NATS_PASSWORD)")
    g.add_argument("--token", help="NATS token (prefer $HEALTHBUS_NATS_TOKEN)")
    g.add_argument("--creds", metavar="FILE", help="NATS credentials file")
    g.add_argument("--tls-ca", metavar="FILE", help="CA bundle for TLS")
    g.add_argument("--tls-cert", metavar="FILE", help="client certificate for TLS")
    g.add_argument("--tls-key", metavar="FILE", help="client key for TLS")
    g.add_argument("--inbox-prefix", metavar="SUBJECT", help="reply inbox prefix (default: config, else _INBOX.<user>)")
    p.add_argument("--config", metavar="FILE", help="healthbus TOML configuration")


def _not_built(name: str) -> Handler:
    async def handler(args: argparse.Namespace) -> int:
        print(f"healthbus {name}: not built yet", file=sys.stderr)
        return EXIT_FAILURE

    return handler


def _handler(module: str, name: str, command: str) -> Handler:
    """Import the handler lazily so `healthbus --help` never pays for drivers."""

    async def handler(args: argparse.Namespace) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("healthbus"):
                return await _not_built(command)(args)
            raise
        fn = getattr(mod, name, None)
        if fn is None:
            return await _not_built(command)(args)
        result: int = await fn(args)
        return result

    return handler


COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("all-in-one: embedded NATS, coordinator, probe worker and dashboard", "healthbus.cli._dev"),
    "coordinator": ("run the coordinator", "healthbus.cli._coordinator"),
    "probe": ("run one probe worker", "healthbus.cli._probe"),
    "dashboard": ("serve the web dashboard", "healthbus.cli._dashboard"),
    "status": ("current state of every target", "healthbus.cli._query"),
    "tail": ("live state changes", "healthbus.cli._query"),
    "replay": ("history from the audit stream", "healthbus.cli._query"),
    "state-at": ("every target's state as it was at time T", "healthbus.cli._query"),
    "ctl": ("operator control of a target: force-open, maintenance, disable, reset", "healthbus.cli._query"),
    "reload": ("every coordinator and probe worker re-reads its configuration file", "healthbus.cli._query"),
    "bench": ("benchmarks, each against a baseline in the same run", "healthbus.cli._bench"),
    "nats-user": ("print the nats-server user block of a new probe worker", "healthbus.cli._natsuser"),
}

#: Commands that talk to no NATS server of the user's: no ``--config`` or bus options.
OFFLINE_COMMANDS: Final = frozenset({"bench", "nats-user"})


#: The most synthetic targets ``dev --demo`` brings up (one probe worker on a laptop).
DEMO_MAX: Final = 10_000


def _demo_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected a whole number") from None
    if not 0 <= count <= DEMO_MAX:
        raise argparse.ArgumentTypeError(f"invalid count {count}: expected 0 to {DEMO_MAX}")
    return count


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="healthbus",
        description="Watch a fleet's dependencies once, centrally, and tell every service over NATS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (help_text, _module) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name not in OFFLINE_COMMANDS:
            _add_bus_options(p)
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
        parsers[name] = p
    for name in ("dev", "coordinator", "probe", "dashboard"):
        parsers[name].add_argument(
            "--http", metavar="HOST:PORT", help="serve /metrics, /healthz, /readyz (and the dashboard) here"
        )
    parsers["coordinator"].add_argument(
        "--only-partitions",
        metavar="P,Q,...",
        help="with [coordinator] partitions > 1: lead or stand by for these partitions only (default: all)",
    )
    parsers["probe"].add_argument(
        "--id", dest="worker_id", help="this worker's vantage-point id (default: host name + pid)"
    )
    parsers["dev"].add_argument(
        "--data-dir", default=".healthbus", help="where the embedded NATS keeps its data (default: .healthbus)"
    )
    parsers["dev"].add_argument(
        "--demo",
        type=_demo_count,
        default=0,
        metavar="N",
        help="add N synthetic targets to the built-in demo, some failing on purpose (to try the dashboard and alerts)",
    )
    for name in ("status", "tail", "replay", "state-at"):
        parsers[name].add_argument(
            "--json", action="store_true", help="one StateChanged JSON object per line, nothing else"
        )
    parsers["status"].add_argument(
        "--groups", action="store_true", help="with --json: one GroupChanged JSON object per group instead"
    )
    parsers["replay"].add_argument("--since", metavar="T", help="RFC 3339 time or relative like -1h")
    parsers["replay"].add_argument("--until", metavar="T", help="RFC 3339 time or relative like -5m")
    parsers["replay"].add_argument("--target", metavar="NAME", help="only this target")
    parsers["state-at"].add_argument("time", metavar="T", help="RFC 3339 time or relative like -1h")
    for name in ("replay", "state-at"):
        # Let `--since -1h` and `state-at -30m` through: argparse takes any "-x" word for an
        # option unless it looks like a negative number, so relative times must count as one.
        parsers[name]._negative_number_matcher = _RELATIVE_OR_NEGATIVE
    parsers["ctl"].add_argument(
        "action",
        choices=["force-open", "maintenance", "disable", "reset", "reload"],
        help="what to do to TARGET (reload: deprecated, use `healthbus reload`)",
    )
    parsers["ctl"].add_argument("target", metavar="TARGET", nargs="?", help="target name")
    parsers["ctl"].add_argument("--reason", default="", help="why (goes into the audit log)")
    parsers["ctl"].add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="maintenance: how long (e.g. 30m, 1h, 2h30m); it ends by itself, or on `ctl reset`",
    )
    parsers["nats-user"].add_argument("role", choices=["probe"], help="the role of the new user")
    parsers["nats-user"].add_argument(
        "worker_id", metavar="ID", help="the worker's id (its --id, and its NATS user name): A-Z a-z 0-9 _ -"
    )
    parsers["nats-user"].add_argument("--prefix", help="subject prefix the user may publish under (default: healthbus)")
    parsers["nats-user"].add_argument("--password", help="the new worker's password (prefer $HEALTHBUS_NATS_PASSWORD)")
    parsers["bench"].add_argument(
        "suite",
        nargs="?",
        default="all",
        help="coordinator, latency, scale, fanout, client, failover, fleet, outage, groups, partitions or all",
    )
    parsers["bench"].add_argument("--json", action="store_true", help="print one JSON object")
    parsers["bench"].add_argument(
        "--size", choices=["smoke", "full"], default="full", help="smoke: tiny sizes for tests"
    )
    sizes = parsers["bench"].add_argument_group("sizes (default: the suite's own for --size)")
    sizes.add_argument("--messages", type=int, metavar="N", help="coordinator: ProbeResults to publish (200000)")
    sizes.add_argument("--targets", type=int, metavar="N", help="coordinator: targets (1000); scale: (10000)")
    sizes.add_argument("--subscribers", type=int, metavar="N", help="latency: subscriber processes (100)")
    sizes.add_argument(
        "--instances", type=int, metavar="N", help="fanout: service instances (50); fleet: HealthClients (10000)"
    )
    sizes.add_argument(
        "--duration", type=float, metavar="S", help="scale, fanout: seconds of steady load; fleet: idle window (10)"
    )
    sizes.add_argument(
        "--repeat", type=int, metavar="N", help="coordinator: baseline/coordinator pairs (3); fleet: transitions (20)"
    )
    sizes.add_argument("--calls", type=int, metavar="N", help="client: calls to time per figure")
    sizes.add_argument("--interval", type=float, metavar="S", help="scale: seconds between a target's checks (1)")
    sizes.add_argument(
        "--partitions", type=int, metavar="N", help="failover: the coordinators' [coordinator] partitions (1)"
    )
    sizes.add_argument("--seed", type=int, default=1, help="seed of the synthetic traffic (default 1)")
    sizes.add_argument("--keep", action="store_true", help="keep the work directory (server logs) and name it")
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # milvus-lite's faiss loader reports each CPU variant it tried at INFO, with a
    # "ModuleNotFoundError" per miss: in a log tail (healthbus dev prints one when a child
    # dies) that reads like the cause of the failure. Only -vv shows it.
    logging.getLogger("faiss").setLevel(logging.WARNING if verbose < 2 else logging.NOTSET)
    # asyncio warns "returning true from eof_received() has no effect when using ssl" when a
    # TLS server closes the connection (e.g. refusing our certificate): noise next to the
    # one-line error that says why. Only -vv shows it.
    if verbose < 2:
        logging.getLogger("asyncio").addFilter(_drop_ssl_eof_noise)


def _drop_ssl_eof_noise(record: logging.LogRecord) -> bool:
    return "eof_received()" not in str(record.msg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``healthbus`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    module = COMMANDS[args.command][1]
    func = "cmd_" + args.command.replace("-", "_")
    try:
        return asyncio.run(_handler(module, func, args.command)(args))
    except ConfigError as exc:
        print(f"healthbus {args.command}: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"healthbus {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BusUnavailable as exc:
        print(f"healthbus {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
