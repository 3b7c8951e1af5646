"""Registers the real-server harness fixtures (tests/harness/fixtures.py) for every test.

It also turns gRPC's fork support off for the test process, before anything imports grpc
(pymilvus does, for the Milvus tests). Every server the harness starts is a child forked
with a ``preexec_fn`` (to set its parent-death signal), and with fork support on, gRPC's
at-fork hook starts a poller thread in that child, which aborts the child (SIGABRT,
"epoll_wait error: Bad file descriptor") when subprocess closes the inherited descriptors
before ``exec``: a nats-server that randomly "exits with code -6" under load.

``--repeat N`` runs every selected test N times (``test_x[run-3-of-20]``), each run with
fresh fixtures and servers, for hunting flakes (docs/testing.md).
"""

import os

import pytest
from hypothesis import settings

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# Hypothesis profiles (docs/testing.md): "ci" (the default) keeps the suite's time;
# HEALTHBUS_HYPOTHESIS_PROFILE=nightly runs many more and longer examples of every property
# test that does not fix its own size (the takeover state machine among them).
settings.register_profile("ci", max_examples=100, stateful_step_count=40)
settings.register_profile("nightly", max_examples=2000, stateful_step_count=80)
settings.load_profile(os.environ.get("HEALTHBUS_HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = ["tests.harness.fixtures"]


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise pytest.UsageError(f"--repeat takes a whole number of runs, at least 1; got {text!r}")
    return n


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--repeat",
        type=_positive,
        default=1,
        metavar="N",
        help="run every selected test N times, each with fresh fixtures (to hunt flakes; -x stops at a failure)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    runs: int = metafunc.config.getoption("repeat")
    if runs > 1:
        metafunc.fixturenames.append("_repeat_run")
        metafunc.parametrize("_repeat_run", range(1, runs + 1), ids=lambda i: f"run-{i}-of-{runs}")
