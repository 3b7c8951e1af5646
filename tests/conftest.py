"""Registers the real-server harness fixtures (tests/harness/fixtures.py) for every test."""

pytest_plugins = ["tests.harness.fixtures"]
