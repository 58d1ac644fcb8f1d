"""Owns the sandbox's certificates and credentials, made with the openssl command line.

A private CA signs the API server's serving certificate (valid for 127.0.0.1, localhost and
the in-cluster service names); an RSA pair signs service-account tokens; a random bearer
token in `tokens.csv` gives the admin user (group system:masters) its access.

For the real node (edgemodel_sandbox.realnode) the same CA also signs client certificates
(the kubelet as system:node:<name> in system:nodes, kube-proxy as system:kube-proxy, the API
server towards the kubelet) and serving certificates (the kubelet's, the local registry's):
`issue` makes one such pair on demand.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgemodel_sandbox.errors import EdgeModelSandboxError


class PKIError(EdgeModelSandboxError, RuntimeError):
    """openssl failed to make a key or a certificate."""


@dataclass(frozen=True)
class PKI:
    """Paths of the sandbox's credentials."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.directory / "tokens.csv"

    @property
    def admin_token(self) -> str:
        return self.token_file.read_text().split(",", 1)[0]

    def complete(self) -> bool:
        files = (
            self.ca_cert,
            self.server_cert,
            self.server_key,
            self.sa_key,
            self.sa_pub,
            self.token_file,
        )
        return all(path.exists() for path in files)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PKIError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def create(directory: Path) -> PKI:
    """Creates (or keeps, when already complete) the sandbox's credentials in `directory`."""
    pki = PKI(directory)
    if pki.complete():
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=edgemodel-sandbox-ca",
        cwd=directory,
    )
    (directory / "san.cnf").write_text(
        "[ext]\n"
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "3650",
        "-extfile",
        "san.cnf",
        "-extensions",
        "ext",
        cwd=directory,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    token = secrets.token_hex(24)
    (directory / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
    for path in directory.iterdir():
        path.chmod(0o600)
    return pki


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, signed by the sandbox CA."""

    cert: Path
    key: Path


def subject(common_name: str, organizations: Sequence[str] = ()) -> str:
    """An openssl `-subj` string (pure); refuses names that would break its syntax."""
    for part in (common_name, *organizations):
        if not part or any(c in part for c in "/=\n"):
            raise PKIError(f"certificate subject part {part!r}: empty or contains / = or newline")
    return "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"


def extensions(sans: Sequence[str], server: bool, client: bool) -> str:
    """The x509v3 extension section of a leaf certificate (pure). `sans`: IPs and DNS names."""
    if not (server or client):
        raise PKIError("a certificate must be for a server, a client or both")
    names = []
    for san in sans:
        try:
            names.append(f"IP:{ipaddress.ip_address(san)}")
        except ValueError:
            names.append(f"DNS:{san}")
    usages = [u for u, wanted in (("serverAuth", server), ("clientAuth", client)) if wanted]
    lines = ["[ext]"]
    if names:
        lines.append("subjectAltName=" + ",".join(names))
    lines += [
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=" + ",".join(usages),
    ]
    return "\n".join(lines) + "\n"


def issue(
    pki: PKI,
    name: str,
    common_name: str,
    organizations: Sequence[str] = (),
    sans: Sequence[str] = (),
    server: bool = False,
    client: bool = True,
) -> Pair:
    """`name`.crt/.key in the PKI folder, signed by its CA (kept when already there)."""
    pair = Pair(pki.directory / f"{name}.crt", pki.directory / f"{name}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    if not pki.ca_key.exists():
        raise PKIError(f"no CA key in {pki.directory}: create the sandbox's PKI first")
    cnf = pki.directory / f"{name}.cnf"
    cnf.write_text(extensions(sans, server=server, client=client))
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        pair.key.name,
        "-out",
        f"{name}.csr",
        "-subj",
        subject(common_name, organizations),
        cwd=pki.directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        pair.cert.name,
        "-days",
        "3650",
        "-extfile",
        cnf.name,
        "-extensions",
        "ext",
        cwd=pki.directory,
    )
    pair.key.chmod(0o600)
    return pair


def kubelet_client(pki: PKI) -> Pair:
    """The API server's client certificate towards kubelets (system:masters: may proxy logs)."""
    return issue(
        pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"]
    )
