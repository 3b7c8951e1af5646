"""Registers the real-server harness fixtures (tests/harness/fixtures.py) for every test.

It also turns gRPC's fork support off for the test process, before anything imports grpc
(pymilvus does, for the Milvus tests). Every server the harness starts is a child forked
with a ``preexec_fn`` (to set its parent-death signal), and with fork support on, gRPC's
at-fork hook starts a poller thread in that child, which aborts the child (SIGABRT,
"epoll_wait error: Bad file descriptor") when subprocess closes the inherited descriptors
before ``exec``: a nats-server that randomly "exits with code -6" under load.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins = ["tests.harness.fixtures"]
