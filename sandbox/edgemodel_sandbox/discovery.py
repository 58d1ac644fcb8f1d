"""Owns Prometheus target discovery for the sandbox: an HTTP SD endpoint fed by the API server.

Debian's Prometheus (2.42+ds) is built without the kubernetes_sd_configs mechanism (its Go
client is not packaged), so this bridge plays that part: it lists pods from the sandbox API
server and answers Prometheus' `http_sd_configs` with every Running pod annotated
`prometheus.io/scrape: "true"`, using the same `__meta_kubernetes_pod_*` labels that
kubernetes_sd would set, so the scrape config reads exactly as it would on a real cluster.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CACHE_SECONDS = 1.0


def targets_from_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus HTTP SD target groups for the scrapeable, Running pods among `pods`."""
    groups = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        status = pod.get("status") or {}
        ip = status.get("podIP")
        port = annotations.get("prometheus.io/port")
        if annotations.get("prometheus.io/scrape") != "true" or not ip or not port:
            continue
        if status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        labels = {
            "__meta_kubernetes_namespace": meta.get("namespace", ""),
            "__meta_kubernetes_pod_name": meta.get("name", ""),
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_node_name": (pod.get("spec") or {}).get("nodeName", ""),
            "__metrics_path__": annotations.get("prometheus.io/path", "/metrics"),
        }
        for key, value in (meta.get("labels") or {}).items():
            labels[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = value
        for key, value in annotations.items():
            labels[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = value
        groups.append({"targets": [f"{ip}:{port}"], "labels": labels})
    return groups


def _sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


class _Source:
    """Lists pods at most once per CACHE_SECONDS, whatever the number of scrapers."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        self._api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        self._lock = threading.Lock()
        self._at = 0.0
        self._body = b"[]"

    def body(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at > CACHE_SECONDS:
                pods = self._api.api_client.sanitize_for_serialization(
                    self._api.list_pod_for_all_namespaces().items
                )
                self._body = json.dumps(targets_from_pods(pods)).encode()
                self._at = time.monotonic()
            return self._body


def serve(kubeconfig: str, port: int) -> None:
    source = _Source(kubeconfig)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                body = source.body()
            except Exception as exc:  # the API server may be restarting: say so, stay up
                self.send_error(503, f"listing pods failed: {exc}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.kubeconfig, args.port)


if __name__ == "__main__":
    main()
