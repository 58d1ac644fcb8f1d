"""The real node's decisions, as pure functions: its labels (and which of them NodeRestriction
leaves to the kubelet), the kubelet's, kube-proxy's and CNI's configuration, the pull secret,
the `kubernetes` Service's endpoint, the cluster DNS answers, and what `down` recognises as
the node's leftovers in iptables, mounts and network namespaces."""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from pathlib import Path

import pytest

from edgemodel_sandbox import fleet, pki
from edgemodel_sandbox.realnode import gateway, plan, sweep
from edgemodel_sandbox.runner import network

LAYOUT = plan.Layout(Path("/state/real-node"))


# ---------------------------------------------------------------- labels


def test_the_real_node_carries_the_labels_of_a_kwok_amd64_k3s_node_but_not_kwoks_own() -> None:
    labels = plan.node_labels()
    kwok = fleet.node_manifest(fleet.AMD64_CPU, 0, 0)["metadata"]["labels"]
    for key in (
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "edgemodel.dev/site",
        fleet.FLEET_LABEL,
    ):
        assert labels[key] == kwok[key], key
    assert labels["kubernetes.io/arch"] == "amd64"
    assert labels["node.kubernetes.io/instance-type"] == "k3s"
    assert labels["kubernetes.io/hostname"] == plan.NODE_NAME
    assert labels[plan.REAL_NODE_LABEL] == "true"
    assert "type" not in labels  # kwok's marker


@pytest.mark.parametrize(
    ("label", "allowed"),
    [
        ("kubernetes.io/arch", True),
        ("topology.kubernetes.io/zone", True),
        ("node.kubernetes.io/instance-type", True),
        ("kubelet.kubernetes.io/anything", True),
        ("edgemodel.dev/site", True),
        ("type", True),
        ("node-role.kubernetes.io/edge", False),
        ("kubernetes.io/role", False),
        ("example.k8s.io/x", False),
    ],
)
def test_node_restriction_decides_which_labels_the_kubelet_may_set(
    label: str, allowed: bool
) -> None:
    assert plan.kubelet_may_set(label) is allowed


def test_labels_the_kubelet_may_not_set_are_left_to_the_admin() -> None:
    own, admin = plan.split_labels({"kubernetes.io/arch": "amd64", "node-role.kubernetes.io/x": ""})
    assert own == {"kubernetes.io/arch": "amd64"}
    assert admin == {"node-role.kubernetes.io/x": ""}


# ---------------------------------------------------------------- kubelet, kube-proxy, CNI


def test_kubelet_runs_on_cgroup_v1_with_cgroupfs_over_the_sandboxs_containerd() -> None:
    config = plan.kubelet_configuration(
        LAYOUT, Path("/ca"), Path("/c"), Path("/k"), Path("/ctd/containerd.sock"), 10250, 10248
    )
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"] == "unix:///ctd/containerd.sock"
    assert config["imageServiceEndpoint"] == config["containerRuntimeEndpoint"]
    assert config["failSwapOn"] is False
    assert config["clusterDNS"] == [plan.GATEWAY_IP]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["registerWithTaints"] == [plan.TAINT]
    assert str(config["podLogsDir"]).startswith(str(LAYOUT.root))
    assert set(config["evictionHard"]) >= {"memory.available", "nodefs.available"}


def test_kubelet_args_name_the_node_its_ip_on_the_bridge_and_its_own_root() -> None:
    args = plan.kubelet_args(LAYOUT, {"b": "2", "a": "1"})
    assert f"--hostname-override={plan.NODE_NAME}" in args
    assert f"--node-ip={plan.GATEWAY_IP}" in args
    assert f"--root-dir={LAYOUT.kubelet_root}" in args
    assert "--node-labels=a=1,b=2" in args


def test_kube_proxy_uses_iptables_for_the_pod_range_and_leaves_conntrack_sysctls_alone() -> None:
    config = plan.kube_proxy_configuration(LAYOUT, 1, 2)
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == plan.POD_CIDR
    assert config["hostnameOverride"] == plan.NODE_NAME
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["nodePortAddresses"] == [f"{plan.GATEWAY_IP}/32"]


def test_the_pod_range_clashes_with_neither_the_runners_kwoks_nor_the_service_range() -> None:
    pods = ipaddress.ip_network(plan.POD_CIDR)
    for other in (*network.CANDIDATES, "10.244.0.0/16", "10.96.0.0/16"):
        assert not pods.overlaps(ipaddress.ip_network(other)), other
    assert ipaddress.ip_address(plan.GATEWAY_IP) in pods


def test_bridge_cni_keeps_its_ipam_state_in_the_sandbox_and_masquerades() -> None:
    conflist = plan.cni_conflist(LAYOUT)
    bridge = conflist["plugins"][0]
    assert conflist["name"] == plan.CNI_NETWORK
    assert bridge["type"] == "bridge" and bridge["bridge"] == plan.BRIDGE
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"]["dataDir"] == str(LAYOUT.cni_state)
    assert bridge["ipam"]["ranges"][0][0]["gateway"] == plan.GATEWAY_IP


