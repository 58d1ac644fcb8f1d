"""Owns `edgemodel sandbox up|down|status|env|demo`: the sandbox's command line."""

from __future__ import annotations

import argparse
import json
import sys

from edgemodel_sandbox import fleet
from edgemodel_sandbox.cluster import Sandbox, SandboxError
from edgemodel_sandbox.tools import Tools, ToolsError, tools_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "env", "demo"])
    parser.add_argument(
        "--nodes",
        type=int,
        default=len(fleet.DEFAULT_FLEET),
        help="simulated edge nodes (at least the default six: 2 arm64, 2 amd64, 2 GPU)",
    )
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    parser.add_argument(
        "--kwok-pods",
        action="store_true",
        help="kwok marks every pod Running/Ready, EdgeModel's too; no pod runner (benchmarks)",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up/demo: add edge-real-amd64-0, a real kubelet over containerd + runc (root)",
    )
    parser.add_argument("--json", action="store_true", help="status as JSON")


def run(args: argparse.Namespace) -> int:
    sandbox = Sandbox.default()
    try:
        if args.action == "up":
            sandbox.up(
                nodes=args.nodes,
                prometheus=not args.no_prometheus,
                kwok_pods=args.kwok_pods,
                real_node=args.real_node,
            )
            _print_env(sandbox)
            return 0
        if args.action == "down":
            sandbox.down()
            print("sandbox stopped; nothing left running")
            return 0
        if args.action == "env":
            _print_env(sandbox)
            return 0
        if args.action == "status":
            return _status(sandbox, as_json=args.json)
        from edgemodel_sandbox import demo

        return demo.run_demo(sandbox, nodes=args.nodes, real_node=args.real_node)
    except (SandboxError, ToolsError) as exc:
        print(f"edgemodel sandbox {args.action}: {exc}", file=sys.stderr)
        return 1


def _print_env(sandbox: Sandbox) -> None:
    kubectl_dir = Tools.at(tools_dir()).kubectl.parent
    print(f"export KUBECONFIG={sandbox.kubeconfig}")
    print(f"export PATH={kubectl_dir}:$PATH  # kubectl {kubectl_dir.name.split('-', 1)[-1]}")
    url = sandbox.prometheus_url()
    if url:
        print(f"# prometheus: {url}")
    state = sandbox.state()
    if state is not None and state.real_node is not None:
        from edgemodel_sandbox.realnode import node as realnode

        report = realnode.RealNode(sandbox).status(state) or {}
        print(f"export EDGEMODEL_REGISTRY={report.get('registry', '')}")
        print(f"export EDGEMODEL_REGISTRY_AUTH={report.get('credentials', '')}")
        print(f"export EDGEMODEL_RUNTIME_IMAGE={report.get('runtimeImage', '')}")
        print(f"# pull secret: {report.get('pullSecret')} ({report.get('pullSecretManifest')})")
        print(
            "# skopeo inspect --authfile $EDGEMODEL_REGISTRY_AUTH "
            f"--cert-dir {report.get('certDir')} docker://$EDGEMODEL_RUNTIME_IMAGE"
        )


def _status(sandbox: Sandbox, as_json: bool) -> int:
    report = sandbox.status_report()
    if as_json:
        print(json.dumps(report, indent=2))
        return 0 if report["running"] else 3
    if not report["running"]:
        print(f"sandbox not running (state: {report['directory']})")
        return 3
    print(f"kubeconfig:  {report['kubeconfig']}")
    print(f"api server:  {report['apiServer']}")
    print(f"prometheus:  {report['prometheus'] or '-'}")
    print(
        "components:  "
        + ", ".join(f"{name} {state}" for name, state in report["components"].items())
    )
    print()
    print(f"{'ARCH':<8} {'ACCELERATOR':<12} {'NODES':>6} {'READY':>6}")
    for row in report["nodes"]:
        print(f"{row['arch']:<8} {row['accelerator']:<12} {row['nodes']:>6} {row['ready']:>6}")
    real = report.get("realNode")
    if real:
        print()
        print(f"{'REAL NODE':<20} {'READY':<6} {'KUBELET':<9} {'RUNTIME':<22} {'PODS':>5}")
        print(
            f"{real['name']:<20} {real.get('ready')!s:<6} {real.get('kubeletVersion', '?'):<9} "
            f"{real.get('containerRuntime', '?'):<22} {real.get('pods', '?'):>5}"
        )
        print(f"registry:    {real['registry']}  (credentials: {real['credentials']})")
        print(f"image:       {real['runtimeImage']}")
        print(f"pull secret: {real['pullSecret']}")
    return 0
