"""Owns the real node's configuration as pure builders: where everything lives, the kubelet's
and kube-proxy's configuration, the CNI network, the node's labels, the registry's config and
the pull secret. Nothing here touches the machine; `node` does, with these.

The real node's network (see docs/architecture.md, "A real node"):

    host netns
      emreal0 (bridge) 10.240.0.1/24   gateway of the pod network; on it, host-side services:
        :53    cluster DNS (gateway.py)          kubelet clusterDNS
        :6443  the API server (gateway.py)       endpoint of the `kubernetes` Service
        :5000  the OCI registry (TLS, htpasswd)  10.240.0.1:5000/edgemodel/runtime:TAG
      veth per pod ---- pod netns 10.240.0.N/24 (bridge CNI, host-local IPAM)

10.240.0.0/24 is outside the pod runner's candidates (10.200-239.0.0/16, runner/network.py),
kwok's 10.244.0.0/16 and the service range 10.96.0.0/16.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemodel_sandbox import fleet
from edgemodel_sandbox.kubeconfig import render

NODE_NAME = "edge-real-amd64-0"
BRIDGE = "emreal0"
POD_CIDR = "10.240.0.0/24"
GATEWAY_IP = "10.240.0.1"
DNS_PORT = 53
API_PORT = 6443
REGISTRY_PORT = 5000
REGISTRY = f"{GATEWAY_IP}:{REGISTRY_PORT}"
RUNTIME_REPOSITORY = "edgemodel/runtime"
CNI_NETWORK = "edgemodel-real-node"
CLUSTER_DOMAIN = "cluster.local"
REAL_NODE_LABEL = "edgemodel.dev/real-node"
# Only pods that ask for the real node land on it (the demo's amd64 CPU target, tests): the
# rest of the sandbox keeps its placement on the kwok fleet.
TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
PULL_SECRET = "edgemodel-registry"
PULL_SECRET_NAMESPACE = "default"
REGISTRY_USER = "edgemodel"
# Label prefixes NodeRestriction refuses from a kubelet (--node-labels): applied by the admin.
_KUBELET_FORBIDDEN = ("kubernetes.io/", "k8s.io/")
_KUBELET_ALLOWED = (
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
)


@dataclass(frozen=True)
class Layout:
    """Where one real node keeps its files (all under `root`, inside the sandbox's folder)."""

    root: Path

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.root / "kube-proxy.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_state(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def registry_root(self) -> Path:
        return self.root / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_root / "config.yml"

    @property
    def htpasswd(self) -> Path:
        return self.registry_root / "htpasswd"

    @property
    def registry_credentials(self) -> Path:
        """The Docker config.json holding the registry's credentials (0600)."""
        return self.registry_root / "auth.json"

    @property
    def pull_secret(self) -> Path:
        """The kubernetes.io/dockerconfigjson Secret, as a manifest to copy into namespaces."""
        return self.registry_root / "pull-secret.yaml"

    @property
    def certs(self) -> Path:
        """CA certificates for clients of the registry (skopeo's --dest-cert-dir)."""
        return self.registry_root / "certs.d"


def node_labels() -> dict[str, str]:
    """The labels of a kwok amd64 CPU node (fleet.py), for a real box in site-0."""
    template = fleet.node_manifest(fleet.AMD64_CPU, 0, 0)["metadata"]["labels"]
    labels = {k: v for k, v in template.items() if k != "type"}
    labels["kubernetes.io/hostname"] = NODE_NAME
    labels["edgemodel.dev/hardware"] = "sandbox-vm"
    labels[REAL_NODE_LABEL] = "true"
    return dict(labels)


def kubelet_may_set(label: str) -> bool:
    """Whether NodeRestriction lets a kubelet set `label` on its own Node (pure)."""
    prefix = label.split("/", 1)[0] + "/" if "/" in label else ""
    domain = prefix.rstrip("/")
    if label in _KUBELET_ALLOWED:
        return True
    if domain.endswith("kubelet.kubernetes.io") or domain.endswith("node.kubernetes.io"):
        return True
    return not any(
        domain == d.rstrip("/") or domain.endswith("." + d.rstrip("/")) for d in _KUBELET_FORBIDDEN
    )


def split_labels(labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(labels the kubelet sets itself, labels the admin client applies after registration)."""
    own = {k: v for k, v in labels.items() if kubelet_may_set(k)}
    return own, {k: v for k, v in labels.items() if k not in own}


def kubelet_configuration(
    layout: Layout,
    ca_cert: Path,
    serving_cert: Path,
    serving_key: Path,
    runtime_socket: Path,
    port: int,
    healthz_port: int,
) -> dict[str, Any]:
    """The KubeletConfiguration of the real node (see docs/architecture.md, "A real node")."""
    endpoint = f"unix://{runtime_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 hybrid hierarchy here: deprecated in 1.36, still supported when asked.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "address": GATEWAY_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [GATEWAY_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        "localStorageCapacityIsolation": True,
        "serializeImagePulls": False,
        "registerNode": True,
        "registerWithTaints": [dict(TAINT)],
        "maxPods": 32,
        # The VM's disk is large and shared: evict before it fills, but not for a few percent.
        "evictionHard": {
            "memory.available": "256Mi",
            "nodefs.available": "5%",
            "nodefs.inodesFree": "5%",
            "imagefs.available": "5%",
        },
        "imageGCHighThresholdPercent": 95,
        "imageGCLowThresholdPercent": 90,
        "nodeStatusUpdateFrequency": "10s",
        "nodeStatusReportFrequency": "1m",
        "syncFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 2,
        "shutdownGracePeriod": "0s",
        "volumePluginDir": str(layout.kubelet_root / "volume-plugins"),
    }


def kubelet_args(layout: Layout, node_labels_: dict[str, str], verbosity: int = 1) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(node_labels_.items()))
    return [
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.root / 'kubelet-pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={GATEWAY_IP}",
        f"--node-labels={labels}",
        f"--v={verbosity}",
    ]


def kube_proxy_configuration(
    layout: Layout, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """kube-proxy in iptables mode for the real node's pods (and the host)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.proxy_kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts only on the bridge address: no route_localnet, nothing on the VM's NIC.
        "nodePortAddresses": [f"{GATEWAY_IP}/32"],
        # Leave the machine's conntrack sysctls alone (0: do not set).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
    }


def cni_conflist(layout: Layout) -> dict[str, Any]:
    """Bridge + host-local (state in the sandbox's folder) + loopback."""
    network = ipaddress.ip_network(POD_CIDR)
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_state),
                    "ranges": [
                        [
                            {
                                "subnet": POD_CIDR,
                                "gateway": GATEWAY_IP,
                                "rangeStart": str(network.network_address + 10),
                                "rangeEnd": str(network.broadcast_address - 1),
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
        ],
    }


def kubeconfig(server: str, ca_cert: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A client-certificate kubeconfig (the kubelet's, kube-proxy's)."""
    return render(
        "edgemodel-sandbox",
        {"server": server, "certificate-authority": str(ca_cert)},
        user,
        {"client-certificate": str(cert), "client-key": str(key)},
        context="default",
    )


def registry_configuration(layout: Layout, cert: Path, key: Path, listen: str) -> dict[str, Any]:
    """distribution's config.yml: filesystem storage, htpasswd auth, TLS by the sandbox CA."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(layout.registry_root / "storage")},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": listen,
            "tls": {"certificate": str(cert), "key": str(key)},
            "secret": "edgemodel-sandbox-registry",
            "draintimeout": "1s",
        },
        "auth": {"htpasswd": {"realm": "edgemodel-sandbox", "path": str(layout.htpasswd)}},
    }


def docker_config(registry: str, user: str, password: str) -> dict[str, Any]:
    """A Docker config.json with one registry's credentials (pull secrets, skopeo --authfile)."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {registry: {"username": user, "password": password, "auth": auth}}}


def pull_secret(
    name: str, namespace: str, registry: str, user: str, password: str
) -> dict[str, Any]:
    """A kubernetes.io/dockerconfigjson Secret for `registry`."""
    payload = json.dumps(docker_config(registry, user, password), separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "edgemodel-sandbox"},
        },
        "data": {".dockerconfigjson": base64.b64encode(payload.encode()).decode()},
    }


def kubernetes_endpoint_slice() -> dict[str, Any]:
    """The `kubernetes` Service's endpoint for kube-proxy: the API server through gateway.py.

    The sandbox's API server runs with --endpoint-reconciler-type=none (it listens on loopback,
    which EndpointSlices refuse), so the sandbox publishes this slice itself."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes-real-node",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "edgemodel-sandbox",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [GATEWAY_IP], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}],
    }


def runtime_reference(tag: str) -> str:
    return f"{REGISTRY}/{RUNTIME_REPOSITORY}:{tag}"
