"""``healthbus bench``: the benchmarks (docs/performance.md).

``healthbus bench SUITE [--json] [--size smoke|full] [--messages N] ...`` runs one suite
(or ``all``, one after the other) against servers it starts itself on loopback, and
prints a table, or with ``--json`` one JSON object per suite, one per line, nothing else
on stdout. Exit code 1 when a suite could not run (its JSON object then has ``error``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from healthbus.cli._common import EXIT_FAILURE, EXIT_OK, UsageError

if TYPE_CHECKING:
    from healthbus.bench import BenchOptions

__all__ = ["BENCH_MISSING", "cmd_bench"]

#: What ``healthbus bench`` says when the benchmarks (an extra) are not installed.
BENCH_MISSING = "the benchmarks are not installed: pip install 'healthbus[bench]'"


def _options(args: argparse.Namespace, workdir: Path) -> BenchOptions:
    from healthbus.bench import BenchOptions

    for name in ("messages", "targets", "subscribers", "instances", "repeat", "calls", "partitions"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value}")
    for name in ("duration", "interval"):
        seconds = getattr(args, name, None)
        if seconds is not None and seconds <= 0:
            raise UsageError(f"--{name} must be greater than 0, got {seconds}")
    return BenchOptions(
        size=args.size,
        workdir=workdir,
        messages=getattr(args, "messages", None),
        targets=getattr(args, "targets", None),
        subscribers=getattr(args, "subscribers", None),
        instances=getattr(args, "instances", None),
        duration=getattr(args, "duration", None),
        repeat=getattr(args, "repeat", None),
        calls=getattr(args, "calls", None),
        interval=getattr(args, "interval", None),
        partitions=getattr(args, "partitions", None),
        seed=getattr(args, "seed", 1) or 1,
    )


async def cmd_bench(args: argparse.Namespace) -> int:
    """Run the named suite (or all) and print the results."""
    try:
        from healthbus.bench import SUITES, SuiteUnavailable, load_suite
    except ModuleNotFoundError as exc:
        if exc.name != "healthbus.bench":
            raise
        print(f"healthbus bench: {BENCH_MISSING}", file=sys.stderr)
        return EXIT_FAILURE
    suite = args.suite
    if suite != "all" and suite not in SUITES:
        raise UsageError(f"unknown suite {suite!r}: expected one of {', '.join([*SUITES, 'all'])}")
    names = list(SUITES) if suite == "all" else [suite]
    workdir = Path(tempfile.mkdtemp(prefix="healthbus-bench-"))
    status = EXIT_OK
    try:
        for name in names:
            suite_dir = workdir / name
            suite_dir.mkdir()
            opts = _options(args, suite_dir)
            try:
                result = await load_suite(name)(opts)
            except SuiteUnavailable as exc:
                status = EXIT_FAILURE
                _report_error(args, name, str(exc))
                continue
            except Exception as exc:  # one broken suite must not hide the others' figures
                status = EXIT_FAILURE
                if args.verbose:
                    traceback.print_exc()
                _report_error(args, name, f"{type(exc).__name__}: {exc}")
                continue
            if args.json:
                print(result.json_line(), flush=True)
            else:
                print(result.table(), flush=True)
                print(flush=True)
    finally:
        if getattr(args, "keep", False):
            print(f"healthbus bench: work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


def _report_error(args: argparse.Namespace, name: str, message: str) -> None:
    print(f"healthbus bench {name}: {message}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"suite": name, "size": args.size, "error": message}, separators=(",", ":")), flush=True)
