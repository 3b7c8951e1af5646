"""The public surface of healthbus.coordinator is exactly what __all__ names."""

from __future__ import annotations

import healthbus.coordinator as coordinator


def test_every_public_name_is_exported_and_documented() -> None:
    """Every name in __all__ exists and has a docstring; nothing private leaks."""
    for name in coordinator.__all__:
        value = getattr(coordinator, name)
        assert value.__doc__, name
        assert not name.startswith("_")
    assert sorted(coordinator.__all__) == sorted(set(coordinator.__all__))
    assert "CoordinatorService" in coordinator.__all__
    assert "Decider" in coordinator.__all__
