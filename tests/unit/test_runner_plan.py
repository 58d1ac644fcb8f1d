"""The pod runner's pure translation of pod specs into launch plans: `$(VAR)` expansion,
path rewriting, environment, image -> argv, probes and volumes."""

from __future__ import annotations

from typing import Any

import pytest

from edgemodel_sandbox.runner import dns, plan

LAYOUT = plan.Layout(
    pod_dir="/state/pods/ns_p_uid",
    python="/venv/bin/python",
    triton=plan.Triton("/site/pytriton/tritonserver/bin/tritonserver", "/site/backends"),
    base_env={"PATH": "/venv/bin:/usr/bin", "HOME": "/root"},
)
RUNTIME = "ghcr.io/edgemodel/runtime:0.1.0"


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "uid-1",
            "labels": {"app": "digits"},
            "annotations": {"edgemodel.dev/revision": "r1"},
        },
        "spec": {"nodeName": "edge-arm64-0", "containers": list(containers), **spec},
    }


def one(container: dict[str, Any], **kwargs: Any) -> plan.ContainerPlan:
    options: dict[str, Any] = {
        "pod_ip": "10.200.0.7",
        "volume_dirs": {},
        "objects": {},
        "layout": LAYOUT,
        **kwargs,
    }
    p = plan.plan_pod(pod(container), **options)
    return p.containers[0]


# ------------------------------------------------------------------ expansion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)z", "x1y2z"),
        ("$$(A)", "$(A)"),
        ("$(MISSING)", "$(MISSING)"),
        ("$A", "$A"),
        ("$", "$"),
        ("a$", "a$"),
        ("$(", "$("),
        ("$(A", "$(A"),
        ("$$", "$"),
        ("$$$(A)", "$1"),
        ("--host=$(POD_IP)", "--host=10.0.0.1"),
        ("", ""),
    ],
)
def test_expand_follows_the_kubelet(text: str, expected: str) -> None:
    assert plan.expand(text, {"A": "1", "B": "2", "POD_IP": "10.0.0.1"}) == expected


# ------------------------------------------------------------------ paths

MOUNTS = [
    plan.Mount("/data", "/h/data"),
    plan.Mount("/data/models", "/h/models"),
    plan.Mount("/dev/termination-log", "/h/term"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/data", "/h/data"),
        ("/data/", "/h/data/"),
        ("/data/x.onnx", "/h/data/x.onnx"),
        ("/data/models/m.onnx", "/h/models/m.onnx"),  # the longest mount wins
        ("/database", "/database"),  # a prefix of a name is not a mount
        ("--output=/data/out", "--output=/h/data/out"),
        ("file:///data/models/m.onnx", "file:///h/models/m.onnx"),
        ("a,/data/b", "a,/h/data/b"),
        ("/dev/termination-log", "/h/term"),
        ("/other/data", "/other/data"),
        ("relative/data", "relative/data"),
        ("http://host/data/x", "http://host/data/x"),
    ],
)
def test_rewrite_paths(text: str, expected: str) -> None:
    assert plan.rewrite_paths(text, MOUNTS) == expected


def test_rewrite_paths_without_mounts_is_identity() -> None:
    assert plan.rewrite_paths("/data/x", []) == "/data/x"


def test_container_mounts_apply_sub_path_and_report_missing() -> None:
    container = {
        "volumeMounts": [
            {"name": "a", "mountPath": "/a/"},
            {"name": "a", "mountPath": "/b", "subPath": "sub/dir"},
            {"name": "nope", "mountPath": "/c"},
        ]
    }
    mounts, missing = plan.container_mounts(container, {"a": "/h/a"})
    assert mounts == [plan.Mount("/a", "/h/a"), plan.Mount("/b", "/h/a/sub/dir")]
    assert missing == ["nope"]


# ------------------------------------------------------------------ env


def test_env_values_field_refs_and_expansion_in_order() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel", "serve"],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "REV",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.annotations['edgemodel.dev/revision']"}
                },
            },
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "URL", "value": "http://$(POD_IP):8000/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "EMPTY"},
        ],
    }
    env = plan.container_env(pod(container), container, "10.200.0.7", {})
    assert env == {
        "POD_IP": "10.200.0.7",
        "NODE": "edge-arm64-0",
        "NAME": "p",
        "NS": "ns",
        "UID": "uid-1",
        "APP": "digits",
        "REV": "r1",
        "HOST": "127.0.0.1",
        "URL": "http://10.200.0.7:8000/$(LATER)",  # only earlier variables expand
        "LATER": "x",
        "EMPTY": "",
    }


