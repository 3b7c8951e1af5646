"""A real headless Chromium driven over the DevTools protocol (a websocket, with aiohttp).

Only what the dashboard tests need: open a URL, evaluate JavaScript, wait until an
expression is true. Chromium and all its helper processes run in their own process
group, which ``close()`` ends (SIGTERM, then SIGKILL), so no browser outlives a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness._util import require
from tests.helpers import holds_within

__all__ = ["Chromium", "find_chromium"]

FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,900",  # a laptop screen, for the page's layout and its screenshots
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def find_chromium() -> str:
    """Debian's chromium (installed by scripts/install-browser); skip, or fail under CI=true."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return require("chromium", "install it with scripts/install-browser (Debian package chromium)")


def _launch(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    # A new session: the browser and its helpers form one process group that close() ends.
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


class Chromium:
    """One headless browser with one page."""

    def __init__(self, profile_dir: Path, binary: str | None = None) -> None:
        self.binary = binary or find_chromium()
        self.profile_dir = profile_dir
        self.log_path = profile_dir.parent / "chromium.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def open(self, url: str, *, timeout: float = 30.0) -> None:
        """Start the browser on ``url`` and attach to its page."""
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile_dir / "DevToolsActivePort"
        self._proc = _launch([self.binary, *FLAGS, f"--user-data-dir={self.profile_dir}", url], self.log_path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None or loop.time() > deadline:
                raise RuntimeError(f"chromium did not start; log {self.log_path}:\n{self._log_tail()}")
            await asyncio.sleep(0.05)  # the browser writes the file when ready: no event to await
        port = int(port_file.read_text().split()[0])
        self._http = aiohttp.ClientSession()
        while True:
            async with self._http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [p for p in await resp.json() if p.get("type") == "page"]
            if pages:
                break
            if loop.time() > deadline:
                raise RuntimeError("chromium opened no page")
            await asyncio.sleep(0.05)
        self._ws = await self._http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        return ""

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        assert self._ws is not None, "open() first"
        msg_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        while True:
            msg = await self._ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection ended: {msg.type}")
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (a promise's once it settles)."""
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Re-evaluate ``expression`` until it is truthy; AssertionError naming ``what`` on timeout."""
        last: list[Any] = [None]

        async def truthy() -> bool:  # the page offers the test no event: re-check
            last[0] = await self.evaluate(expression)
            return bool(last[0])

        if not await holds_within(truthy, timeout):
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value {last[0]!r})")
        return last[0]

    async def close(self) -> None:
        """Close the DevTools connection and end the browser's whole process group."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        proc = self._proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the group of the browser we started (start_new_session)
            try:
                await asyncio.to_thread(proc.wait, wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Helpers (renderer, GPU, zygote) share the group; make sure none survives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
