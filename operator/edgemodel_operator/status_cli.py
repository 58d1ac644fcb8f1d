"""Owns `edgemodel status NAME [-n NS]`: one EdgeModel's status as a per-target table.

`format_status` is pure (an EdgeModel as a dict in, text out) and carries all the layout;
`run` only reads the object with the kubernetes client from the current kubeconfig. The
client's CustomObjectsApi returns plain dicts, which is what `format_status` takes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from edgemodel_operator.api import GROUP, PLURAL, VERSION

NONE = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the EdgeModel's name")
    parser.add_argument(
        "--namespace", "-n", help="its namespace (default: the kubeconfig context's, else default)"
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def run(args: argparse.Namespace) -> int:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        api_client = config.new_client_from_config(
            config_file=args.kubeconfig, context=args.context
        )
        namespace = args.namespace or _context_namespace(args.kubeconfig, args.context)
    except (ConfigException, OSError) as exc:
        print(f"edgemodel status: no usable kubeconfig: {exc}", file=sys.stderr)
        return 2
    api = client.CustomObjectsApi(api_client)
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, args.name)
    except ApiException as exc:
        if exc.status == 404:
            print(f"edgemodel status: EdgeModel {namespace}/{args.name} not found", file=sys.stderr)
        else:
            print(f"edgemodel status: {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:  # urllib3 connection errors derive from it
        print(f"edgemodel status: API server unreachable: {exc}", file=sys.stderr)
        return 1
    finally:
        api_client.close()
    print(format_status(obj))
    return 0


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    chosen = (
        next((c for c in contexts if c.get("name") == context), current) if context else current
    )
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


# ------------------------------------------------------------------ pure formatting


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, like kubectl's; no trailing spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(headers), *rows]
    ]
    return "\n".join(lines)


def _number(value: Any) -> str:
    if value is None:
        return NONE
    number = float(value)
    return f"{number:.0f}" if number == int(number) else f"{number:.1f}"


def latency_vs_slo(p95: Any, slo: Any) -> str:
    """`12.3/25ms`; `31/25ms OVER` when the target misses its SLO; `-/25ms` without data."""
    if slo is None:
        return f"{_number(p95)}ms" if p95 is not None else NONE
    text = f"{_number(p95)}/{_number(slo)}ms"
    if p95 is not None and float(p95) > float(slo):
        text += " OVER"
    return text


def _scale(target: Mapping[str, Any]) -> str:
    decision = target.get("lastScaleDecision")
    reason = target.get("lastScaleReason")
    if not decision:
        return NONE
    return f"{decision} ({reason})" if reason else str(decision)


def target_rows(obj: Mapping[str, Any]) -> list[list[str]]:
    """One row per target: the spec's order, the status's numbers (a new target shows `-`)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    slo = (spec.get("slo") or {}).get("latencyP95Ms")
    observed = {t.get("name"): t for t in status.get("targets") or []}
    names = [t.get("name") for t in spec.get("targets") or []]
    names += [n for n in observed if n not in names]  # removed from spec, still reported
    wanted = {t.get("name"): t for t in spec.get("targets") or []}
    rows = []
    for name in names:
        seen = observed.get(name) or {}
        declared = wanted.get(name) or {}
        ready, desired = seen.get("readyReplicas"), seen.get("replicas")
        rows.append(
            [
                str(name),
                str(seen.get("arch") or declared.get("arch") or NONE),
                str(seen.get("accelerator") or declared.get("accelerator") or "none"),
                f"{_number(ready if ready is not None else (0 if desired is not None else None))}"
                f"/{_number(desired)}",
                latency_vs_slo(seen.get("p95LatencyMs"), seen.get("latencySloMs", slo)),
                str(seen.get("revision") or NONE),
                _scale(seen),
            ]
        )
    return rows


def format_status(obj: Mapping[str, Any]) -> str:
    """The whole report: header, targets table, conditions table, last rollback, messages."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    out = [
        f"EdgeModel {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        f"  phase {status.get('phase') or 'Pending'}",
        f"Stable revision: {status.get('stableRevision') or NONE}"
        f"   Canary revision: {status.get('canaryRevision') or NONE}",
    ]
    if spec_paused := (obj.get("spec") or {}).get("paused"):
        out.append(f"Paused: {str(spec_paused).lower()} (no scaling, rollout steps or rollback)")
    if observed is None:
        out.append("The operator has not reported on this EdgeModel yet.")
    elif generation is not None and observed != generation:
        out.append(
            f"Status is for generation {observed}; the spec is at generation {generation} "
            "(the operator has not caught up yet)."
        )
    out += [
        "",
        table(
            ["TARGET", "ARCH", "ACCELERATOR", "READY", "P95/SLO", "REVISION", "LAST SCALE"],
            target_rows(obj),
        ),
    ]
    messages = [
        f"  {t.get('name')}: {t['message']}"
        for t in status.get("targets") or []
        if t.get("message")
    ]
    if messages:
        out += ["", "Target messages:", *messages]
    conditions = status.get("conditions") or []
    if conditions:
        out += [
            "",
            table(
                ["CONDITION", "STATUS", "REASON", "MESSAGE"],
                [
                    [
                        str(c.get("type", "")),
                        str(c.get("status", "")),
                        str(c.get("reason") or NONE),
                        str(c.get("message") or ""),
                    ]
                    for c in conditions
                ],
            ),
        ]
    rollback = status.get("lastRollback") or {}
    if rollback.get("from") or rollback.get("to"):
        out += [
            "",
            f"Last rollback: {rollback.get('from') or NONE} -> {rollback.get('to') or NONE}"
            f" at {rollback.get('time') or NONE}: {rollback.get('reason') or ''}".rstrip(": "),
        ]
    return "\n".join(out)
