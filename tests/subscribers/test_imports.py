"""The subscriber distribution stays light: importing it pulls in no adapter library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import healthbus.subscribers

# (aiohttp is not listed: nats-py itself imports it, when installed, for its websocket transport.)
HEAVY = (
    "redis",
    "sqlalchemy",
    "faststream",
    "asyncpg",
    "pymilvus",
    "elasticsearch",
    "milvus_lite",
    "fastapi",
    "starlette",
    "flask",
    "werkzeug",
    "django",
    "psycopg",
    "celery",
    "kombu",
)


def test_public_surface() -> None:
    """__all__ names exist and the contract names are exported."""
    for name in healthbus.subscribers.__all__:
        assert hasattr(healthbus.subscribers, name), name
    for name in ("HealthClient", "TargetState", "DependencyUnavailable", "HealthView"):
        assert name in healthbus.subscribers.__all__


def test_import_pulls_in_no_adapter_library() -> None:
    """`import healthbus.subscribers` (and its testing module) imports none of the optional libraries."""
    code = textwrap.dedent(
        f"""
        import sys
        import healthbus.subscribers
        import healthbus.subscribers.testing
        heavy = [m for m in sys.modules if m.split(".")[0] in {HEAVY!r}]
        print(",".join(sorted(heavy)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("redis", "redis", "redis"),
        ("sqlalchemy", "sqlalchemy", "sqlalchemy"),
        ("faststream", "faststream", "faststream"),
        ("fastapi", "starlette", "fastapi"),
        ("flask", "flask", "flask"),
        ("django", "django", "django"),
        ("celery", "celery", "celery"),
    ],
)
def test_missing_library_gives_a_friendly_import_error(module: str, library: str, extra: str) -> None:
    """Without its library installed, importing an adapter names the extra to install."""
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == {library!r} or name.startswith({library + "."!r}):
                    raise ImportError("No module named {library!r}")
        sys.meta_path.insert(0, Block())
        try:
            import healthbus.subscribers.{module}
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert f"pip install 'healthbus-subscribers[{extra}]'" in out.stdout
