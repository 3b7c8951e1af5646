"""Running ``healthbus`` commands as long-lived child processes in end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from tests.helpers import healthbus_bin, wait_until

__all__ = ["Command"]


class Command:
    """``healthbus ARGS`` running in the background, output in a log file; ``stop()`` = SIGTERM then kill."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        self.env.pop("HEALTHBUS_CONFIG", None)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Command:
        """Start the command."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")  # a local log file, opened once per command
        try:
            self.proc = await asyncio.create_subprocess_exec(
                healthbus_bin(), *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )
        finally:
            log.close()  # the child has its own copy of the descriptor
        return self

    def log(self) -> str:
        """Everything the command printed so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    async def wait_http_ready(self, base_url: str, timeout: float = 30.0) -> None:
        """Wait until ``base_url``/readyz answers 200 (fails early if the command exits)."""
        answered: list[object] = [None]  # the last answer (a status or an error), for the failure message
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(f"healthbus {self.args[0]} exited {self.proc.returncode}:\n{self.log()}")
                try:
                    async with http.get(f"{base_url}/readyz") as resp:
                        answered[0] = resp.status
                        return resp.status == 200
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answered[0] = repr(exc)
                    return False

            await wait_until(
                ready,
                timeout,
                f"{base_url}/readyz of healthbus {self.args[0]}",
                seen=lambda: (answered[0], self.log()[-1000:]),
            )

    async def signal(self, sig: int, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> int | None:
        """SIGTERM, wait up to 15 s, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode
