"""The sandbox's own containerd, decided on paper: its config, the OCI spec of a container,
and the image facts a container is built from.

The config keeps everything under the caller's directory and sets the CRI plugin up for a
kubelet on these machines (cgroupfs, runc v2, no oom_score_adj lowering, settable sandbox
image, CNI directories and registries); it is TOML that containerd (and tomllib) reads back
as written. A container spec is what the Helm chart asks of the runtime image: no
capabilities, no new privileges, no rlimits, a read-only root, the network it is given.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.containerd import (
    ContainerdError,
    Mount,
    Registry,
    arm64_cpuinfo,
    container_spec,
    containerd_config,
    merge_env,
    parse_platform,
    render_toml,
    resolve_user,
    select_manifest,
    shim_socket,
)

ROOT = Path("/var/tmp/edgemodel-ctd")
CRI = "io.containerd.grpc.v1.cri"


def cri(config: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = config["plugins"][CRI]
    return section


# --- the config ------------------------------------------------------------------------------


def test_config_round_trips_through_toml() -> None:
    config = containerd_config(
        ROOT,
        registries=[
            Registry("registry.local:5000", username="edge", password='p"w'),
            Registry("mirror.local:5443", ca_file=Path("/ca.crt")),
        ],
    )
    assert tomllib.loads(render_toml(config)) == config


def test_everything_lives_under_the_given_directory() -> None:
    config = containerd_config(ROOT)
    assert config["root"] == str(ROOT / "root")
    assert config["state"] == str(ROOT / "state")
    assert config["grpc"]["address"] == str(ROOT / "containerd.sock")
    assert config["ttrpc"]["address"].startswith(str(ROOT))
    assert config["debug"]["address"].startswith(str(ROOT))
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(str(ROOT))
    runc = cri(config)["containerd"]["runtimes"]["runc"]["options"]
    assert runc["Root"].startswith(str(ROOT))
    assert cri(config)["netns_mounts_under_state_dir"] is True


def test_cri_is_set_up_for_a_kubelet_on_these_machines() -> None:
    section = cri(containerd_config(ROOT, sandbox_image="localhost/pause:dev"))
    assert section["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here
    assert section["sandbox_image"] == "localhost/pause:dev"
    runtime = section["containerd"]["runtimes"]["runc"]
    assert runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"]["SystemdCgroup"] is False
    assert section["containerd"]["default_runtime_name"] == "runc"
    assert section["containerd"]["snapshotter"] == "overlayfs"
    assert section["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(ROOT / "cni" / "net.d")}


def test_cni_conf_dir_and_snapshotter_are_settable() -> None:
    section = cri(containerd_config(ROOT, cni_conf_dir=Path("/etc/x"), snapshotter="native"))
    assert section["cni"]["conf_dir"] == "/etc/x"
    assert section["containerd"]["snapshotter"] == "native"


def test_registry_auth_tls_and_endpoint() -> None:
    section = cri(
        containerd_config(
            ROOT,
            registries=[
                Registry("reg.local:5000", username="u", password="p", ca_file=Path("/ca.pem")),
                Registry("plain.local:5001", plain_http=True),
                Registry("self.local:5002", insecure_skip_verify=True),
            ],
        )
    )
    configs = section["registry"]["configs"]
    assert configs["reg.local:5000"] == {
        "auth": {"username": "u", "password": "p"},
        "tls": {"ca_file": "/ca.pem"},
    }
    assert configs["self.local:5002"] == {"tls": {"insecure_skip_verify": True}}
    assert configs["plain.local:5001"] == {}
    mirrors = section["registry"]["mirrors"]
    assert mirrors["reg.local:5000"] == {"endpoint": ["https://reg.local:5000"]}
    assert mirrors["plain.local:5001"] == {"endpoint": ["http://plain.local:5001"]}


def test_registry_table_headers_are_quoted_host_ports() -> None:
    text = render_toml(containerd_config(ROOT, registries=[Registry("r.local:5000", "u", "p")]))
    assert '[plugins."io.containerd.grpc.v1.cri".registry.configs."r.local:5000".auth]' in text


def test_no_registry_section_without_registries() -> None:
    assert "registry" not in cri(containerd_config(ROOT))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"host": "https://r:5000"}, "https://r:5000"),
        ({"host": "r:5000", "username": "u"}, "r:5000"),
        ({"host": "r:5000", "plain_http": True, "ca_file": Path("/c")}, "plain_http"),
    ],
)
def test_bad_registries_are_refused_by_name(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Registry(**kwargs)


def test_the_same_registry_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="r:1 given twice"):
        containerd_config(ROOT, registries=[Registry("r:1"), Registry("r:1")])


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"snapshotter": "zfs"}, "zfs"),
        ({"stream_server_port": 70000}, "70000"),
    ],
)
def test_bad_settings_are_refused_by_value(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        containerd_config(ROOT, **kwargs)


def test_relative_directory_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        containerd_config(Path("rel"))


# --- TOML ------------------------------------------------------------------------------------


def test_toml_writes_scalars_before_tables_and_keeps_empty_tables() -> None:
    data = {"a": {"x": 1, "b.c": {"flag": True}, "empty": {}}, "top": "v", "list": ["p", 2]}
    text = render_toml(data)
    assert tomllib.loads(text) == data
    assert text.index('top = "v"') < text.index("[a]")
    assert '[a."b.c"]' in text
    assert "[a.empty]" in text


def test_toml_strings_are_escaped() -> None:
    data = {"s": 'quote " backslash \\ newline \n tab \t'}
    assert tomllib.loads(render_toml(data)) == data


@pytest.mark.parametrize("value", [None, object(), {1, 2}])
def test_toml_refuses_what_it_cannot_write_naming_the_key(value: Any) -> None:
    with pytest.raises(ValueError, match=r"outer\.key"):
        render_toml({"outer": {"key": value}})


# --- the container spec ----------------------------------------------------------------------


def spec(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "name": "c1",
        "rootfs": Path("/b/c1/rootfs"),
        "args": ["edgemodel", "serve"],
        "env": ["PATH=/usr/bin"],
        "cwd": "/home/edgemodel",
        "uid": 10001,
        "gid": 10001,
        "cgroups_path": "/edgemodel/c1",
    }
    return container_spec(**{**kwargs, **overrides})


def test_spec_runs_as_the_chart_would() -> None:
    document = spec()
    process = document["process"]
    assert process["user"]["uid"] == 10001
    assert process["user"]["gid"] == 10001
    assert process["noNewPrivileges"] is True
    assert process["capabilities"] == {"bounding": [], "effective": [], "permitted": []}
    assert "rlimits" not in process  # raising them needs CAP_SYS_RESOURCE, which is missing
    assert document["root"] == {"path": "/b/c1/rootfs", "readonly": True}
    assert document["linux"]["cgroupsPath"] == "/edgemodel/c1"
    assert "/proc/kcore" in document["linux"]["maskedPaths"]
    assert "/proc/sys" in document["linux"]["readonlyPaths"]


def test_capabilities_are_only_those_asked_for() -> None:
    caps = spec(capabilities=["CAP_NET_BIND_SERVICE"])["process"]["capabilities"]
    assert caps["effective"] == ["CAP_NET_BIND_SERVICE"] == caps["bounding"]
    with pytest.raises(ValueError, match="net_admin"):
        spec(capabilities=["net_admin"])


def namespace_types(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {ns["type"]: ns for ns in document["linux"]["namespaces"]}


def test_host_network_shares_the_host_namespace() -> None:
    document = spec(network="host")
    assert "network" not in namespace_types(document)
    assert {"pid", "ipc", "uts", "mount"} <= set(namespace_types(document))


def test_network_none_is_a_new_namespace_and_a_path_is_joined() -> None:
    assert namespace_types(spec(network="none"))["network"] == {"type": "network"}
    joined = namespace_types(spec(network=Path("/run/netns/pod")))["network"]
    assert joined == {"type": "network", "path": "/run/netns/pod"}


def test_mounts_are_read_only_binds_unless_said_and_tmpfs_is_writable() -> None:
    document = spec(
        mounts=[Mount(Path("/models"), "/models"), Mount(Path("/out"), "/out", read_only=False)],
        tmpfs=["/tmp"],
    )
    by_target = {m["destination"]: m for m in document["mounts"]}
    assert by_target["/models"]["type"] == "bind"
    assert "ro" in by_target["/models"]["options"]
    assert "rw" in by_target["/out"]["options"]
    assert by_target["/tmp"]["type"] == "tmpfs"
    assert "mode=1777" in by_target["/tmp"]["options"]


def test_a_container_needs_a_command_and_an_absolute_cwd() -> None:
    with pytest.raises(ValueError, match="no command"):
        spec(args=[])
    with pytest.raises(ValueError, match="relative"):
        spec(cwd="relative")


def test_env_lays_over_the_image_env() -> None:
    env = merge_env(["PATH=/img/bin", "A=1", "B=2"], {"B": "3", "C": "4"})
    assert env == ["PATH=/img/bin", "A=1", "B=3", "C=4"]
    assert merge_env([], {})[0].startswith("PATH=/usr/local/sbin:")


# --- image facts -----------------------------------------------------------------------------

INDEX = {
    "manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64"}},
    ]
}


def test_the_manifest_of_the_asked_platform_is_chosen() -> None:
    assert select_manifest(INDEX, "linux/arm64")["digest"] == "sha256:b"
    assert select_manifest(INDEX, "amd64")["digest"] == "sha256:a"


def test_a_missing_platform_names_what_the_image_has() -> None:
    only_amd64 = {"manifests": INDEX["manifests"][:1]}
    with pytest.raises(ContainerdError, match=r"no linux/arm64 manifest.*linux/amd64"):
        select_manifest(only_amd64, "linux/arm64")


@pytest.mark.parametrize("text", ["windows/amd64", "linux/riscv64", "a/b/c/d"])
def test_unsupported_platforms_are_refused_by_value(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        parse_platform(text)


PASSWD = "root:x:0:0::/root:/bin/sh\nedgemodel:x:10001:10001::/home/edgemodel:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nedgemodel:x:10001:\nvideo:x:44:\n"


@pytest.mark.parametrize(
    ("user", "ids"),
    [
        ("", (0, 0)),
        ("10001:10001", (10001, 10001)),
        ("10001", (10001, 10001)),
        ("edgemodel", (10001, 10001)),
        ("edgemodel:video", (10001, 44)),
        ("4242", (4242, 0)),
        ("4242:7", (4242, 7)),
    ],
)
def test_users_resolve_like_runc(user: str, ids: tuple[int, int]) -> None:
    assert resolve_user(user, PASSWD, GROUP) == ids


@pytest.mark.parametrize(("user", "named"), [("nobody", "nobody"), ("edgemodel:staff", "staff")])
def test_unknown_names_are_refused(user: str, named: str) -> None:
    with pytest.raises(ContainerdError, match=named):
        resolve_user(user, PASSWD, GROUP)


def test_arm64_cpuinfo_looks_like_an_arm64_kernel_wrote_it() -> None:
    text = arm64_cpuinfo(3)
    assert text.count("processor\t:") == 3
    assert "CPU implementer\t: 0x41" in text
    assert "Features\t: fp asimd" in text
    assert "vendor_id" not in text and "flags" not in text  # nothing x86 left
    with pytest.raises(ValueError, match="0"):
        arm64_cpuinfo(0)


def test_shim_sockets_are_where_containerd_16_puts_them() -> None:
    path = shim_socket(Path("/x/containerd.sock"), "ns", "c1")
    digest = hashlib.sha256(b"/x/containerd.sock/ns/c1").hexdigest()
    assert path == Path("/run/containerd/s") / digest