# ---------------------------------------------------------------- registry, secret, endpoint


def test_the_pull_secret_is_a_dockerconfigjson_for_the_local_registry() -> None:
    secret = plan.pull_secret("s", "ns", plan.REGISTRY, "u", "p")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    payload = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = payload["auths"][plan.REGISTRY]
    assert base64.b64decode(entry["auth"]).decode() == "u:p"


def test_the_registry_serves_tls_and_asks_for_htpasswd_credentials() -> None:
    config = plan.registry_configuration(LAYOUT, Path("/c"), Path("/k"), plan.REGISTRY)
    assert config["http"]["tls"] == {"certificate": "/c", "key": "/k"}
    assert config["auth"]["htpasswd"]["path"] == str(LAYOUT.htpasswd)
    assert str(config["storage"]["filesystem"]["rootdirectory"]).startswith(str(LAYOUT.root))


def test_the_kubernetes_service_points_at_the_gateway_not_at_loopback() -> None:
    body = plan.kubernetes_endpoint_slice()
    assert body["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert body["endpoints"][0]["addresses"] == [plan.GATEWAY_IP]
    assert body["ports"] == [{"name": "https", "port": plan.API_PORT, "protocol": "TCP"}]


# ---------------------------------------------------------------- certificates


def test_certificate_subjects_put_organisations_before_the_common_name() -> None:
    assert pki.subject("system:node:n", ["system:nodes"]) == "/O=system:nodes/CN=system:node:n"
    with pytest.raises(pki.PKIError, match="CN"):
        pki.subject("a/CN=b")


def test_certificate_extensions_list_ips_and_names_and_the_usage() -> None:
    text = pki.extensions(["10.240.0.1", "edge"], server=True, client=False)
    assert "subjectAltName=IP:10.240.0.1,DNS:edge" in text
    assert "extendedKeyUsage=serverAuth\n" in text
    with pytest.raises(pki.PKIError):
        pki.extensions([], server=False, client=False)


# ---------------------------------------------------------------- cluster DNS


def _query(name: str, qtype: int = gateway.TYPE_A) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        + question
        + struct.pack("!HH", qtype, gateway.CLASS_IN)
    )


def _rcode_and_addresses(reply: bytes) -> tuple[int, list[str]]:
    _, flags, _, ancount, _, _ = struct.unpack("!HHHHHH", reply[:12])
    records = reply[len(reply) - 16 * ancount :]  # A records: 12 bytes of header + 4 of address
    addresses = [
        str(ipaddress.IPv4Address(records[i + 12 : i + 16])) for i in range(0, len(records), 16)
    ]
    return flags & 0xF, addresses


def _lookup(target: gateway.ServiceName) -> list[str] | None:
    return {("edgemodel-artifacts", "edgemodel-system"): ["10.96.4.5"]}.get(
        (target.name, target.namespace)
    )


@pytest.mark.parametrize(
    "name",
    [
        "edgemodel-artifacts.edgemodel-system.svc.cluster.local",
        "edgemodel-artifacts.edgemodel-system.svc",
        "EDGEMODEL-ARTIFACTS.edgemodel-system.svc.cluster.local",
    ],
)
def test_dns_answers_a_service_name_with_its_cluster_ip(name: str) -> None:
    reply = gateway.answer(_query(name), _lookup)
    assert reply is not None
    assert reply[:2] == b"\x12\x34"
    assert _rcode_and_addresses(reply) == (gateway.NOERROR, ["10.96.4.5"])


def test_dns_says_nxdomain_for_search_list_expansions_and_unknown_services() -> None:
    expanded = "edgemodel-artifacts.edgemodel-system.svc.default.svc.cluster.local"
    for name in (expanded, "nothing.default.svc.cluster.local", "cluster.local"):
        reply = gateway.answer(_query(name), _lookup)
        assert reply is not None and _rcode_and_addresses(reply) == (gateway.NXDOMAIN, []), name


def test_dns_refuses_names_outside_the_cluster_and_answers_aaaa_with_no_records() -> None:
    reply = gateway.answer(_query("pypi.org"), _lookup)
    assert reply is not None and _rcode_and_addresses(reply)[0] == gateway.REFUSED
    name = "edgemodel-artifacts.edgemodel-system.svc.cluster.local"
    reply = gateway.answer(_query(name, gateway.TYPE_AAAA), _lookup)
    assert reply is not None and _rcode_and_addresses(reply) == (gateway.NOERROR, [])


def test_dns_reports_a_failed_lookup_as_servfail_and_ignores_garbage() -> None:
    def broken(_: gateway.ServiceName) -> list[str] | None:
        raise OSError("API server away")

    reply = gateway.answer(_query("a.b.svc.cluster.local"), broken)
    assert reply is not None and _rcode_and_addresses(reply)[0] == gateway.SERVFAIL
    assert gateway.answer(b"\x00\x01", _lookup) is None


