"""Owns the sandbox's pinned tool versions and where their binaries are cached.

Binaries are built from the Go module proxy by `build-tools.sh` (shipped beside this module)
into a per-version folder of the user cache, so only the first run pays for the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgemodel_sandbox import files
from edgemodel_sandbox.errors import EdgeModelSandboxError

K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.19.5"
# The real node (edgemodel_sandbox.realnode): an OCI registry from the Go module proxy.
REGISTRY_VERSION = "v3.1.2"
BUILD_SCRIPT = Path(__file__).with_name("build-tools.sh")


class ToolsError(EdgeModelSandboxError, RuntimeError):
    """A tool could not be built or found."""


def tools_dir() -> Path:
    return files.cache_dir("tools", "EDGEMODEL_TOOLS_DIR")


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the control-plane binaries of one pinned version set."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    prometheus: Path | None

    @classmethod
    def at(cls, root: Path) -> Tools:
        k8s = root / f"kubernetes-{K8S_VERSION}"
        prometheus = shutil.which("prometheus")
        return cls(
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=k8s / "kubectl",
            etcd=root / f"etcd-{ETCD_VERSION}" / "etcd",
            kwok=root / f"kwok-{KWOK_VERSION}" / "kwok",
            prometheus=Path(prometheus) if prometheus else None,
        )

    def missing(self) -> list[Path]:
        built = [
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.etcd,
            self.kwok,
        ]
        return [path for path in built if not os.access(path, os.X_OK)]


def _run_build(what: str) -> None:
    env = dict(
        os.environ,
        EDGEMODEL_TOOLS_DIR=str(tools_dir()),
        K8S_VERSION=K8S_VERSION,
        ETCD_VERSION=ETCD_VERSION,
        KWOK_VERSION=KWOK_VERSION,
        HELM_VERSION=HELM_VERSION,
        REGISTRY_VERSION=REGISTRY_VERSION,
    )
    # The script reports progress on stderr; pass it straight through so a long cold
    # build is visibly alive.
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), what], env=env, stdout=sys.stderr, check=False
    )
    if result.returncode != 0:
        raise ToolsError(f"building {what} failed (exit {result.returncode}); see the output above")


def ensure_tools() -> Tools:
    """Returns the cached tools, building the missing ones first (a cold build takes a while)."""
    tools = Tools.at(tools_dir())
    if tools.missing():
        print(
            "edgemodel sandbox: building the control plane from the Go module proxy "
            f"(kubernetes {K8S_VERSION}, etcd {ETCD_VERSION}, kwok {KWOK_VERSION}); "
            "the first run takes 20-40 minutes on 2 cores, later runs reuse the cache",
            file=sys.stderr,
        )
        _run_build("all")
        tools = Tools.at(tools_dir())
        if tools.missing():
            raise ToolsError(
                f"still missing after the build: {', '.join(map(str, tools.missing()))}"
            )
    return tools


@dataclass(frozen=True)
class NodeTools:
    """Absolute paths of the real node's binaries (kubelet, kube-proxy, registry)."""

    kubelet: Path
    kube_proxy: Path
    registry: Path

    @classmethod
    def at(cls, root: Path) -> NodeTools:
        node = root / f"kubernetes-node-{K8S_VERSION}"
        return cls(
            kubelet=node / "kubelet",
            kube_proxy=node / "kube-proxy",
            registry=root / f"registry-{REGISTRY_VERSION}" / "registry",
        )

    def missing(self) -> list[Path]:
        built = [self.kubelet, self.kube_proxy, self.registry]
        return [path for path in built if not os.access(path, os.X_OK)]


def ensure_node_tools() -> NodeTools:
    """The real node's binaries, built first when missing (kubelet + kube-proxy: ~2 min with a
    warm Go cache; the registry a few minutes cold)."""
    tools = NodeTools.at(tools_dir())
    if not os.access(tools.registry, os.X_OK):
        _run_build("registry")
    if not (os.access(tools.kubelet, os.X_OK) and os.access(tools.kube_proxy, os.X_OK)):
        print(
            f"edgemodel sandbox: building kubelet and kube-proxy {K8S_VERSION} for the real node",
            file=sys.stderr,
        )
        _run_build("node")
    if tools.missing():
        raise ToolsError(f"still missing after the build: {', '.join(map(str, tools.missing()))}")
    return tools


def ensure_helm() -> Path:
    helm = tools_dir() / f"helm-{HELM_VERSION}" / "helm"
    if not os.access(helm, os.X_OK):
        _run_build("helm")
    return helm


if __name__ == "__main__":
    # `python -m edgemodel_sandbox.tools [helm]`: build (or confirm) the cached tools up front,
    # with progress on the terminal, before pytest captures output.
    if sys.argv[1:] == ["helm"]:
        print(ensure_helm())
    elif sys.argv[1:] == ["node"]:
        print(ensure_node_tools().kubelet.parent)
    else:
        print(ensure_tools().kube_apiserver.parent.parent)
