"""Image pulling: what the chart is given reaches every pod the operator creates.

The operator's pull secrets and pull policy (`--image-pull-secret`, `--image-pull-policy`)
go on compression Jobs, runtime pods of both runtimes and the artifact store; each pull
secret is copied from the operator's namespace into the namespace the pods run in (a pod can
only use a Secret of its own namespace), never over a Secret the user made there, and only
rewritten when it changed. Bad flag values are refused with the value named.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from edgemodel_operator import builders
from edgemodel_operator import cli as operator_cli
from edgemodel_operator.api import parse_spec
from edgemodel_operator.revision import revision_of
from edgemodel_operator.settings import Settings

SHA = "b" * 64
PULLING = Settings(image_pull_secrets=("regcred", "mirror"), image_pull_policy="Always")


def spec() -> Any:
    return parse_spec(
        {
            "model": {"uri": "https://models.example.com/m.onnx", "sha256": SHA},
            "targets": [
                {"name": "cpu", "arch": "arm64"},
                {"name": "gpu", "arch": "amd64", "accelerator": "nvidia-gpu"},
                {
                    "name": "triton",
                    "arch": "amd64",
                    "accelerator": "nvidia-gpu",
                    "runtime": "triton",
                },
            ],
        }
    )


def every_pod(settings: Settings) -> dict[str, dict[str, Any]]:
    """name -> pod spec, for every kind of pod the operator writes."""
    s = spec()
    pods = {
        f"runtime-{t.name}": builders.runtime_deployment(
            "m", "ns", "u", s, t, revision_of(s), SHA, 1, settings
        )["spec"]["template"]["spec"]
        for t in s.targets
    }
    for variant in ("arm64", "gpu"):
        job = builders.compression_job("m", "ns", "u", s, "r1", variant, settings)
        pods[f"compression-{variant}"] = job["spec"]["template"]["spec"]
    store = [m for m in builders.artifact_store(settings) if m["kind"] == "Deployment"]
    pods["artifact-store"] = store[0]["spec"]["template"]["spec"]
    return pods


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [*pod.get("initContainers", []), *pod["containers"]]
    return found


def test_every_pod_pulls_with_the_secrets_and_policy_it_was_given() -> None:
    pods = every_pod(PULLING)
    assert set(pods) == {
        "runtime-cpu",
        "runtime-gpu",
        "runtime-triton",
        "compression-arm64",
        "compression-gpu",
        "artifact-store",
    }
    for name, pod in pods.items():
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}], name
        for container in containers(pod):
            assert container["imagePullPolicy"] == "Always", (name, container["name"])
    # The triton runtime pulls two images (runtime for fetch, Triton for the server): both.
    triton = containers(pods["runtime-triton"])
    assert {c["image"] for c in triton} == {PULLING.runtime_image, PULLING.triton_image}


def test_nothing_is_added_when_nothing_was_given() -> None:
    for name, pod in every_pod(Settings()).items():
        assert "imagePullSecrets" not in pod, name
        for container in containers(pod):
            assert "imagePullPolicy" not in container, (name, container["name"])


def secret(namespace: str, data: dict[str, str], *, ours: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "regcred", "namespace": namespace, "uid": "x"}
    if ours:
        meta["labels"] = {"app.kubernetes.io/managed-by": builders.MANAGER}
        meta["annotations"] = {builders.PULL_SECRET_SOURCE: "edgemodel-system/regcred"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "kubernetes.io/dockerconfigjson",
        "data": data,
    }


ONE = Settings(image_pull_secrets=("regcred",))
SOURCE = secret("edgemodel-system", {".dockerconfigjson": "e30="})


def test_a_pull_secret_is_copied_into_the_models_namespace() -> None:
    copies, problems = builders.pull_secret_copies(ONE, "team-a", {"regcred": SOURCE}, {})
    assert problems == []
    (copy,) = copies
    assert copy["metadata"]["name"] == "regcred" and copy["metadata"]["namespace"] == "team-a"
    assert copy["type"] == "kubernetes.io/dockerconfigjson"
    assert copy["data"] == {".dockerconfigjson": "e30="}
    assert copy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == builders.MANAGER
    assert copy["metadata"]["annotations"] == {
        builders.PULL_SECRET_SOURCE: "edgemodel-system/regcred"
    }
    # Nothing of the source's identity leaks into the copy (uid, resourceVersion...).
    assert set(copy["metadata"]) == {"name", "namespace", "labels", "annotations"}


def test_an_up_to_date_copy_is_left_and_a_stale_one_rewritten() -> None:
    current = builders.pull_secret_copy(SOURCE, "team-a")
    assert builders.pull_secret_copies(
        ONE, "team-a", {"regcred": SOURCE}, {"regcred": current}
    ) == (
        [],
        [],
    )
    stale = secret("team-a", {".dockerconfigjson": "b2xk"}, ours=True)
    copies, _ = builders.pull_secret_copies(ONE, "team-a", {"regcred": SOURCE}, {"regcred": stale})
    assert [c["data"] for c in copies] == [{".dockerconfigjson": "e30="}]  # rotation follows


def test_the_users_own_secret_of_that_name_is_never_overwritten() -> None:
    theirs = secret("team-a", {".dockerconfigjson": "dGhlaXJz"})
    assert builders.pull_secret_copies(ONE, "team-a", {"regcred": SOURCE}, {"regcred": theirs}) == (
        [],
        [],
    )


def test_the_operators_own_namespace_needs_no_copy() -> None:
    assert builders.pull_secret_copies(ONE, "edgemodel-system", {"regcred": SOURCE}, {}) == ([], [])


def test_a_missing_source_is_reported_by_name() -> None:
    copies, problems = builders.pull_secret_copies(ONE, "team-a", {"regcred": None}, {})
    assert copies == []
    (problem,) = problems
    assert "'regcred'" in problem and "'edgemodel-system'" in problem


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    operator_cli.add_arguments(parser)
    return parser.parse_args(list(flags))


def test_flags_become_settings() -> None:
    settings = operator_cli.settings_from(
        parse(
            "--image-pull-secret=regcred",
            "--image-pull-secret=mirror",
            "--image-pull-policy=IfNotPresent",
            "--artifact-port=9000",
            "--allow-gpu-provider-fallback",
        )
    )
    assert settings.image_pull_secrets == ("regcred", "mirror")
    assert settings.image_pull_policy == "IfNotPresent"
    assert settings.artifact_port == 9000
    assert settings.strict_gpu_providers is False
    defaults = operator_cli.settings_from(parse())
    assert defaults.image_pull_secrets == () and defaults.image_pull_policy == ""
    assert defaults.artifact_port == 8080 and defaults.strict_gpu_providers is True


def test_bad_flag_values_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--image-pull-policy=Sometimes")
    assert "Sometimes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'Reg_Cred'"):
        operator_cli.settings_from(parse("--image-pull-secret=Reg_Cred"))
    with pytest.raises(ValueError, match="70000"):
        operator_cli.settings_from(parse("--artifact-port=70000"))
    with pytest.raises(ValueError, match="'sometimes'"):
        Settings(image_pull_policy="sometimes")
