"""A generative EdgeModel in the sandbox, end to end, with the real operator and Prometheus:

1. the README's example (examples/generative-edgemodel.yaml): the sandbox's Llama-shaped decoder
   (byte tokens, KV cache), compressed to int4-weight by real compression Jobs gated on
   next-token agreement and perplexity, is placed on an arm64 and an amd64 CPU node and becomes
   Ready;
2. tokens stream through each target's Service (its ready endpoints, as kube-proxy would pick
   them) as server-sent events, and equal a plain onnxruntime greedy loop on the very artifact
   the store holds; a text prompt goes through the decoder's tokenizer.json, which each pod
   fetched by digest beside the model (`serving.tokenizer: file`), and the streamed text is its
   decode of those tokens;
3. a new revision whose time to first token is far over `slo.timeToFirstTokenP95Ms` (a decoder
   with 28x the compute per token: its prefill of the prompt alone takes longer than the SLO) is
   rolled back by the canary analysis of that token histogram, while streaming clients see no
   failure and the stable revision keeps answering with the same tokens.

Intervals are the API's minimum (5 s), as in test_slo_loop.py, so the test spends its time on
what it checks.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from tokenizers import Tokenizer

from edgemodel_sandbox.decoder import TOKENIZER_FILE, DecoderConfig, build_decoder, ensure_decoder
from edgemodel_sandbox.load import Load
from tests.conftest import ROOT, Cluster
from tests.e2e.conftest import (
    IN_CLUSTER,
    Operator,
    _upload,
    describe_for,
    events,
    get_em,
    wait_for,
)
from tests.generation_support import greedy_reference, random_weights

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "generative-edgemodel.yaml"
INTERVAL = 5  # the API's minimum analysisIntervalSeconds
# Prefill of the 128-token prompt alone, one thread, 2 busy cores: the int4 decoder 4-8 ms, the
# slow one 70-110 ms; p95 under this test's streaming load on a loaded machine: 40-215 ms and
# 800-1500 ms. The canary fails only when over both this line and 1.2x the stable's p95, so
# the line sits low and the ratio between the two revisions decides.
TTFT_SLO_MS = 25.0
PROMPT_TOKENS = 128
NEW_TOKENS = 16
TEXT_PROMPT = "Permission is hereby granted, free of charge, to any person — «"
TARGETS = ("arm64-cpu", "amd64-cpu")
# The slow revision: the same layout and byte vocabulary, 4 layers of 3 M parameters that all
# read the first layer's weights: 28x the stable decoder's compute per token in a 13 MB file
# (a small file keeps its compression Jobs and pod start short).
SLOW = DecoderConfig(hidden=512, layers=4, intermediate=1408)


@dataclass(frozen=True)
class Decoders:
    """The decoder fixture and a slow variant, uploaded to the in-cluster store."""

    config: DecoderConfig
    model: tuple[str, str]  # uri, sha256
    evaluation: tuple[str, str]
    tokenizer: tuple[str, str]
    slow: tuple[str, str]
    prompt: list[int]


def slow_decoder(path: Path) -> Path:
    """SLOW with every layer reading layer 0's initializers (the per-layer constants included:
    they are the same values), so the file holds one layer's weights and runs all of them."""
    model = build_decoder(SLOW, random_weights(SLOW, seed=3))
    shared = re.compile(r"^layers\.\d+\.")
    for node in model.graph.node:
        node.input[:] = [shared.sub("layers.0.", name) for name in node.input]
    kept = [
        t
        for t in model.graph.initializer
        if not shared.match(t.name) or t.name.startswith("layers.0.")
    ]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def decoders(store_url: str, store_token: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = ensure_decoder()
    slow = slow_decoder(tmp_path_factory.mktemp("slow") / "slow.onnx")

    def stored(path: Path) -> tuple[str, str]:
        digest = _upload(store_url, path, store_token)
        return f"{IN_CLUSTER}/v1/artifacts/{digest}", digest

    evaluation = np.load(folder / "evaluation.npz")["input_ids"]
    return Decoders(
        DecoderConfig(**json.loads((folder / "decoder.json").read_text())["config"]),
        stored(folder / "model.onnx"),
        stored(folder / "evaluation.npz"),
        stored(folder / TOKENIZER_FILE),
        stored(slow),
        [int(t) for t in evaluation[0, :PROMPT_TOKENS]],
    )


def manifest(name: str, decoders: Decoders) -> dict[str, Any]:
    """The README's example on the uploaded decoder, with the test's SLOs, one replica per
    target, no autoscaling and the API's shortest rollout intervals."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["name"] = name
    spec = body["spec"]
    assert spec["compression"]["quantization"] == "int4-weight" and spec["serving"]["generative"]
    assert {t["arch"] for t in spec["targets"]} == {"arm64", "amd64"}
    spec["model"] = dict(zip(("uri", "sha256"), decoders.model, strict=True))
    gate = spec["compression"]["accuracyGate"]
    gate["evaluation"] = dict(zip(("uri", "sha256"), decoders.evaluation, strict=True))
    assert spec["serving"]["tokenizer"] == "file"
    spec["serving"]["tokenizerFile"] = dict(zip(("uri", "sha256"), decoders.tokenizer, strict=True))
    # The inter-token line far away: the rollback below is the time to first token's.
    spec["slo"] |= {"timeToFirstTokenP95Ms": TTFT_SLO_MS, "interTokenP95Ms": 1000}
    del spec["autoscaling"]
    for target in spec["targets"]:
        target["replicas"] = {"min": 1}
    spec["rollout"] = {
        "steps": [50, 100],
        "analysisIntervalSeconds": INTERVAL,
        "failureThreshold": 2,
        "postPromotionGuardSeconds": 0,
    }
    return body


def stream(
    address: str, model: str, prompt: list[int] | str, max_tokens: int
) -> list[dict[str, Any]]:
    """One generation over `/generate_stream` (token ids, or text through the pod's tokenizer):
    the server-sent events' documents, in order."""
    host, port = address.rsplit(":", 1)
    field = "text_input" if isinstance(prompt, str) else "input_ids"
    body = json.dumps({field: prompt, "parameters": {"max_tokens": max_tokens}})
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", f"/v2/models/{model}/generate_stream", body=body)
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{address}: {response.status} {response.read()[:200]!r}")
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        documents = []
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data: "):
                documents.append(json.loads(line[len("data: ") :]))
        return documents
    finally:
        connection.close()


@dataclass
class Streams(Load):
    """`Load`'s workers over a Service's ready endpoints, each generation a streamed one."""

    prompt: list[int] = field(default_factory=list)

    def _work(self, index: int) -> None:
        for _, address in self._turns(index):
            try:
                documents = stream(address, self.model, self.prompt, 4)
                if documents[-1].get("finish_reason") != "length" or len(documents) != 4:
                    raise RuntimeError(f"{address}: malformed stream {documents}"[:300])
            except Exception as exc:  # every failure counts; the test decides what is allowed
                with self._lock:
                    self.failed += 1
                    self.errors.append(f"{exc}"[:300])
            else:
                with self._lock:
                    self.ok += 1
            time.sleep(self.pause_s)


def streams(cluster: Cluster, ns: str, service: str, model: str, prompt: list[int]) -> Streams:
    kubectl = lambda *args: cluster.kubectl(*args, check=False)  # noqa: E731
    load = Streams(kubectl, ns, service, model, np.zeros(1), workers=2, pause_s=0.05, prompt=prompt)
    load.start()
    return load


def ready_endpoints(cluster: Cluster, ns: str, service: str) -> list[str]:
    """`address:port` of the Service's ready http endpoints, from its EndpointSlices."""
    selector = f"kubernetes.io/service-name={service}"
    out = cluster.kubectl("get", "endpointslices", "-n", ns, "-l", selector, "-o", "json").stdout
    found = []
    for item in json.loads(out)["items"]:
        port = next((p["port"] for p in item.get("ports") or [] if p.get("name") == "http"), None)
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") and port:
                found += [f"{address}:{port}" for address in endpoint["addresses"]]
    return sorted(found)


def one_endpoint(cluster: Cluster, ns: str, service: str) -> Any:
    """A wait_for check: the Service's one ready endpoint, once it has exactly one."""

    def check() -> str | None:
        found = ready_endpoints(cluster, ns, service)
        return found[0] if len(found) == 1 else None

    return check


def ready(cluster: Cluster, ns: str, name: str) -> Any:
    def check() -> Any:
        body = get_em(cluster, ns, name)
        status = body.get("status") or {}
        current = status.get("observedGeneration") == body["metadata"]["generation"]
        return body if status.get("phase") == "Ready" and current else None

    return check


def fetch_artifact(store_url: str, digest: str, path: Path) -> Path:
    with urllib.request.urlopen(f"{store_url}/v1/artifacts/{digest}", timeout=30) as response:
        path.write_bytes(response.read())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    return path


def node_arch(cluster: Cluster, node: str) -> str:
    labels = json.loads(cluster.kubectl("get", "node", node, "-o", "json").stdout)["metadata"]
    return str(labels["labels"]["kubernetes.io/arch"])


def stream_checks(cluster: Cluster, ns: str, name: str, decoders: Decoders, artifact: Path) -> None:
    """Each target on a node of its arch, streaming through its Service what a greedy loop on
    `artifact` gives, for token ids and for TEXT_PROMPT through the fixture's tokenizer.json."""
    expected = greedy_reference(artifact, decoders.prompt, NEW_TOKENS, decoders.config)
    tokenizer = Tokenizer.from_file(str(ensure_decoder() / TOKENIZER_FILE))
    prompt = tokenizer.encode(TEXT_PROMPT).ids
    from_text = greedy_reference(artifact, prompt, NEW_TOKENS, decoders.config)
    selector = f"edgemodel.dev/name={name},app.kubernetes.io/component=runtime"
    pods = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    placed = {
        p["metadata"]["labels"]["edgemodel.dev/target"]: node_arch(cluster, p["spec"]["nodeName"])
        for p in json.loads(pods)["items"]
    }
    assert placed == {"arm64-cpu": "arm64", "amd64-cpu": "amd64"}, placed
    for target in placed:
        address = wait_for("an endpoint", one_endpoint(cluster, ns, f"{name}-{target}"), 30)
        documents = stream(address, name, decoders.prompt, NEW_TOKENS)
        assert [d["output_ids"][0] for d in documents] == expected, target
        assert [d["index"] for d in documents] == list(range(NEW_TOKENS))
        assert documents[-1]["finish_reason"] == "length"
        text = "".join(d["text_output"] for d in documents)
        assert text == bytes(expected).decode("utf-8", errors="replace")
        documents = stream(address, name, TEXT_PROMPT, NEW_TOKENS)
        assert [d["output_ids"][0] for d in documents] == from_text, target
        assert "".join(d["text_output"] for d in documents) == tokenizer.decode(from_text)


def roll_out_slow(
    cluster: Cluster, ns: str, name: str, decoders: Decoders, operator: Operator
) -> tuple[dict[str, Any], list[Streams]]:
    """The slow revision applied under streaming load on both targets, until it is rolled
    back: the EdgeModel's status then, and the (stopped) loads."""
    loads = [streams(cluster, ns, f"{name}-{t}", name, decoders.prompt) for t in TARGETS]
    try:
        uri, sha = decoders.slow
        patch = {
            "spec": {
                "model": {"uri": uri, "sha256": sha},
                "compression": {"quantization": "none", "blockSize": None, "accuracyGate": None},
            }
        }
        cluster.kubectl("patch", "em", name, "-n", ns, "--type=merge", "-p", json.dumps(patch))
        canary = wait_for(
            "the canary",
            lambda: (get_em(cluster, ns, name).get("status") or {}).get("canaryRevision"),
            180,
            on_fail=describe_for(cluster, ns, name, operator),
        )

        def rolled_back() -> Any:
            status = get_em(cluster, ns, name).get("status") or {}
            return status if (status.get("lastRollback") or {}).get("from") == canary else None

        status = wait_for(
            "the rollback", rolled_back, 120, on_fail=describe_for(cluster, ns, name, operator)
        )
    finally:
        for load in loads:
            load.stop()
    return status, loads


def test_generative_model_streams_on_arm64_and_amd64_and_a_slow_canary_is_rolled_back(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    decoders: Decoders,
    store_url: str,
    tmp_path: Path,
) -> None:
    ns, name = namespace, "chat"
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest(name, decoders)))
    body = wait_for(
        "Ready", ready(cluster, ns, name), 300, on_fail=describe_for(cluster, ns, name, operator)
    )
    stable = body["status"]["stableRevision"]

    # Real int4-weight compression per CPU variant, gated as a language model; one artifact
    # serves amd64 and arm64.
    records = {r["variant"]: r for r in body["status"]["revisions"] if r["revision"] == stable}
    assert set(records) == {"arm64", "amd64"}, records
    for record in records.values():
        assert record["result"] == "passed" and record["mode"] == "int4-weight", record
        assert record["ratio"] <= 0.30, record
    (digest,) = {record["artifactDigest"] for record in records.values()}
    artifact = fetch_artifact(store_url, digest, tmp_path / "int4.onnx")
    stream_checks(cluster, ns, name, decoders, artifact)
    expected = greedy_reference(artifact, decoders.prompt, NEW_TOKENS, decoders.config)

    status, loads = roll_out_slow(cluster, ns, name, decoders, operator)
    assert status["lastRollback"]["to"] == stable and status["stableRevision"] == stable
    failed = [c for c in status["rollout"]["canary"]["history"] if c["outcome"] == "Failed"]
    assert failed and all("time to first token" in c["detail"] for c in failed), failed
    assert "RolledBack" in [e["reason"] for e in events(cluster, ns, name)]
    assert all(load.failed == 0 and load.ok > 0 for load in loads), [
        (load.ok, load.errors[:3]) for load in loads
    ]
    # The stable revision, alone again behind the Service, still streams the same tokens.
    address = wait_for(
        "the canary's endpoint gone", one_endpoint(cluster, ns, f"{name}-amd64-cpu"), 60
    )
    documents = stream(address, name, decoders.prompt, NEW_TOKENS)
    assert [d["output_ids"][0] for d in documents] == expected
