"""Owns the `edgemodel` console script: argument parsing and dispatch to each subcommand.

Subcommand modules are imported lazily so `edgemodel serve` in the runtime image does not
pay for the operator's imports, and `edgemodel --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Protocol


class _Subcommand(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _compress() -> _Subcommand:
    from edgemodel_runtime import compress_cli

    return compress_cli


def _serve() -> _Subcommand:
    from edgemodel_runtime import serve_cli

    return serve_cli


def _artifact_server() -> _Subcommand:
    from edgemodel_runtime import artifact_server_cli

    return artifact_server_cli


def _publish() -> _Subcommand:
    from edgemodel_runtime import publish_cli

    return publish_cli


def _fetch() -> _Subcommand:
    from edgemodel_runtime import fetch_cli

    return fetch_cli


def _prepare_cache() -> _Subcommand:
    from edgemodel_runtime import prepare_cache_cli

    return prepare_cache_cli


def _operator() -> _Subcommand:
    from edgemodel_operator import cli

    return cli


def _status() -> _Subcommand:
    from edgemodel_operator import status_cli

    return status_cli


def _sandbox() -> _Subcommand:
    from edgemodel_sandbox import cli

    return cli


SUBCOMMANDS: dict[str, tuple[str, Callable[[], _Subcommand]]] = {
    "compress": ("compress an ONNX model into a verified, content-addressed artifact", _compress),
    "serve": ("serve a model over the KServe v2 / Triton protocol (HTTP + gRPC)", _serve),
    "artifact-server": ("content-addressed artifact store over HTTP", _artifact_server),
    "publish": ("upload a compression output to the artifact server", _publish),
    "fetch": ("fetch an artifact by sha256 into the node cache and lay it out", _fetch),
    "prepare-cache": ("hand the node cache folder to the pods' user (init step)", _prepare_cache),
    "operator": ("run the EdgeModel operator against the current kubeconfig", _operator),
    "status": ("show an EdgeModel's status per target (replicas, p95 vs SLO, scaling)", _status),
    "sandbox": ("local control plane with simulated K3s edge nodes", _sandbox),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="edgemodel", description="EdgeModel: ML models on edge Kubernetes fleets"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _loader) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"edgemodel: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    help_text, loader = SUBCOMMANDS[name]
    try:
        module = loader()
    except ImportError as exc:  # e.g. the runtime image without the operator's extras
        print(f"edgemodel {name}: not available in this installation ({exc})", file=sys.stderr)
        return 2
    sub_parser = argparse.ArgumentParser(prog=f"edgemodel {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return module.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