@pytest.mark.parametrize(
    ("resources", "ref", "expected"),
    [
        ({"limits": {"cpu": "2"}}, {"resource": "limits.cpu"}, "2"),
        ({"limits": {"cpu": "500m"}}, {"resource": "limits.cpu"}, "1"),  # rounded up
        ({"limits": {"cpu": "1500m"}}, {"resource": "limits.cpu", "divisor": "1m"}, "1500"),
        ({"limits": {"memory": "1Gi"}}, {"resource": "limits.memory", "divisor": "1Mi"}, "1024"),
        ({"limits": {"cpu": "3"}}, {"resource": "requests.cpu"}, "3"),  # request = limit
        ({}, {"resource": "limits.cpu"}, "2"),  # node allocatable
    ],
)
def test_resource_field_refs(resources: dict[str, Any], ref: dict[str, str], expected: str) -> None:
    assert plan.resource_value({"resources": resources}, ref) == expected


def test_config_map_and_secret_references() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel"],
        "envFrom": [
            {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
            {"secretRef": {"name": "gone", "optional": True}},
        ],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "no", "optional": True}},
            },
        ],
    }
    objects = {("configmaps", "cm"): {"a": "1"}, ("secrets", "s"): {"token": "t0k"}}
    assert plan.referenced_objects(pod(container)) == {
        ("configmaps", "cm"),
        ("secrets", "gone"),
        ("secrets", "s"),
    }
    env = plan.container_env(pod(container), container, "10.200.0.7", objects)
    assert env == {"CM_a": "1", "TOKEN": "t0k"}
    missing = {**container, "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "z"}}}]}
    result = one(missing, objects=objects)
    assert result.waiting_reason == plan.CONFIG_ERROR and "not found" in result.waiting_message


def test_unsupported_field_ref_is_a_config_error() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel"],
        "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}],
    }
    assert one(container).waiting_reason == plan.CONFIG_ERROR


# ------------------------------------------------------------------ argv


@pytest.mark.parametrize(
    ("image", "command", "args", "argv"),
    [
        (
            RUNTIME,
            ["edgemodel", "serve"],
            ["m.onnx", "--name=x"],
            ("/venv/bin/python", "-m", "edgemodel_cli.main", "serve", "m.onnx", "--name=x"),
        ),
        (
            "registry.local/anything:1",
            ["/usr/local/bin/edgemodel", "compress"],
            [],
            ("/venv/bin/python", "-m", "edgemodel_cli.main", "compress"),
        ),
        (RUNTIME, [], ["serve"], ("/venv/bin/python", "-m", "edgemodel_cli.main", "serve")),
        (
            "nvcr.io/nvidia/tritonserver:24.08-py3",
            ["tritonserver"],
            ["--model-repository=/models"],
            (
                "/site/pytriton/tritonserver/bin/tritonserver",
                "--model-repository=/models",
                "--backend-directory=/site/backends",
            ),
        ),
        (
            "nvcr.io/nvidia/tritonserver:24.08-py3",
            [],
            ["tritonserver", "--backend-directory=/b"],
            ("/site/pytriton/tritonserver/bin/tritonserver", "--backend-directory=/b"),
        ),
    ],
)
def test_runnable_images(
    image: str, command: list[str], args: list[str], argv: tuple[str, ...]
) -> None:
    assert plan.translate_argv(image, command, args, LAYOUT) == (argv, "")


@pytest.mark.parametrize(
    ("image", "command"),
    [
        ("busybox:1.36", ["sleep", "1"]),
        (RUNTIME, ["python3", "-c", "print()"]),
        ("nvcr.io/nvidia/tritonserver:24.08-py3", ["bash"]),
        ("nginx", []),
    ],
)
def test_other_images_cannot_run(image: str, command: list[str]) -> None:
    argv, why = plan.translate_argv(image, command, [], LAYOUT)
    assert argv == () and why
    result = one({"name": "c", "image": image, "command": command})
    assert not result.runnable and result.waiting_reason == plan.NOT_RUNNABLE
    assert result.waiting_message