# ---------------------------------------------------------------- leftovers


IPTABLES_SAVE = """\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:CNI-0a1b2c - [0:0]
:CNI-other - [0:0]
:DOCKER-LIKE - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.240.0.11/32 -m comment --comment "name: \\"edgemodel-real-node\\" id: \\"abc\\"" -j CNI-0a1b2c
-A POSTROUTING -s 10.9.0.2/32 -m comment --comment "name: \\"someone-else\\" id: \\"x\\"" -j CNI-other
-A CNI-0a1b2c -d 10.240.0.0/24 -m comment --comment "name: \\"edgemodel-real-node\\" id: \\"abc\\"" -j ACCEPT
-A KUBE-POSTROUTING -j MASQUERADE
-A DOCKER-LIKE -j RETURN
COMMIT
"""  # noqa: E501


def test_down_removes_the_kube_chains_and_our_cni_chains_but_nobody_elses() -> None:
    (nat,) = sweep.plan_iptables(IPTABLES_SAVE)
    assert nat.table == "nat"
    assert set(nat.chains) == {"KUBE-SERVICES", "KUBE-POSTROUTING", "CNI-0a1b2c"}
    assert len(nat.rules) == 3  # the jumps from PREROUTING/POSTROUTING into ours
    assert not any("someone-else" in r for r in nat.rules)


def test_mounts_under_the_nodes_folders_come_deepest_first() -> None:
    mountinfo = (
        "1 0 8:1 / / rw - ext4 /dev/vda rw\n"
        "2 1 0:5 / /state/real-node/kubelet/pods/u/volumes/v rw - tmpfs tmpfs rw\n"
        "3 1 0:6 / /state/real-node/kubelet rw - tmpfs tmpfs rw\n"
        "4 1 0:7 / /state/real-node-other rw - tmpfs tmpfs rw\n"
    )
    assert sweep.mounts_under(mountinfo, [Path("/state/real-node")]) == [
        "/state/real-node/kubelet/pods/u/volumes/v",
        "/state/real-node/kubelet",
    ]


def test_the_pods_network_namespaces_are_those_at_the_far_end_of_the_bridges_veths() -> None:
    links = "7: veth1@if2: <UP> mtu 1500 master emreal0 link-netnsid 3\n"
    netns = "cni-aaa (id: 3)\ncni-bbb (id: 4)\nem-123456 (id: 0)\n"
    assert sweep.bridge_netns(links, netns) == ["cni-aaa"]


# ---------------------------------------------------------------- the demo's placement


def test_the_demo_puts_only_the_amd64_cpu_target_on_the_real_node() -> None:
    import yaml

    from edgemodel_sandbox import demo

    example = yaml.safe_load(demo.EXAMPLE.read_text())
    placed = demo.place_on_real_node(yaml.safe_load(demo.EXAMPLE.read_text()))
    for before, after in zip(example["spec"]["targets"], placed["spec"]["targets"], strict=True):
        if after["name"] == demo.REAL_TARGET:
            assert after["arch"] == "amd64" and after.get("accelerator", "none") == "none"
            assert after["nodeSelector"] == {plan.REAL_NODE_LABEL: "true"}
            assert after["tolerations"] == [plan.TOLERATION]
        else:
            assert after == before


def test_the_demo_says_which_target_it_could_not_place() -> None:
    from edgemodel_sandbox import demo
    from edgemodel_sandbox.cluster import SandboxError

    with pytest.raises(SandboxError, match="no-such"):
        demo.place_on_real_node({"spec": {"targets": [{"name": "a"}]}}, "no-such")


# ---------------------------------------------------------------- state


def test_a_state_file_from_before_the_real_node_still_reads() -> None:
    from edgemodel_sandbox.cluster import State

    old = json.dumps({"ports": {"apiserver": 1}, "processes": [], "nodes": 6})
    assert State.from_json(old).real_node is None


def test_the_node_record_survives_the_state_file_and_ignores_unknown_keys() -> None:
    from edgemodel_sandbox.realnode.node import NodeRecord

    record = NodeRecord(runtime_image="r", ip_forward="0", sysctls={"kernel/panic": "1"})
    raw = json.loads(json.dumps(record.to_dict()))
    assert NodeRecord.from_dict({**raw, "from_a_newer_version": 1}) == record


def test_kubepods_cgroups_are_found_in_every_hierarchy_deepest_first(tmp_path: Path) -> None:
    for hierarchy in ("memory", "cpu", "unified"):
        (tmp_path / hierarchy / "kubepods" / "burstable" / "pod1").mkdir(parents=True)
    (tmp_path / "memory" / "edgemodel" / "c1").mkdir(parents=True)  # someone else's
    found = sweep.kubepods_cgroups(tmp_path)
    assert len(found) == 9
    assert all("kubepods" in p.parts for p in found)
    assert [len(p.parts) for p in found] == sorted((len(p.parts) for p in found), reverse=True)
