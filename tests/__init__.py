"""healthbus test suite (a package so `tests.harness` is importable from every test)."""
