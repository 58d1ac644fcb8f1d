"""Owns what `edgemodel publish` reads from a compression output and what it tells the operator.

Input: the `--output` directory of `edgemodel compress`, which holds exactly one publishable
artifact directory `<key>/` with `model.onnx` and `report.json` (names starting with a dot
are compress's temp dirs; a dir without model.onnx is a gate failure and is never published).
The report needs at least `{"artifact": {"sha256": "<64 hex>"}}`; every other figure is
optional here and read the way `edgemodel_runtime.compress.report`/`pipeline` write it.

Output: the summary, a compact JSON object the operator parses from the Job pod's termination
message (Kubernetes keeps at most 4096 bytes of it), schema `SUMMARY_SCHEMA`:

    {"schema", "revision", "artifactSha256", "artifactUri", "sizeBytes", "inputBytes",
     "ratio", "wireBytes", "wireRatio", "result", "mode", "target", "key",
     "accuracy": {"agreement", "accuracyOriginal", "accuracyCompressed", "accuracyDrop",
                  "cosine"} | null}

Numbers that the report lacks are null. Pure functions, apart from reading the directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemodel_runtime.artifacts.client import artifact_url
from edgemodel_runtime.artifacts.store import InvalidName, validate_revision, validate_sha256
from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

MODEL_FILE = "model.onnx"
REPORT_FILE = "report.json"
SUMMARY_SCHEMA = "edgemodel.dev/publish-summary/v1"
TERMINATION_LIMIT = 4096
_MAX_REPORT_BYTES = 4 << 20
_MAX_TEXT = 64  # strings copied from the report are capped so the summary stays bounded


class PublishError(EdgeModelRuntimeError, ValueError):
    """Bad input for publishing (missing or inconsistent artifact); one line."""

    failure = FailureKind.INVALID_INPUT


@dataclass(frozen=True)
class Artifact:
    """One compressed artifact ready to publish."""

    directory: Path
    model: Path
    report: dict[str, Any]
    sha256: str  # as the report states it; the caller checks it against the file


def find_artifact(output: Path) -> Artifact:
    """The single publishable `<key>/` under `output`; PublishError when zero or several."""
    if not output.is_dir():
        raise PublishError(f"{output}: not a directory")
    found = sorted(
        entry
        for entry in output.iterdir()
        if not entry.name.startswith(".")
        and entry.is_dir()
        and (entry / MODEL_FILE).is_file()
        and (entry / REPORT_FILE).is_file()
    )
    if not found:
        raise PublishError(
            f"{output}: no artifact directory with {MODEL_FILE} and {REPORT_FILE} "
            "(did compression fail its accuracy gate?)"
        )
    if len(found) > 1:
        names = ", ".join(entry.name for entry in found)
        raise PublishError(f"{output}: {len(found)} artifact directories ({names}); expected one")
    directory = found[0]
    report = load_report(directory / REPORT_FILE)
    return Artifact(directory, directory / MODEL_FILE, report, report_sha256(report))


def load_report(path: Path) -> dict[str, Any]:
    if path.stat().st_size > _MAX_REPORT_BYTES:
        raise PublishError(f"{path}: larger than {_MAX_REPORT_BYTES} bytes")
    try:
        report = json.loads(path.read_text(), parse_constant=lambda _name: None)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(report, dict):
        raise PublishError(f"{path}: the report must be a JSON object")
    return report


def report_sha256(report: dict[str, Any]) -> str:
    artifact = report.get("artifact")
    sha = artifact.get("sha256") if isinstance(artifact, dict) else None
    if not isinstance(sha, str):
        raise PublishError("report.json has no artifact.sha256")
    try:
        validate_sha256(sha)
    except InvalidName as exc:
        raise PublishError(f"report.json artifact.sha256: {exc}") from None
    result = report.get("result")
    if result is not None and result != "passed":
        raise PublishError(f"report.json result is {result!r}; only 'passed' is published")
    return sha


def check_revision(revision: str) -> str:
    try:
        return validate_revision(revision)
    except InvalidName as exc:
        raise PublishError(f"--revision: {exc}") from None


def _section(report: dict[str, Any], name: str) -> dict[str, Any]:
    value = report.get(name)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(value: Any) -> str | None:
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def summary(
    *, revision: str, server: str, sha256: str, size_bytes: int, report: dict[str, Any]
) -> dict[str, Any]:
    """The termination-message summary; PublishError if it cannot fit the 4096-byte limit."""
    sizes = _section(report, "sizes")
    settings = _section(report, "settings")
    accuracy = _section(report, "accuracy")
    value: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "revision": revision,
        "artifactSha256": sha256,
        "artifactUri": artifact_url(server, sha256),
        "sizeBytes": size_bytes,
        "inputBytes": _number(sizes.get("input_bytes")),
        "ratio": _number(sizes.get("ratio")),
        "wireBytes": _number(sizes.get("wire_bytes")),
        "wireRatio": _number(sizes.get("wire_ratio")),
        "result": _text(report.get("result")) or "passed",
        "mode": _text(settings.get("mode")),
        "target": _text(settings.get("target")),
        "key": _text(report.get("key")),
        "accuracy": {
            "agreement": _number(accuracy.get("agreement")),
            "accuracyOriginal": _number(accuracy.get("accuracy_original")),
            "accuracyCompressed": _number(accuracy.get("accuracy_compressed")),
            "accuracyDrop": _number(accuracy.get("accuracy_drop")),
            "cosine": _number(accuracy.get("cosine")),
        }
        if accuracy
        else None,
    }
    if len(dumps(value).encode()) > TERMINATION_LIMIT:
        # Everything but the server URL is bounded above, so only that can get here.
        raise PublishError(f"--server URL too long for a {TERMINATION_LIMIT}-byte summary")
    return value


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
