"""How a generative model's tokenizer.json reaches its pods: `serving.tokenizer: file`.

The spec names the file by URI and digest (`serving.tokenizerFile`); every runtime pod gets an
init step that fetches it through the node cache, like the model, into
/models/tokenizer.json, and `edgemodel serve --tokenizer /models/tokenizer.json`. The API
refuses a file without `tokenizer: file` (and the other way round) and a URI the pod could
not fetch (only http(s): the pod mounts no source volumes). `edgemodel fetch --file-name`
places a fetched file under the name given.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgemodel_operator import builders
from edgemodel_operator.api import SpecError, parse_spec
from edgemodel_operator.revision import revision_of
from edgemodel_operator.settings import Settings

SHA = "b" * 64
TOKENIZER_SHA = "c" * 64
TOKENIZER_URI = f"http://edgemodel-artifacts.edgemodel-system.svc:8080/v1/artifacts/{TOKENIZER_SHA}"
FILE = {"uri": TOKENIZER_URI, "sha256": TOKENIZER_SHA}


def spec(serving: dict[str, Any]) -> Any:
    return parse_spec(
        {
            "model": {"uri": "https://models.example.com/lm.onnx", "sha256": SHA},
            "targets": [{"name": "arm", "arch": "arm64"}, {"name": "amd", "arch": "amd64"}],
            "serving": {"generative": True, **serving},
        }
    )


def pod_spec(parsed: Any, index: int = 0) -> dict[str, Any]:
    dep = builders.runtime_deployment(
        "chat", "ns", "uid", parsed, parsed.targets[index], revision_of(parsed), SHA, 1, Settings()
    )
    result: dict[str, Any] = dep["spec"]["template"]["spec"]
    return result


@pytest.mark.parametrize("index", [0, 1])
def test_every_pod_fetches_the_tokenizer_beside_the_model(index: int) -> None:
    pod = pod_spec(spec({"tokenizer": "file", "tokenizerFile": FILE}), index)
    names = [c["name"] for c in pod["initContainers"]]
    assert names[-2:] == ["fetch", "fetch-tokenizer"]
    fetch = pod["initContainers"][-1]
    args = fetch["args"]
    assert args[:3] == ["fetch", "--sha256", TOKENIZER_SHA]
    assert args[args.index("--uri") + 1] == TOKENIZER_URI
    assert args[args.index("--cache") + 1] == "/cache"
    assert args[args.index("--dest") + 1] == "/models"
    assert args[args.index("--file-name") + 1] == "tokenizer.json"
    assert fetch["volumeMounts"] == pod["initContainers"][-2]["volumeMounts"]
    assert fetch["securityContext"] == pod["initContainers"][-2]["securityContext"]
    server = pod["containers"][0]["args"]
    assert server[server.index("--tokenizer") + 1] == "/models/tokenizer.json"


@pytest.mark.parametrize("tokenizer", ["bytes", "none"])
def test_without_a_tokenizer_file_there_is_no_tokenizer_fetch(tokenizer: str) -> None:
    pod = pod_spec(spec({"tokenizer": tokenizer}))
    assert [c["name"] for c in pod["initContainers"]][-1] == "fetch"
    server = pod["containers"][0]["args"]
    assert server[server.index("--tokenizer") + 1] == tokenizer


@pytest.mark.parametrize(
    ("serving", "path"),
    [
        ({"tokenizer": "file"}, "spec.serving.tokenizerFile"),
        ({"tokenizer": "bytes", "tokenizerFile": FILE}, "spec.serving.tokenizerFile"),
        ({"tokenizerFile": FILE}, "spec.serving.tokenizerFile"),
        (
            {"tokenizer": "file", "tokenizerFile": {**FILE, "uri": "pvc://claim/t.json"}},
            "spec.serving.tokenizerFile.uri",
        ),
    ],
)
def test_the_api_refuses_a_tokenizer_file_it_cannot_use(serving: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as refused:
        spec(serving)
    assert refused.value.path == path


def fetch(tmp_path: Path, source: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return subprocess.run(
        [sys.executable, "-m", "edgemodel_cli.main", "fetch", "--sha256", digest,
         "--uri", f"file://{source}", "--cache", str(tmp_path / "cache"),
         "--dest", str(tmp_path / "models"), *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_fetch_places_a_file_under_the_name_given(tmp_path: Path) -> None:
    source = tmp_path / "t.json"
    source.write_text('{"model": {}}')
    result = fetch(tmp_path, source, "--file-name", "tokenizer.json")
    assert result.returncode == 0, result.stderr
    placed = tmp_path / "models" / "tokenizer.json"
    assert json.loads(result.stdout)["path"] == str(placed)
    assert placed.read_text() == '{"model": {}}'
    assert not (tmp_path / "models" / "model.onnx").exists()


@pytest.mark.parametrize("name", ["../tokenizer.json", "a/b", ".."])
def test_fetch_refuses_a_file_name_that_is_a_path(tmp_path: Path, name: str) -> None:
    source = tmp_path / "t.json"
    source.write_text("{}")
    result = fetch(tmp_path, source, "--file-name", name)
    assert result.returncode == 2
    assert "--file-name" in result.stderr
    assert not (tmp_path / "models").exists()