def test_triton_without_the_wheel_cannot_run() -> None:
    layout = plan.Layout(pod_dir="/p", python="/py", triton=None)
    argv, why = plan.translate_argv(
        "nvcr.io/nvidia/tritonserver:24.08-py3", ["tritonserver"], [], layout
    )
    assert argv == () and "nvidia-pytriton" in why


def test_plan_expands_rewrites_and_resolves_later_services() -> None:
    container = {
        "name": "server",
        "image": RUNTIME,
        "command": ["edgemodel", "serve"],
        "args": [
            "/models/m.onnx",
            "--host=$(POD_IP)",
            "--source=http://store.edge.svc.cluster.local:8080/m",
            "--log=$(LOG)",
        ],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LOG", "value": "/dev/termination-log"},
            {"name": "CACHE", "value": "/cache/x"},
        ],
        "volumeMounts": [
            {"name": "models", "mountPath": "/models"},
            {"name": "cache", "mountPath": "/cache"},
        ],
        "workingDir": "/models",
    }
    result = one(container, volume_dirs={"models": "/h/models", "cache": "/h/cache"})
    term = "/state/pods/ns_p_uid/containers/server/termination-log"
    assert result.argv == (
        "/venv/bin/python",
        "-m",
        "edgemodel_cli.main",
        "serve",
        "/h/models/m.onnx",
        "--host=10.200.0.7",
        "--source=http://store.edge.svc.cluster.local:8080/m",
        f"--log={term}",
    )
    assert result.env["CACHE"] == "/h/cache/x"
    assert result.env["LOG"] == term
    assert result.env["PATH"] == "/venv/bin:/usr/bin"  # the base env is kept
    assert result.env["HOSTNAME"] == "p"
    assert result.cwd == "/h/models"
    assert result.termination_file == term
    assert result.services == (dns.ServiceRef("store", "edge", 8080, "http"),)


def test_host_paths_of_the_interpreter_are_never_rewritten() -> None:
    layout = plan.Layout(pod_dir="/p", python="/work/venv/bin/python", triton=None)
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel", "compress", "/work/in.onnx"],
        "volumeMounts": [{"name": "w", "mountPath": "/work"}],
    }
    result = one(container, volume_dirs={"w": "/h/w"}, layout=layout)
    assert result.argv[:4] == ("/work/venv/bin/python", "-m", "edgemodel_cli.main", "compress")
    assert result.argv[4] == "/h/w/in.onnx"


def test_working_dir_outside_mounts_gets_a_private_folder() -> None:
    container = {"name": "c", "image": RUNTIME, "command": ["edgemodel"], "workingDir": "/app"}
    assert one(container).cwd == "/state/pods/ns_p_uid/containers/c/rootfs/app"
    assert one({**container, "workingDir": ""}).cwd == "/state/pods/ns_p_uid/containers/c"


def test_missing_volume_keeps_the_container_creating() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel"],
        "volumeMounts": [{"name": "claim", "mountPath": "/data"}],
    }
    result = one(container)
    assert result.waiting_reason == "ContainerCreating" and "claim" in result.waiting_message


def test_termination_policy_and_pod_settings() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "terminationMessagePath": "/tmp/msg",
    }
    p = plan.plan_pod(
        pod(container, restartPolicy="OnFailure", terminationGracePeriodSeconds=5),
        pod_ip="10.200.0.7",
        volume_dirs={},
        objects={},
        layout=LAYOUT,
    )
    assert p.restart_policy == "OnFailure" and p.grace_seconds == 5.0
    assert p.containers[0].fallback_to_logs
    defaults = plan.plan_pod(
        pod({"name": "c", "image": RUNTIME, "command": ["edgemodel"]}),
        pod_ip="10.200.0.7",
        volume_dirs={},
        objects={},
        layout=LAYOUT,
    )
    assert defaults.restart_policy == "Always" and defaults.grace_seconds == 30.0
    assert not defaults.containers[0].fallback_to_logs


