"""Keeping credentials out of messages, logs and errors.

Every text that leaves a component (a ProbeResult's ``error``, a log line, an exception
message, ``healthbus status``) passes through :func:`redact` with the secrets it might
contain. URLs are shown with their password replaced by ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote, urlsplit

MASK: Final = "***"

# scheme://user:password@host  (password may contain anything but '@' and '/')
_URL_PASSWORD_RE: Final = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]*)@")
# key=value secrets in DSNs and driver messages: password=..., token=...
_KV_SECRET_RE: Final = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|token|secret|api_key|apikey)\s*[=:]\s*)(?P<val>'[^']*'|\"[^\"]*\"|[^\s,;&]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; anything else unchanged."""
    return _URL_PASSWORD_RE.sub(lambda m: f"{m['head']}{MASK}@" if m["pw"] else m[0], url)


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (password, raw and percent-decoded), for :func:`redact`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    if not password:
        return []
    raw = password
    decoded = unquote(password)
    return sorted({raw, decoded}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret, URL password and ``password=...`` masked."""
    for secret in secrets:
        if secret and len(secret) >= 1:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD_RE.sub(lambda m: f"{m['head']}{MASK}@" if m["pw"] else m[0], text)
    return _KV_SECRET_RE.sub(lambda m: f"{m['key']}{MASK}", text)
