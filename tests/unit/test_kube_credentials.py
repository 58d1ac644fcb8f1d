"""How the operator's API client authenticates: the credentials kopf found, inline or in files.

A kubeconfig may carry the client certificate inline (`client-certificate-data`); kopf passes it
on as data, and the client must present it, not connect without it.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgemodel_operator.kube import Credentials
from edgemodel_sandbox import pki


def _kopf_info(**fields: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "server": "https://127.0.0.1:6443",
        "token": None,
        "ca_path": None,
        "ca_data": None,
        "certificate_path": None,
        "private_key_path": None,
        "certificate_data": None,
        "private_key_data": None,
        "insecure": False,
    }
    return SimpleNamespace(**(base | fields))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[pki.PKI, pki.Pair]:
    authority = pki.create(tmp_path_factory.mktemp("pki"))
    return authority, pki.issue(authority, "operator", "edgemodel-operator")


def test_an_inline_client_certificate_from_kopf_is_presented(
    pair: tuple[pki.PKI, pki.Pair],
) -> None:
    authority, client = pair
    info = _kopf_info(
        ca_data=base64.b64encode(authority.ca_cert.read_bytes()).decode(),
        certificate_data=base64.b64encode(client.cert.read_bytes()).decode(),
        private_key_data=client.key.read_bytes(),  # PEM as it is is accepted too
    )
    credentials = Credentials.from_kopf(info)
    assert credentials.certificate_data and credentials.private_key_data
    context = credentials.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert _peer_name_seen_by_a_server_that_requires_a_certificate(authority, context) == (
        "edgemodel-operator"
    )


def _peer_name_seen_by_a_server_that_requires_a_certificate(
    authority: pki.PKI, client_context: ssl.SSLContext
) -> str:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=authority.ca_cert)
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_cert_chain(authority.server_cert, authority.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            peer: dict[str, Any] = dict(tls.getpeercert() or {})
            names = [value for rdn in peer["subject"] for key, value in rdn if key == "commonName"]
            seen.append(str(names[0]))
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=10)
        listener.close()
    return seen[0]


def test_a_key_that_does_not_match_the_certificate_is_refused(
    pair: tuple[pki.PKI, pki.Pair], tmp_path: Path
) -> None:
    authority, client = pair
    other = pki.issue(authority, "other", "someone-else")
    credentials = Credentials(
        server="https://127.0.0.1:6443",
        certificate_data=client.cert.read_bytes(),
        private_key_data=other.key.read_bytes(),
    )
    with pytest.raises(ssl.SSLError):
        credentials.ssl_context()


def test_files_are_used_when_no_inline_data_is_given(pair: tuple[pki.PKI, pki.Pair]) -> None:
    _, client = pair
    info = _kopf_info(certificate_path=str(client.cert), private_key_path=str(client.key))
    credentials = Credentials.from_kopf(info)
    assert credentials.certificate_data is None
    assert isinstance(credentials.ssl_context(), ssl.SSLContext)
