"""Credentials never leave a component (docs/reliability.md)."""

from __future__ import annotations

import pytest

from healthbus.protocol import MASK, redact, redact_url, url_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql+asyncpg://app:s3cret@db:5432/app", "postgresql+asyncpg://app:***@db:5432/app"),
        ("nats://user:p%40ss@host:4222", "nats://user:***@host:4222"),
        ("http://example:9200", "http://example:9200"),
        ("redis://user@host", "redis://user@host"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """The password part of a URL is masked; everything else is kept for debugging."""
    assert redact_url(url) == shown


def test_redact_known_secrets_and_key_values() -> None:
    """Known secrets (raw and percent-decoded), URL passwords and password=... are masked."""
    secrets = url_secrets("postgresql://app:p%40ss@db/app")
    assert set(secrets) == {"p%40ss", "p@ss"}
    text = 'auth failed for "app" with p@ss; dsn=postgresql://app:p%40ss@db/app password=hunter2 token: abc'
    out = redact(text, secrets)
    for leaked in ("p@ss", "p%40ss", "hunter2", "abc"):
        assert leaked not in out
    assert out.count(MASK) >= 4


def test_url_without_password_has_no_secrets() -> None:
    """Nothing to hide, nothing hidden."""
    assert url_secrets("redis://127.0.0.1:6379") == []
    assert url_secrets("not a url") == []
