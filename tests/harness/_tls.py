"""Test certificates: a CA of the suite's own, a server certificate and client certificates.

Made with the ``openssl`` command (``require`` skips the test without it, and fails under
``CI=true``). Everything is valid for one day and lives in the test's temporary directory.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness._util import require

__all__ = ["CertAuthority", "make_ca"]


@dataclass(frozen=True)
class CertAuthority:
    """A CA in ``where``: ``ca.crt``, and a ``server`` cert plus one cert per client name."""

    where: Path
    clients: tuple[str, ...] = field(default=())

    @property
    def ca(self) -> Path:
        """The CA certificate (what a peer trusts)."""
        return self.where / "ca.crt"

    @property
    def server_cert(self) -> Path:
        """The server certificate, for ``127.0.0.1`` and ``localhost``."""
        return self.where / "server.crt"

    @property
    def server_key(self) -> Path:
        """The server's private key."""
        return self.where / "server.key"

    def cert(self, name: str) -> Path:
        """Client ``name``'s certificate (CN=name)."""
        return self.where / f"{name}.crt"

    def key(self, name: str) -> Path:
        """Client ``name``'s private key."""
        return self.where / f"{name}.key"


def make_ca(where: Path, clients: Iterable[str] = (), *, name: str = "healthbus-test-ca") -> CertAuthority:
    """A new CA named ``name`` in ``where`` (created), with a server cert and client certs."""
    openssl = require("openssl", "install openssl to make test certificates")
    where.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=where, check=True, capture_output=True)

    # EC keys: an RSA key costs the busy test machine a second or more each.
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", f"/CN={name}")  # fmt: skip

    def issue(stem: str, subject: str, extensions: str) -> None:
        run("req", *key, "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", subject)
        (where / f"{stem}.ext").write_text(extensions)
        run("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{stem}.crt", "-days", "1", "-extfile", f"{stem}.ext")  # fmt: skip

    issue("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    names = tuple(clients)
    for client in names:
        issue(client, f"/CN={client}", "extendedKeyUsage=clientAuth\n")
    return CertAuthority(where, names)
