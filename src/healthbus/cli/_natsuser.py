"""``healthbus nats-user probe ID``: the nats-server user block of one probe worker.

Each probe worker gets its own NATS user, allowed to publish only its own subjects:
ProbeResults on ``<prefix>.probe.*.<token>`` and heartbeats on
``<prefix>.worker.heartbeat.<token>`` (``<token>`` is the worker id as a subject token),
plus the direct gets that reading the state stream needs (it follows ``<prefix>.state.>``
over a plain subscription; the consumer API is denied, as to every role but the coordinator). The
coordinator drops a result whose ``probe`` does not match its subject, so the credential
speaks only for its own vantage point. It may read confirmation requests
(``<prefix>.confirm.*``: check a target now). The password is hashed with bcrypt (nats-server
accepts the hash in place of the password); the plain password never leaves the
environment variable it came from.
"""

from __future__ import annotations

import argparse
import os
import sys

from healthbus.cli._common import EXIT_OK, EXIT_USAGE
from healthbus.protocol import DEFAULT_PREFIX, StreamSettings, Subjects, probe_token

#: bcrypt cost: nats-server checks a hash once per connection, not per message.
BCRYPT_COST = 11


def state_read_permissions(stream: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The JetStream API subjects a role needs to read the state stream: direct gets, and
    one message get to the leader per read.

    No consumer API: a reader follows ``<prefix>.state.>`` over a plain subscription and
    reads current states and history with batched direct gets (:func:`consumer_deny`).
    """
    return [
        "$JS.API.INFO",
        # Answered by the stream's leader: where a complete read must reach (a direct get
        # may come from a replica still behind it).
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.{prefix}.state.>",
    ]


def consumer_deny() -> list[str]:
    """What every role but the coordinator is denied: the consumer API and push flow control."""
    return ["$JS.API.CONSUMER.>", "$JS.FC.>"]


def probe_user_block(worker_id: str, password: str, *, prefix: str = DEFAULT_PREFIX, indent: str = "      ") -> str:
    """The ``users`` entry of probe worker ``worker_id``; ``password`` is written as given
    (a bcrypt hash, or a ``$VARIABLE`` nats-server takes from its environment)."""
    subjects = Subjects(prefix)
    token = probe_token(worker_id)
    stream = StreamSettings.for_prefix(prefix).name
    publish = [
        f"{prefix}.probe.*.{token}",
        subjects.worker("heartbeat", token),
        *state_read_permissions(stream, prefix),
    ]
    value = password if password.startswith("$") and not password.startswith("$2") else f'"{password}"'
    lines = [
        "{",
        f"  # probe worker {worker_id!r}: run it with --id {worker_id} --user {token}",
        f'  user: "{token}"',
        f"  password: {value}",
        "  permissions: {",
        "    publish: {",
        "      allow: [" + ", ".join(f'"{s}"' for s in publish) + "]",
        "      deny: [" + ", ".join(f'"{s}"' for s in consumer_deny()) + "]",
        "    }",
        "    subscribe: {",
        "      allow: ["
        + ", ".join(
            f'"{s}"'
            for s in (
                f"{prefix}.state.>",
                subjects.worker("heartbeat", "*"),
                subjects.worker("reload"),
                f"_INBOX.{token}.>",
                subjects.confirm_all,
            )
        )
        + "]",
        "    }",
        "  }",
        "}",
    ]
    return "\n".join(indent + line for line in lines) + "\n"


async def cmd_nats_user(args: argparse.Namespace) -> int:
    """Print the user block; the password comes from $HEALTHBUS_NATS_PASSWORD (or --password)."""
    import bcrypt

    password = args.password or os.environ.get("HEALTHBUS_NATS_PASSWORD")
    if not password:
        print(
            "healthbus nats-user: set HEALTHBUS_NATS_PASSWORD to the new worker's password "
            "(e.g. HEALTHBUS_NATS_PASSWORD=$(openssl rand -base64 24)); only its bcrypt hash is printed",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if probe_token(args.worker_id) != args.worker_id:
        print(
            f"healthbus nats-user: worker id {args.worker_id!r} is not a subject token; use only "
            f"A-Z a-z 0-9 _ - (for example {probe_token(args.worker_id)!r})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    sys.stdout.write(probe_user_block(args.worker_id, hashed, prefix=args.prefix or DEFAULT_PREFIX))
    return EXIT_OK
