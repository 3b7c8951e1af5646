"""healthbus coordinator (being built; see docs/)."""

__all__: list[str] = []
