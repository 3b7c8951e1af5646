"""``tcp``: open a TCP connection and close it.

URL form: ``tcp://host:port``. Nothing is kept between checks: the connect is the check.
Outcome: pass when the connection is accepted; fail otherwise (refused, dns, timeout).
Details: ``peer`` (the address connected to).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from healthbus.probes._base import BaseChecker, CheckResult
from healthbus.protocol import DetailValue, TargetConfig


class TcpChecker(BaseChecker):
    """A TCP connect to ``host:port``."""

    kind = "tcp"

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        parts = urlsplit(target.url)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"target {target.name}: a tcp URL needs a host and a port, like tcp://db.internal:5432")
        self.host: str = parts.hostname
        self.port: int = parts.port

    async def _check(self) -> CheckResult:
        _reader, writer = await asyncio.open_connection(self.host, self.port)
        peer = writer.get_extra_info("peername")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        details: dict[str, DetailValue] = {"peer": f"{peer[0]}:{peer[1]}"} if peer else {}
        return CheckResult(outcome="pass", details=details)
