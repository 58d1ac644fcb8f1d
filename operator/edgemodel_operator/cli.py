"""Owns `edgemodel operator`: settings from flags, logging, and handing control to kopf.

Every flag that sets a `Settings` field takes its default from the dataclass (`_DEFAULTS`), so a
default is written once (docs/architecture.md, "One convention each").
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Callable

from edgemodel_operator.errors import EXIT_BAD_INPUT
from edgemodel_operator.logs import add_log_format_argument
from edgemodel_operator.settings import Settings

_DEFAULTS = Settings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_scope_arguments(parser)
    _add_image_arguments(parser)
    _add_cluster_arguments(parser)
    _add_prometheus_arguments(parser)
    _add_process_arguments(parser)


def _add_scope_arguments(parser: argparse.ArgumentParser) -> None:
    """Which namespaces are watched, and peering between replicas."""
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
        default=os.environ.get("EDGEMODEL_NAMESPACE", _DEFAULTS.namespace),
        help="where the operator and its artifact store live",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    peering.add_argument(
        "--peering", metavar="NAME", help="kopf peering object: replicas elect one active"
    )
    parser.add_argument(
        "--peering-priority",
        type=int,
        default=None,
        metavar="N",
        help="this replica's peering priority; the highest is active (default: random)",
    )


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The images and the artifact store the operator deploys, and how pods pull images."""
    parser.add_argument("--runtime-image", default=_DEFAULTS.runtime_image)
    parser.add_argument("--triton-image", default=_DEFAULTS.triton_image)
    parser.add_argument(
        "--no-artifact-store",
        action="store_true",
        help="do not create the in-cluster artifact store (the Helm chart installs it)",
    )
    parser.add_argument("--artifact-service", default=_DEFAULTS.artifact_service)
    parser.add_argument(
        "--artifact-port",
        type=int,
        default=_DEFAULTS.artifact_port,
        help="port of the artifact store's Service (and of its server when the operator runs it)",
    )
    parser.add_argument(
        "--image-pull-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="a Secret of the operator's namespace that every pod the operator creates pulls "
        "with; copied into each namespace it deploys into (repeatable)",
    )
    parser.add_argument(
        "--image-pull-policy",
        choices=("Always", "IfNotPresent", "Never"),
        default=_DEFAULTS.image_pull_policy,
        help="imagePullPolicy of every container the operator creates (default: Kubernetes')",
    )
    parser.add_argument(
        "--allow-gpu-provider-fallback",
        action="store_true",
        help="let GPU targets serve from the CPU when CUDA does not work (default: the server "
        "exits and the EdgeModel says so; the sandbox's simulated GPU nodes need this)",
    )


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Where artifacts, node caches and in-cluster Services are reached."""
    parser.add_argument(
        "--artifact-url",
        default=_DEFAULTS.artifact_lookup_url,
        metavar="URL",
        help="where the operator looks artifacts up (default: the artifact Service); "
        "pods still fetch through the Service",
    )
    parser.add_argument(
        "--node-cache-path",
        default=_DEFAULTS.node_cache_path,
        help="hostPath of the node-local artifact cache; empty: an emptyDir",
    )
    parser.add_argument(
        "--resolve-services-via-endpoints",
        action="store_true",
        help="reach in-cluster Services through their EndpointSlices (operator outside the "
        "cluster network, as in the sandbox)",
    )


def _add_prometheus_arguments(parser: argparse.ArgumentParser) -> None:
    """The Prometheus the SLO loop queries and which ones annotations may name."""
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get("EDGEMODEL_PROMETHEUS_URL", _DEFAULTS.prometheus_url),
    )
    # The chart mounts the token and CA and names their paths in these variables.
    parser.add_argument(
        "--prometheus-token-file",
        default=os.environ.get("EDGEMODEL_PROMETHEUS_TOKEN_FILE", _DEFAULTS.prometheus_token_file),
        help="bearer token for --prometheus-url only, re-read on every query",
    )
    parser.add_argument(
        "--prometheus-ca-file",
        default=os.environ.get("EDGEMODEL_PROMETHEUS_CA_FILE", _DEFAULTS.prometheus_ca_file),
        help="CA bundle for an https --prometheus-url",
    )
    parser.add_argument("--prometheus-insecure", action="store_true", help="skip TLS verification")
    parser.add_argument(
        "--prometheus-allowed-url",
        action="append",
        default=[],
        metavar="URL",
        help="a Prometheus the edgemodel.dev/prometheus-url annotation may name; it never gets "
        "the token or CA of --prometheus-url (repeatable; none: the annotation is refused)",
    )


def _add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """Node paths, the metrics server, concurrency, liveness and logging."""
    parser.add_argument(
        "--host-path-allow",
        action="append",
        default=[],
        metavar="DIR",
        help="a node directory file:// model and data sources may be mounted from, read only "
        "(repeatable; none: file:// sources are refused in the cluster)",
    )
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
    add_log_format_argument(parser)


def peering_priority(given: int | None, draw: Callable[[int], int] = secrets.randbelow) -> int:
    """This replica's kopf peering priority: `given`, else a random one in [1, 2**31).

    kopf pauses every replica when the highest priority is shared, and its default is 0 for
    all, so replicas left at the default never elect one (found with the chart's replicas=2 on
    a real node). With a random priority each, the highest is active and the others stand by
    until its keep-alive lapses. See docs/architecture.md, "Operator replicas"."""
    return given if given is not None else draw(2**31 - 1) + 1


def settings_from(args: argparse.Namespace) -> Settings:
    """The operator's settings from its parsed flags (ValueError names a bad value)."""
    return Settings(
        runtime_image=args.runtime_image,
        triton_image=args.triton_image,
        namespace=args.operator_namespace,
        artifact_service=args.artifact_service,
        artifact_port=args.artifact_port,
        image_pull_secrets=tuple(args.image_pull_secret),
        image_pull_policy=args.image_pull_policy,
        strict_gpu_providers=not args.allow_gpu_provider_fallback,
        manage_artifact_store=not args.no_artifact_store,
        artifact_lookup_url=args.artifact_url,
        node_cache_path=args.node_cache_path,
        prometheus_url=args.prometheus_url,
        prometheus_token_file=args.prometheus_token_file,
        prometheus_ca_file=args.prometheus_ca_file,
        prometheus_insecure=args.prometheus_insecure,
        prometheus_allowed_urls=tuple(args.prometheus_allowed_url),
        host_path_allowlist=tuple(args.host_path_allow),
    )


def run(args: argparse.Namespace) -> int:
    import kopf

    from edgemodel_operator import handlers, logs

    logs.configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    # kopf logs every handler's success at INFO: one line per watch event is noise here.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"edgemodel operator: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
        priority=peering_priority(args.peering_priority) if args.peering else None,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0
