"""`python -m edgemodel_sandbox.realnode can-run`: prints `--real-node` when this machine can
run the real node (root, containerd, runc, the CNI plugins, iptables, skopeo), else nothing and
the reason on stderr. `make sandbox` adds what it prints to `edgemodel sandbox demo`."""

from __future__ import annotations

import sys

from edgemodel_sandbox.realnode.node import missing_requirements


def main(argv: list[str]) -> int:
    if argv != ["can-run"]:
        print("usage: python -m edgemodel_sandbox.realnode can-run", file=sys.stderr)
        return 2
    missing = missing_requirements()
    if missing:
        print(f"no real node on this machine: {'; '.join(missing)}", file=sys.stderr)
    else:
        print("--real-node")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
