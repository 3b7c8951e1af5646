"""``http``: one HTTP request over an aiohttp session kept between checks.

URL form: ``http(s)://[user:password@]host[:port]/path``. Options:

* ``method`` (default ``GET``), ``expect_status`` (default ``"2xx"``; a number like
  ``204``, a class like ``"3xx"``, or a list ``"200,204"``), ``contains`` (a text the
  body must contain), ``follow_redirects`` (default true);
* ``"header:<Name>" = "value"`` adds a request header (its value is treated as a secret);
* ``tls_ca`` (CA bundle), ``tls_verify`` (default true).

Outcome: pass on an expected status; fail otherwise, with ``status`` in the details and
``error_kind`` ``auth`` for 401/403, ``unhealthy`` for any other status (and a missing
``contains`` text). Details: ``status``, ``content_type``.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from healthbus.probes._base import BaseChecker, CheckResult, driver_missing
from healthbus.probes._classify import classify_aiohttp
from healthbus.protocol import DetailValue, ErrorKind, TargetConfig

try:
    import aiohttp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise driver_missing("http", "aiohttp", "http", exc) from None

#: Read at most this much of a body (for ``contains``); a health page is small.
MAX_BODY = 64 * 1024


def parse_expect_status(spec: str | int) -> list[tuple[int, int]]:
    """``"2xx"``, ``204`` or ``"200,204,3xx"`` → inclusive status ranges; ValueError if bad."""
    ranges: list[tuple[int, int]] = []
    for raw in str(spec).split(","):
        part = raw.strip().lower()
        if len(part) == 3 and part[0].isdigit() and part[1:] == "xx":
            low = int(part[0]) * 100
            ranges.append((low, low + 99))
        elif part.isdigit() and 100 <= int(part) <= 599:
            ranges.append((int(part), int(part)))
        else:
            raise ValueError(f'expect_status: expected a status like 200, a class like "2xx" or a list, got {spec!r}')
    return ranges


class HttpChecker(BaseChecker):
    """An HTTP request whose status (and optionally body) says healthy or not."""

    kind = "http"

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._session: aiohttp.ClientSession | None = None
        self.method = (self.opt_str("method", "GET") or "GET").upper()
        expect = target.options.get("expect_status", "2xx")
        if isinstance(expect, bool | float):
            raise ValueError(f"target {target.name}: options.expect_status must be a status or a class like '2xx'")
        try:
            self.expect = parse_expect_status(expect)
        except ValueError as exc:
            raise ValueError(f"target {target.name}: options.{exc}") from None
        self.contains = self.opt_str("contains")
        self.follow = self.opt_bool("follow_redirects", True)
        self.headers = {
            key.split(":", 1)[1].strip(): str(value)
            for key, value in target.options.items()
            if key.lower().startswith("header:")
        }

    def _make_session(self) -> aiohttp.ClientSession:
        ssl_option: Any = True
        ca = self.opt_str("tls_ca")
        if ca:
            ssl_option = ssl.create_default_context(cafile=ca)
        if not self.opt_bool("tls_verify", True):
            ssl_option = False
        connector = aiohttp.TCPConnector(ssl=ssl_option, limit=2)
        timeout = aiohttp.ClientTimeout(total=float(self.target.timeout))
        return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)

    def _expected(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expect)

    async def _check(self) -> CheckResult:
        if self._session is None:
            self._session = self._make_session()
        async with self._session.request(self.method, self.target.url, allow_redirects=self.follow) as response:
            details: dict[str, DetailValue] = {"status": response.status}
            if response.content_type:
                details["content_type"] = response.content_type
            if not self._expected(response.status):
                kind: ErrorKind = "auth" if response.status in (401, 403) else "unhealthy"
                reason = response.reason or ""
                return self.fail(kind, f"HTTP {response.status} {reason}".strip(), details)
            if self.contains is not None:
                body = await response.content.read(MAX_BODY)
                if self.contains.encode() not in body:
                    return self.fail("unhealthy", f"response body does not contain {self.contains!r}", details)
        return CheckResult(outcome="pass", details=details)

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        return classify_aiohttp(exc)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
