"""Throwaway PostgreSQL clusters: initdb once per session into a template, copied per server.

initdb refuses to run as root, so when we are root every PostgreSQL command runs as the
``postgres`` user (``runuser -u postgres --``) and the cluster lives in a directory that
user owns, outside pytest's root-only tmp dir. ``pg_ctl`` daemonizes the postmaster, so
it is not our child: an atexit hook stops every cluster still running (immediate mode).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from healthbus.bus.embedded import Restartable, ServerStartError, find_binary, free_port, log_tail

from ._process import start_with_port_retry

__all__ = ["PostgresServer", "PostgresTemplate", "find_pg_binary", "pg_missing"]

_RUNNING: set[Path] = set()
_RUNNING_LOCK = threading.Lock()


def find_pg_binary(name: str) -> str | None:
    """``name`` (initdb, pg_ctl, psql) from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    found = find_binary(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _run_as() -> list[str]:
    """The prefix that runs a command as the postgres user when we are root."""
    if os.geteuid() != 0:
        return []
    return [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]


def pg_missing() -> str | None:
    """Why PostgreSQL clusters cannot be made here, or None when they can."""
    for name in ("initdb", "pg_ctl", "psql"):
        if find_pg_binary(name) is None:
            return f"{name} not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root but runuser is missing"
    return None


def _owned_tempdir(prefix: str) -> Path:
    """A fresh directory the postgres user owns (traversable: /tmp is world-accessible)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _pg(args: list[str], *, what: str, log_path: Path | None = None, stdin: str | None = None) -> None:
    """Run a PostgreSQL tool (as postgres when root); raise ServerStartError with its output."""
    binary = find_pg_binary(args[0]) or args[0]
    proc = subprocess.run(
        [*_run_as(), binary, *args[1:]],
        input=stdin.encode() if stdin is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        out = proc.stdout.decode("utf-8", "replace").strip()
        tail = log_tail(log_path) if log_path is not None else ""
        raise ServerStartError(f"{what} failed (exit {proc.returncode}): {out}\n{tail}".rstrip())


class PostgresTemplate:
    """One initdb'd cluster directory (trust auth) that servers copy instead of running initdb."""

    def __init__(self) -> None:
        self.base = _owned_tempdir("healthbus-pg-template-")
        self.data_dir = self.base / "data"
        _pg(
            ["initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            what="initdb",
        )

    def copy_to(self, dest: Path) -> None:
        """Copy the cluster to ``dest`` keeping owner and modes (cp -a: we may be root)."""
        subprocess.run(["cp", "-a", str(self.data_dir), str(dest)], check=True, timeout=60)

    def remove(self) -> None:
        """Delete the template."""
        shutil.rmtree(self.base, ignore_errors=True)


class PostgresServer(Restartable):
    """A PostgreSQL cluster on ``127.0.0.1:port`` with its own data dir, socket dir and log.

    With ``password`` the ``postgres`` user gets it and TCP connections must authenticate
    with scram-sha-256 (the unix socket stays trust, for the harness itself). ``settings``
    are server settings given at every start (``{"max_connections": "8"}``).
    """

    def __init__(
        self,
        *,
        template: PostgresTemplate | None = None,
        password: str | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.database = "postgres"
        self.password = password
        self._auto_port = port is None
        self.port = port if port is not None else free_port(self.host)
        self.base = _owned_tempdir("healthbus-pg-")
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self._template = template
        self.settings = dict(settings or {})
        self._initialized = False
        self._started_once = False

    # -- addresses

    @property
    def dsn(self) -> str:
        """``postgresql://postgres[:password]@127.0.0.1:PORT/postgres`` (libpq / asyncpg form)."""
        auth = self.user if not self.password else f"{self.user}:{quote(self.password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}"

    @property
    def sqlalchemy_url(self) -> str:
        """The DSN for SQLAlchemy with asyncpg: ``postgresql+asyncpg://...``."""
        return "postgresql+asyncpg://" + self.dsn.split("://", 1)[1]

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket lives (the data directory)."""
        return self.data_dir

    # -- lifecycle

    def _initialize(self) -> None:
        if self._template is not None:
            self._template.copy_to(self.data_dir)
        else:
            _pg(
                ["initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
                what="initdb",
            )
        if self.password:
            # Written before the first start, so no TCP connection ever gets in on trust.
            hba = self.data_dir / "pg_hba.conf"
            hba.write_text(
                "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
            )
        self._initialized = True

    @property
    def is_running(self) -> bool:
        """True while the postmaster of this cluster is alive."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _pg_ctl_start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        _pg(
            ["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", "30", "start"],
            what=f"PostgreSQL on port {self.port}",
            log_path=self.log_path,
        )

    def start(self) -> Self:
        """Start (initializing the cluster on first use) and wait until it accepts connections."""
        if self.is_running:
            return self
        if not self._initialized:
            self._initialize()

        def start_once() -> None:
            with _RUNNING_LOCK:
                _RUNNING.add(self.data_dir)
            try:
                self._pg_ctl_start()
            except ServerStartError:
                self._stop("immediate")
                raise

        def pick_port() -> None:
            self.port = free_port(self.host)

        start_with_port_retry(start_once, pick_port, retry=self._auto_port and not self._started_once)
        if self.password and not self._started_once:
            # Over the trust unix socket; the SQL goes through stdin, never a command line.
            literal = "'" + self.password.replace("'", "''") + "'"
            _pg(
                ["psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                 "-v", "ON_ERROR_STOP=1", "-q", "-X"],
                what="setting the postgres password",
                stdin=f"ALTER USER postgres PASSWORD {literal};\n",
            )  # fmt: skip
        self._started_once = True
        return self

    def _stop(self, mode: str) -> None:
        if self.is_running:
            with contextlib.suppress(ServerStartError):
                _pg(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"], what="pg_ctl stop")
        with _RUNNING_LOCK:
            _RUNNING.discard(self.data_dir)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        if not self.is_running:
            return None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown (disconnects clients, then stops); keeps the data. No-op when stopped."""
        self._stop("fast")

    def stop_mode(self, mode: str, *, wait: bool = True) -> None:
        """``pg_ctl stop -m smart|fast|immediate``; ``wait=False`` returns at once (a smart stop then
        waits for every session to end, refusing new ones meanwhile). Keeps the data."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown stop mode {mode!r}")
        if wait:
            self._stop(mode)
        else:
            _pg(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-W", "stop"], what="pg_ctl stop")

    def start_held_in_startup(self, hold_s: float) -> None:
        """Start as a standby whose ``restore_command`` sleeps ``hold_s`` seconds, without waiting: for
        that long new connections get ``FATAL: the database system is starting up`` (57P03).
        ``stop_mode("immediate")`` then :meth:`leave_standby` before a normal :meth:`start`."""
        (self.data_dir / "standby.signal").write_text("")
        # pg_ctl runs postgres through /bin/sh: the quotes keep the command one argument.
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} -c fsync=off "
            f"-c 'restore_command=sleep {hold_s:g}; exit 1'"
        )
        with _RUNNING_LOCK:
            _RUNNING.add(self.data_dir)
        _pg(["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-W", "start"], what="start")

    def leave_standby(self) -> None:
        """Undo :meth:`start_held_in_startup` (the cluster must be stopped)."""
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "standby.signal").unlink()

    def kill(self) -> None:
        """Immediate shutdown, as in a crash: the next start runs crash recovery."""
        self._stop("immediate")

    def remove(self) -> None:
        """Stop and delete the cluster's directory."""
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<PostgresServer {self.host}:{self.port} {state} {self.data_dir}>"


@atexit.register
def _stop_leftovers() -> None:
    with _RUNNING_LOCK:
        dirs = list(_RUNNING)
    for data_dir in dirs:
        with contextlib.suppress(Exception):
            _pg(["pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "stop"], what="pg_ctl stop")
