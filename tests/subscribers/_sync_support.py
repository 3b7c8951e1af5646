"""Helpers for the synchronous-client tests: publishing from sync code, forked workers, a live stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from healthbus.bus import connect
from healthbus.protocol import StateChanged
from tests.e2e._stack import fast_config
from tests.helpers import healthbus_bin, publish_states


def publish(url: str, prefix: str, *events: StateChanged) -> None:
    """Publish ``events`` to the state stream (created if missing) from synchronous code."""

    async def go() -> None:
        nc = await connect(url=url)
        try:
            await publish_states(nc.jetstream(), prefix, list(events), ensure=True)
        finally:
            await nc.close()

    asyncio.run(go())


def wait_until_sync(
    condition: Callable[[], bool], timeout: float, what: str, seen: Callable[[], object] | None = None
) -> None:
    """``tests.helpers.wait_until`` for synchronous tests: re-check every 50 ms, AssertionError after ``timeout``
    naming ``what`` and what ``seen()`` returns then (not when the wait began)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = "" if seen is None else f"; seen: {seen()!r}"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{tail}")
        time.sleep(0.05)


class Worker:
    """A forked child serving JSON requests over a socketpair (like a pre-fork server's worker)."""

    def __init__(self, serve: Callable[[dict[str, Any]], Any]) -> None:
        parent_end, child_end = socket.socketpair()
        with warnings.catch_warnings():  # Python 3.12+ warns about fork() with threads running
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 0
            try:
                parent_end.close()
                reader = child_end.makefile("r")
                for line in reader:
                    request = json.loads(line)
                    if request.get("op") == "exit":
                        break
                    try:
                        answer: Any = {"ok": serve(request)}
                    except Exception as exc:
                        answer = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
                    child_end.sendall((json.dumps(answer, default=str) + "\n").encode())
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        child_end.close()
        self.pid = pid
        self._sock = parent_end
        self._sock.settimeout(60)
        self._reader = parent_end.makefile("r")

    def ask(self, **request: Any) -> Any:
        """Send one request; the worker's answer (AssertionError carrying its traceback if it raised)."""
        self._sock.sendall((json.dumps(request) + "\n").encode())
        line = self._reader.readline()
        if not line:
            raise AssertionError(f"worker {self.pid} died")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"worker {self.pid}: {answer['error']}\n{answer['trace']}")
        return answer["ok"]

    def stop(self) -> int:
        """Ask the worker to exit; its exit code (killed after 10 s)."""
        with contextlib.suppress(OSError):
            self._sock.sendall(b'{"op": "exit"}\n')
        deadline = time.monotonic() + 10
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reader.close()
                self._sock.close()
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.02)


@contextlib.contextmanager
def live_stack(nats_url: str, targets: Sequence[tuple[str, str, str]], workdir: Path) -> Iterator[None]:
    """``healthbus coordinator`` and one ``healthbus probe`` (real commands) watching ``targets``; stopped after."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "healthbus.toml"
    config.write_text(fast_config(targets))
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("HEALTHBUS_CONFIG", None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args, log in (
            (["coordinator"], "coordinator.log"),
            (["probe", "--id", "w1"], "probe.log"),
        ):
            with (workdir / log).open("ab") as out:
                procs.append(
                    subprocess.Popen(
                        [healthbus_bin(), *args, "--config", str(config), "--nats", nats_url, "-v"],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        env=env,
                    )
                )
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def served(
    argv: Sequence[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None, grace: float = 20
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (output appended to ``log``) for the block; terminated after (killed past ``grace`` s)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