def test_deletion_grace_period_wins_over_the_spec() -> None:
    p = pod({"name": "c", "image": RUNTIME, "command": ["edgemodel"]})
    p["metadata"]["deletionGracePeriodSeconds"] = 0
    planned = plan.plan_pod(p, pod_ip="1.2.3.4", volume_dirs={}, objects={}, layout=LAYOUT)
    assert planned.grace_seconds == 0.0


# ------------------------------------------------------------------ probes


def test_probes_resolve_named_ports_and_default_timings() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel", "serve"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {
            "httpGet": {
                "path": "/v2/health/ready",
                "port": "http",
                "httpHeaders": [{"name": "X", "value": "1"}],
            },
            "periodSeconds": 2,
            "failureThreshold": 1,
        },
        "livenessProbe": {"tcpSocket": {"port": 8000}, "initialDelaySeconds": 5},
        "startupProbe": {"exec": {"command": ["edgemodel", "--help"]}},
    }
    result = one(container)
    assert result.readiness == plan.Probe(
        kind="http",
        host="10.200.0.7",
        port=8000,
        path="/v2/health/ready",
        headers=(("X", "1"),),
        period=2.0,
        failure_threshold=1,
    )
    assert result.liveness == plan.Probe(kind="tcp", host="10.200.0.7", port=8000, initial_delay=5)
    assert result.startup is not None
    assert result.startup.command == ("/venv/bin/python", "-m", "edgemodel_cli.main", "--help")


def test_unknown_probe_port_is_a_config_error() -> None:
    container = {
        "name": "c",
        "image": RUNTIME,
        "command": ["edgemodel"],
        "readinessProbe": {"httpGet": {"port": "metrics"}},
    }
    assert one(container).waiting_reason == plan.CONFIG_ERROR


def test_init_containers_have_no_probes() -> None:
    container = {
        "name": "i",
        "image": RUNTIME,
        "command": ["edgemodel"],
        "readinessProbe": {"tcpSocket": {"port": 1}},
    }
    p = plan.plan_pod(
        pod({"name": "c", "image": RUNTIME, "command": ["edgemodel"]}, initContainers=[container]),
        pod_ip="1.2.3.4",
        volume_dirs={},
        objects={},
        layout=LAYOUT,
    )
    assert p.init_containers[0].init and p.init_containers[0].readiness is None


# ------------------------------------------------------------------ volumes


def test_volume_sources() -> None:
    volumes = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "claim", "persistentVolumeClaim": {"claimName": "store"}},
        {"name": "cache", "hostPath": {"path": "/var/cache/em", "type": "DirectoryOrCreate"}},
        {"name": "sock", "hostPath": {"path": "/run/x.sock", "type": "Socket"}},
        {"name": "cm", "configMap": {"name": "cm", "items": [{"key": "a", "path": "sub/a"}]}},
        {"name": "sec", "secret": {"secretName": "s"}},
        {
            "name": "token",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ]
            },
        },
        {"name": "other", "gitRepo": {"repository": "x"}},
    ]
    objects = {
        ("configmaps", "cm"): {"a": "1", "b": "2"},
        ("secrets", "s"): {"k": "v"},
        ("configmaps", "kube-root-ca.crt"): {"ca.crt": "PEM"},
    }
    sources = plan.volume_sources(pod(volumes=volumes), "/p", "/nodes/n1", objects)
    by_name = {s.name: s for s in sources}
    assert by_name["scratch"] == plan.VolumeSource("scratch", host_path="/p/volumes/scratch")
    assert by_name["claim"] == plan.VolumeSource("claim", claim="store")
    assert by_name["cache"].host_path == "/nodes/n1/var/cache/em" and not by_name["cache"].is_file
    assert by_name["sock"].is_file
    assert by_name["cm"].files == {"sub/a": b"1"}
    assert by_name["sec"].files == {"k": b"v"}
    assert by_name["token"].files == {"token": b"", "ca.crt": b"PEM", "namespace": b"ns"}
    assert by_name["other"].host_path == "/p/volumes/other"
    assert plan.referenced_objects(pod(volumes=volumes)) == set(objects)


def test_parse_quantity() -> None:
    assert plan.parse_quantity("250m") == 0.25
    assert plan.parse_quantity("2Ki") == 2048
    assert plan.parse_quantity("3") == 3
    with pytest.raises(Exception, match="bad quantity"):
        plan.parse_quantity("3X")
