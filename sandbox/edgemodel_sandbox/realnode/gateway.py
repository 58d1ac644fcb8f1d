"""Owns the host-side services on the real node's bridge gateway (10.240.0.1), one process:

- cluster DNS on :53/udp, the kubelet's `clusterDNS`: `<svc>.<ns>.svc[.cluster.local]` answers
  the Service's ClusterIP (headless: its ready endpoints), from the API server; other names
  under the cluster domain are NXDOMAIN, names outside it REFUSED (nothing here reaches the
  internet). A small responder of the sandbox's own instead of CoreDNS: the pods need only
  Service names, and CoreDNS would be another multi-minute Go build and an 80 MB binary
  (docs/architecture.md, "A real node").
- the API server on :6443, forwarded to its loopback address: the endpoint of the `kubernetes`
  Service, so pods reach 10.96.0.1:443 through kube-proxy. The API server itself stays bound
  to 127.0.0.1; only the bridge, which lives on this machine, gets the forward.

Run as `python -m edgemodel_sandbox.realnode.gateway --kubeconfig K --api 127.0.0.1:PORT`.
The packet coding is pure and unit-tested.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgemodel_sandbox.errors import EdgeModelSandboxError, FailureKind
from edgemodel_sandbox.realnode.plan import API_PORT, CLUSTER_DOMAIN, DNS_PORT, GATEWAY_IP
from edgemodel_sandbox.runner.apiproxy import pump

log = logging.getLogger("edgemodel.realnode.gateway")

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
TTL = 5


class DNSFormatError(EdgeModelSandboxError, ValueError):
    """A query that is not a well-formed DNS question."""

    failure = FailureKind.INVALID_INPUT


@dataclass(frozen=True)
class Question:
    """The first question of a DNS query."""

    ident: int
    flags: int
    name: str
    qtype: int
    qclass: int
    end: int  # offset just past the question


def parse_query(packet: bytes) -> Question:
    if len(packet) < 12:
        raise DNSFormatError("shorter than a DNS header")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount < 1:
        raise DNSFormatError("no question")
    labels = []
    offset = 12
    while True:
        if offset >= len(packet):
            raise DNSFormatError("name runs past the packet")
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise DNSFormatError("compressed name in a question")
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(packet):
        raise DNSFormatError("question without type and class")
    qtype, qclass = struct.unpack("!HH", packet[offset : offset + 4])
    return Question(ident, flags, ".".join(labels).lower(), qtype, qclass, offset + 4)


def response(packet: bytes, question: Question, rcode: int, addresses: list[str]) -> bytes:
    """The answer to `question` (A records for `addresses`), echoing its question section."""
    answers = [a for a in addresses if question.qtype == TYPE_A]
    flags = 0x8000 | (question.flags & 0x7900) | 0x0400 | rcode  # QR, opcode+RD, AA
    header = struct.pack("!HHHHHH", question.ident, flags, 1, len(answers), 0, 0)
    body = packet[12 : question.end]
    for address in answers:
        rdata = ipaddress.IPv4Address(address).packed
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, len(rdata)) + rdata
    return header + body


@dataclass(frozen=True)
class ServiceName:
    """`<name>.<namespace>.svc[.cluster.local]`."""

    name: str
    namespace: str


def service_of(qname: str, domain: str = CLUSTER_DOMAIN) -> ServiceName | bool | None:
    """The Service a name asks for; False: a cluster name that is no Service (NXDOMAIN);
    None: not a cluster name at all."""
    name = qname.rstrip(".").lower()
    if name == domain:
        return False
    if name.endswith("." + domain):
        name = name[: -len(domain) - 1]
    elif not name.endswith(".svc"):
        return None
    parts = name.split(".")
    if len(parts) == 3 and parts[2] == "svc" and all(parts[:2]):
        return ServiceName(parts[0], parts[1])
    return False


def answer(packet: bytes, lookup: Callable[[ServiceName], list[str] | None]) -> bytes | None:
    """The reply to one query packet; `lookup`: a Service's addresses (None: no such Service)."""
    try:
        question = parse_query(packet)
    except DNSFormatError:
        return None
    target = service_of(question.name)
    if target is None:
        return response(packet, question, REFUSED, [])
    if target is False or question.qclass != CLASS_IN:
        return response(packet, question, NXDOMAIN, [])
    assert isinstance(target, ServiceName)
    try:
        addresses = lookup(target)
    except Exception as exc:  # the API server is away: say so, do not invent an answer
        log.warning("lookup of %s failed: %s", question.name, exc)
        return response(packet, question, SERVFAIL, [])
    if addresses is None:
        return response(packet, question, NXDOMAIN, [])
    return response(packet, question, NOERROR, addresses)


class Services:
    """Service addresses from the API server, cached briefly and re-read on a miss."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=kubeconfig)
        self._core = client.CoreV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], str] = {}
        self._read_at = 0.0

    def _refresh(self, max_age: float) -> None:
        if time.monotonic() - self._read_at < max_age:
            return
        items = self._core.list_service_for_all_namespaces().items
        self._services = {
            (s.metadata.namespace, s.metadata.name): s.spec.cluster_ip or "None" for s in items
        }
        self._read_at = time.monotonic()

    def lookup(self, target: ServiceName) -> list[str] | None:
        key = (target.namespace, target.name)
        with self._lock:
            self._refresh(max_age=5.0)
            if key not in self._services:
                self._refresh(max_age=0.3)
            cluster_ip = self._services.get(key)
        if cluster_ip is None:
            return None
        if cluster_ip != "None":
            return [cluster_ip]
        slices = self._discovery.list_namespaced_endpoint_slice(
            target.namespace, label_selector=f"kubernetes.io/service-name={target.name}"
        ).items
        return [
            address
            for item in slices
            for endpoint in item.endpoints or []
            if endpoint.conditions is None or endpoint.conditions.ready is not False
            for address in endpoint.addresses
        ]


def serve_dns(sock: socket.socket, lookup: Callable[[ServiceName], list[str] | None]) -> None:
    def reply(packet: bytes, peer: Any) -> None:
        data = answer(packet, lookup)
        if data is not None:
            with contextlib.suppress(OSError):
                sock.sendto(data, peer)

    while True:
        try:
            packet, peer = sock.recvfrom(4096)
        except OSError:
            return
        threading.Thread(target=reply, args=(packet, peer), daemon=True).start()


def serve_forward(listener: socket.socket, upstream: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(upstream, timeout=5)
        except OSError as exc:
            log.warning("API server unreachable: %s", exc)
            client.close()
            continue
        server.settimeout(None)
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgemodel_sandbox.realnode.gateway")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--api", required=True, help="the API server's HOST:PORT on loopback")
    parser.add_argument("--listen", default=GATEWAY_IP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = args.api.rsplit(":", 1)
    services = Services(args.kubeconfig)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind((args.listen, DNS_PORT))
    api = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    api.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    api.bind((args.listen, API_PORT))
    api.listen(128)
    threading.Thread(target=serve_dns, args=(dns, services.lookup), daemon=True).start()
    threading.Thread(target=serve_forward, args=(api, (host, int(port))), daemon=True).start()
    log.info(
        "cluster DNS on %s:%d, API server on %s:%d", args.listen, DNS_PORT, args.listen, API_PORT
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
