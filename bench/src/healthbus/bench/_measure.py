"""Measurement helpers shared by every suite: percentiles, rates, process CPU and memory,
and a description of the machine the figures come from.

Everything here reads the kernel's own accounting (``resource.getrusage``, ``/proc``) so
no third-party dependency is needed. Times that are compared *across processes* use
``time.monotonic_ns()``: on Linux it is ``CLOCK_MONOTONIC``, one clock for the whole
machine, so a publish time taken in one process and a callback time taken in another
can be subtracted.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ProcessUsage",
    "Profiler",
    "machine_description",
    "now_ns",
    "percentile",
    "rate",
    "rss_bytes",
    "summarize_ms",
    "trimmed_rss_bytes",
]


def now_ns() -> int:
    """Machine-wide monotonic nanoseconds (comparable between processes on Linux)."""
    return time.monotonic_ns()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks.

    Raises ValueError on an empty sequence or a ``q`` outside 0-100: a percentile of
    nothing is a bug in the benchmark, not a number to print.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile rank must be within 0-100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


def summarize_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50, p99 and max of nanosecond samples, in milliseconds rounded to 3 decimals."""
    ms = [s / 1e6 for s in samples_ns]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
    }


def rate(count: int, elapsed_s: float) -> float:
    """``count / elapsed_s`` rounded to 1 decimal; 0.0 when no time elapsed."""
    return round(count / elapsed_s, 1) if elapsed_s > 0 else 0.0


def rss_bytes() -> int:
    """Current resident set size of this process (``/proc/self/statm``), in bytes."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: fall back to the peak
        return ProcessUsage.now().peak_rss_bytes


def trimmed_rss_bytes() -> int:
    """RSS after a full garbage collection and ``malloc_trim(0)``.

    Memory that was freed (a parsed configuration file's temporaries, say) but not yet
    handed back to the OS counts in plain RSS; this is what the process really holds.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    return rss_bytes()


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """CPU seconds (user + system) and peak RSS of the calling process at one moment.

    A child takes one at the start and one at the end of its measured phase and reports
    ``end - start`` CPU; peak RSS is the high-water mark of the whole process life.
    """

    cpu_s: float
    peak_rss_bytes: int

    @classmethod
    def now(cls) -> ProcessUsage:
        """The calling process's usage so far."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        # ru_maxrss is in KiB on Linux (bytes on macOS).
        peak = ru.ru_maxrss if sys.platform == "darwin" else ru.ru_maxrss * 1024
        return cls(cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_bytes=peak)

    @property
    def peak_rss_mb(self) -> float:
        """Peak RSS in MiB, rounded to 1 decimal."""
        return round(self.peak_rss_bytes / (1024 * 1024), 1)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1024 * 1024), 1)
    except (OSError, ValueError):
        pass
    return None


def _revision() -> str | None:
    """``git describe`` of the source tree the figures come from (``-dirty`` if edited)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=here, capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_description() -> dict[str, object]:
    """What the figures were measured on: CPU model, cores, memory, OS, Python, load, revision."""
    try:
        load1 = round(os.getloadavg()[0], 2)
    except OSError:
        load1 = None
    return {
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "mem_total_gib": _mem_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_1m": load1,
        "revision": _revision(),
    }


class Profiler:
    """Optional py-spy sampling of the calling process, for finding hot paths.

    Off unless ``HEALTHBUS_BENCH_PYSPY`` names an output path (and ``py-spy`` is
    installed: ``pip install py-spy``); then the measured phase of the role named by
    ``HEALTHBUS_BENCH_PYSPY_ROLE`` (``coordinator`` by default; ``subscriber`` for the
    latency suite's subscribers) is recorded as collapsed stacks to
    ``<path>.<pid>.txt`` (flame-graph input).
    """

    ENV = "HEALTHBUS_BENCH_PYSPY"
    ROLE_ENV = "HEALTHBUS_BENCH_PYSPY_ROLE"

    def __init__(self, role: str = "coordinator") -> None:
        self.role = role
        self._proc: subprocess.Popen[bytes] | None = None
        self.output: str | None = None

    def start(self) -> None:
        """Attach py-spy to this process (no-op when not asked for or not installed)."""
        path = os.environ.get(self.ENV)
        if not path or os.environ.get(self.ROLE_ENV, "coordinator") != self.role:
            return
        from healthbus.bus.embedded import find_binary

        binary = find_binary("py-spy")
        if binary is None:
            print(f"{self.ENV} is set but py-spy is not installed; not profiling", file=sys.stderr)
            return
        self.output = f"{path}.{os.getpid()}.txt"
        argv = [binary, "record", "--pid", str(os.getpid()), "--rate", "250", "--format", "raw"]
        argv += ["--nonblocking", "-o", self.output]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # py-spy needs a moment to attach; nothing to wait on

    def stop(self) -> None:
        """Stop sampling and write the output file."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
