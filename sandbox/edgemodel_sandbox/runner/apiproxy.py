"""Owns the `kubernetes` Service inside the pod network: 10.96.0.1:443 forwarded to the
sandbox's API server, as kube-proxy does on every node, so in-cluster clients (the operator
installed by the Helm chart, kopf, the kubernetes client) find the API where a real cluster
puts it. The server's certificate carries 10.96.0.1 (see pki.py), so TLS verifies end to end.

The listening socket is made inside the pod network namespace by a thread that joins the
namespace, binds, and returns to the host's; the socket stays in the pod namespace while the
forwarding runs in the host's, next to the API server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import urllib.parse

from edgemodel_sandbox.runner import network

log = logging.getLogger("edgemodel.runner.apiproxy")

SERVICE_IP = "10.96.0.1"
SERVICE_PORT = 443


def upstream_of(server: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(server)
    return parsed.hostname or "127.0.0.1", parsed.port or 443


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies one direction of a forwarded TCP connection until either side closes."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, upstream: tuple[str, int], stop: threading.Event) -> None:
    listener.settimeout(1.0)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        try:
            server = socket.create_connection(upstream, timeout=5)
        except OSError as exc:
            log.warning("API server unreachable: %s", exc)
            client.close()
            continue
        server.settimeout(None)
        client.settimeout(None)
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()
    listener.close()


def start(netns_path: str, server: str, stop: threading.Event) -> bool:
    """Listens on SERVICE_IP:SERVICE_PORT inside `netns_path`; False when that failed."""
    ready = threading.Event()
    listener: list[socket.socket] = []

    def bind_in_namespace() -> None:
        host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            network.enter(netns_path)  # this thread only
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((SERVICE_IP, SERVICE_PORT))
            sock.listen(128)
            listener.append(sock)
        except OSError as exc:
            log.warning("no kubernetes Service in the pod network: %s", exc)
        finally:
            network.enter_fd(host_ns)
            os.close(host_ns)
            ready.set()
        if listener:
            _serve(listener[0], upstream_of(server), stop)

    threading.Thread(target=bind_in_namespace, name="kubernetes-service", daemon=True).start()
    ready.wait(10)
    return bool(listener)
