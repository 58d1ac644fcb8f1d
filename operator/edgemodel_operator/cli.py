"""Owns `edgemodel operator`: settings from flags, logging, and handing control to kopf."""

from __future__ import annotations

import argparse
import logging
import os

from edgemodel_operator.settings import RUNTIME_IMAGE, TRITON_IMAGE, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces",
        action="store_true",
        default=True,
        help="watch EdgeModels in every namespace (default)",
    )
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch only these namespaces (repeatable)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=os.environ.get("EDGEMODEL_NAMESPACE", "edgemodel-system"),
        help="where the operator and its artifact store live",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    peering.add_argument(
        "--peering", metavar="NAME", help="kopf peering object: replicas elect one active"
    )
    parser.add_argument("--runtime-image", default=RUNTIME_IMAGE)
    parser.add_argument("--triton-image", default=TRITON_IMAGE)
    parser.add_argument(
        "--no-artifact-store",
        action="store_true",
        help="do not create the in-cluster artifact store (the Helm chart installs it)",
    )
    parser.add_argument("--artifact-service", default="edgemodel-artifacts")
    parser.add_argument(
        "--artifact-url",
        default="",
        metavar="URL",
        help="where the operator looks artifacts up (default: the artifact Service); "
        "pods still fetch through the Service",
    )
    parser.add_argument(
        "--node-cache-path",
        default="/var/lib/edgemodel/cache",
        help="hostPath of the node-local artifact cache; empty: an emptyDir",
    )
    parser.add_argument(
        "--resolve-services-via-endpoints",
        action="store_true",
        help="reach in-cluster Services through their EndpointSlices (operator outside the "
        "cluster network, as in the sandbox)",
    )
    parser.add_argument("--prometheus-url", default=os.environ.get("EDGEMODEL_PROMETHEUS_URL", ""))
    parser.add_argument("--prometheus-token-file", default="", help="bearer token for Prometheus")
    parser.add_argument(
        "--prometheus-ca-file", default="", help="CA bundle for an https Prometheus"
    )
    parser.add_argument("--prometheus-insecure", action="store_true", help="skip TLS verification")
    parser.add_argument(
        "--listen-address",
        default="0.0.0.0",
        help="address of the metrics server (the pod IP, where pods share a network)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="serve the operator's metrics here (0: off)"
    )
    parser.add_argument("--workers", type=int, default=8, help="reconciles running at once")
    parser.add_argument(
        "--liveness", metavar="URL", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument("--verbose", "-v", action="store_true")


def run(args: argparse.Namespace) -> int:
    import kopf

    from edgemodel_operator import handlers, logs

    logs.configure(args.verbose)
    # kopf logs every handler's success at INFO: one line per watch event is noise here.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = Settings(
        runtime_image=args.runtime_image,
        triton_image=args.triton_image,
        namespace=args.operator_namespace,
        artifact_service=args.artifact_service,
        manage_artifact_store=not args.no_artifact_store,
        artifact_lookup_url=args.artifact_url,
        node_cache_path=args.node_cache_path,
        prometheus_url=args.prometheus_url,
        prometheus_token_file=args.prometheus_token_file,
        prometheus_ca_file=args.prometheus_ca_file,
        prometheus_insecure=args.prometheus_insecure,
    )
    memo = kopf.Memo(
        runtime=handlers.Runtime(
            settings=settings,
            resolve_services=args.resolve_services_via_endpoints,
            worker_count=args.workers,
            metrics_port=args.metrics_port,
            listen_address=args.listen_address,
        ),
    )
    namespaces = args.namespace
    kopf.run(
        standalone=args.standalone or not args.peering,
        peering_name=args.peering,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0
