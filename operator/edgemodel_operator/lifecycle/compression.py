"""Owns the compression step of a pass: one artifact per variant of the desired revision.

Per variant: an artifact status already records (passed) or the store already holds is used
as is; otherwise a compression Job is asked for (only while the store is up) and its outcome
recorded in status.revisions — passed with its figures, or failed with its kind (failures.py),
the attempt it was and, for a transient failure, when to try again. Job names are fixed per
revision and variant, so a retry first deletes the failed Job and asks for the next attempt
on a later pass (annotation edgemodel.dev/attempt tells the attempts apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgemodel_operator import builders, labels
from edgemodel_operator.lifecycle.failures import FailureKind, backoff_seconds, classify
from edgemodel_operator.lifecycle.model import (
    Action,
    Apply,
    Delete,
    Desired,
    Event,
    JobObs,
    Observed,
)
from edgemodel_operator.revision import Variant, compression_plan, variants
from edgemodel_operator.timestamps import RFC3339, parse_rfc3339, rfc3339

MAX_REVISIONS_KEPT = 10
ATTEMPT_ANNOTATION = labels.ATTEMPT
STAMP = RFC3339


@dataclass
class Compression:
    """What the compression step found and asked for this pass."""

    revisions: tuple[Mapping[str, Any], ...]
    expected: int = 0  # variants the revision needs
    artifacts: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    compressing: list[str] = field(default_factory=list)  # "variant (mode)" still to come
    retrying: list[str] = field(default_factory=list)  # transient failures waiting out a backoff
    failures: list[str] = field(default_factory=list)  # permanent failures of this generation
    gate_failed: bool = False
    retry_in: float | None = None  # seconds until the earliest backoff ends
    actions: list[Action] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every variant has its artifact: the revision can be deployed."""
        return not (self.compressing or self.retrying) and len(self.artifacts) >= self.expected

    def wait(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


@dataclass(frozen=True)
class _Pass:
    desired: Desired
    observed: Observed
    now: datetime

    @property
    def stamp(self) -> str:
        return rfc3339(self.now)


def compress(
    revisions: tuple[Mapping[str, Any], ...], desired: Desired, observed: Observed, now: datetime
) -> Compression:
    """The artifacts of `desired.revision`, and the Jobs, deletions and Events still needed."""
    wanted = variants(desired.spec)
    out = Compression(revisions, expected=len(wanted))
    here = _Pass(desired, observed, now)
    jobs = {(j.revision, j.variant): j for j in observed.jobs}
    for variant in wanted:
        _variant(here, out, variant, jobs.get((desired.revision, variant)))
    return out


def find(
    revisions: tuple[Mapping[str, Any], ...], revision: str, variant: str
) -> Mapping[str, Any] | None:
    """The status record of one revision's variant, if any."""
    for record in revisions:
        if record.get("revision") == revision and record.get("variant") == variant:
            return record
    return None


def _variant(here: _Pass, out: Compression, variant: Variant, job: JobObs | None) -> None:
    rev = here.desired.revision
    known = find(out.revisions, rev, variant)
    if known is not None and known.get("result") == "passed" and known.get("artifactDigest"):
        out.artifacts[variant] = known
        return
    failed_before = known is not None and known.get("result") in ("failed", "gate-failed")
    if known is not None and failed_before and (job is None or job.attempt <= _attempts(known)):
        _after_failure(here, out, variant, known, job)
        return
    key = builders.artifact_key(rev, variant)
    if job is None and key in here.observed.artifacts:
        record = _record(here, variant, here.observed.artifacts[key], "passed")
        record["message"] = "found in the artifact store"
        _keep(out, variant, record, artifact=True)
        return
    if job is None:
        _start(here, out, variant, 1)
        return
    _job_outcome(here, out, variant, job)


def _job_outcome(here: _Pass, out: Compression, variant: Variant, job: JobObs) -> None:
    summary = job.summary
    if job.succeeded and summary and summary.get("artifactSha256"):
        record = _record(here, variant, summary, "passed")
        _keep(out, variant, record, artifact=True)
        out.actions.append(Event("Normal", "Compressed", compressed_message(variant, record)))
        return
    if not (job.failed or (job.succeeded and not summary)):
        out.compressing.append(_what(here, variant))
        return
    kind = classify(job.failure, job.gate_failed)
    message = job.failure or "compression Job failed without a message"
    record = _record(here, variant, summary, "gate-failed" if job.gate_failed else "failed")
    record.update(
        message=message[:1024],
        failure=kind.value,
        attempts=job.attempt,
        generation=here.desired.generation,
    )
    text = f"revision {here.desired.revision} variant {variant}: {message}"
    if kind is FailureKind.TRANSIENT:
        wait = backoff_seconds(job.attempt)
        record["retryAt"] = _at(here.now.timestamp() + wait)
        text = f"{text} (transient: attempt {job.attempt + 1} in {wait:.0f}s)"
    _keep(out, variant, record, artifact=False)
    reason = "AccuracyGateFailed" if job.gate_failed else "CompressionFailed"
    out.actions.append(Event("Warning", reason, text[:1024]))
    _after_failure(here, out, variant, record, job)


def _after_failure(
    here: _Pass, out: Compression, variant: Variant, known: Mapping[str, Any], job: JobObs | None
) -> None:
    """A recorded failure: hold it (permanent, same generation), wait out the backoff, or retry."""
    message = str(known.get("message") or known.get("result"))
    gate = known.get("result") == "gate-failed"
    kind = _kind(known, message, gate)
    generation = _int(known.get("generation"), here.desired.generation)
    new_generation = here.desired.generation > generation
    if kind is FailureKind.PERMANENT and not new_generation:
        out.failures.append(f"{variant}: {message}")
        out.gate_failed = out.gate_failed or gate
        return
    attempts = _attempts(known)
    left = _seconds(known.get("retryAt")) - here.now.timestamp()
    if not new_generation and left > 0:
        out.retrying.append(
            f"{variant}: attempt {attempts} failed ({message}); attempt {attempts + 1} "
            f"in {left:.0f}s"
        )
        out.wait(left)
        return
    if job is not None:
        # The failed Job holds the name the next attempt needs: remove it first.
        ns = here.desired.namespace
        out.actions.append(Delete("batch/v1", "Job", ns, job.name))
        out.compressing.append(_what(here, variant))
        return
    _start(here, out, variant, attempts + 1)
    if here.observed.store_ready:
        why = "new generation" if new_generation else "after a transient failure"
        out.actions.append(
            Event(
                "Normal",
                "CompressionRetried",
                f"revision {here.desired.revision} variant {variant}: attempt {attempts + 1} "
                f"({why})",
            )
        )


def _start(here: _Pass, out: Compression, variant: Variant, attempt: int) -> None:
    """Ask for the compression Job (while the store is up); the variant is compressing."""
    d = here.desired
    if here.observed.store_ready:
        manifest = builders.compression_job(
            d.name, d.namespace, d.uid, d.spec, d.revision, variant, d.settings
        )
        if attempt > 1:
            annotations = manifest["metadata"].setdefault("annotations", {})
            annotations[ATTEMPT_ANNOTATION] = str(attempt)
        out.actions.append(Apply(manifest))
    out.compressing.append(_what(here, variant))


def _what(here: _Pass, variant: Variant) -> str:
    return f"{variant} ({compression_plan(here.desired.spec, variant).mode})"


def _kind(known: Mapping[str, Any], message: str, gate: bool) -> FailureKind:
    try:
        return FailureKind(str(known.get("failure")))
    except ValueError:
        return classify(message, gate)  # recorded before failures had kinds


def _attempts(known: Mapping[str, Any]) -> int:
    return max(1, _int(known.get("attempts"), 1))


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _seconds(stamp: Any) -> float:
    try:
        return parse_rfc3339(str(stamp)).timestamp()
    except ValueError:
        return 0.0  # no (readable) retry time: due now


def _at(epoch: float) -> str:
    return rfc3339(epoch)


def _keep(out: Compression, variant: Variant, record: dict[str, Any], artifact: bool) -> None:
    out.revisions = upsert(out.revisions, record)
    if artifact:
        out.artifacts[variant] = record


def _record(
    here: _Pass, variant: str, summary: Mapping[str, Any] | None, result: str
) -> dict[str, Any]:
    summary = summary or {}
    record: dict[str, Any] = {
        "revision": here.desired.revision,
        "variant": variant,
        "result": result,
        "time": here.stamp,
    }
    for key, name in (("artifactSha256", "artifactDigest"), ("artifactUri", "artifactUri")):
        if summary.get(key):
            record[name] = summary[key]
    if summary.get("sizeBytes") is not None:
        record["sizeBytes"] = int(summary["sizeBytes"])
    if summary.get("ratio") is not None:
        record["ratio"] = float(summary["ratio"])
    if summary.get("mode"):
        record["mode"] = summary["mode"]
    accuracy = summary.get("accuracy")
    if isinstance(accuracy, Mapping) and accuracy:
        record["accuracy"] = dict(accuracy)
    return record


def upsert(
    records: tuple[Mapping[str, Any], ...], record: Mapping[str, Any]
) -> tuple[Mapping[str, Any], ...]:
    """`records` with `record` replacing the one of its revision and variant, newest last."""
    kept = [
        r
        for r in records
        if (r.get("revision"), r.get("variant")) != (record["revision"], record["variant"])
    ]
    kept.append(record)
    return tuple(kept[-MAX_REVISIONS_KEPT:])


def compressed_message(variant: str, record: Mapping[str, Any]) -> str:
    """One variant's artifact in a line: digest, size ratio, agreement."""
    parts = [f"variant {variant}: artifact {str(record.get('artifactDigest', ''))[:12]}"]
    if record.get("ratio") is not None:
        parts.append(f"size ratio {record['ratio']:.3f}")
    accuracy = record.get("accuracy") or {}
    if isinstance(accuracy, Mapping) and accuracy.get("agreement") is not None:
        parts.append(f"agreement {accuracy['agreement']}")
    return ", ".join(parts)


def artifacts_message(rev: str, artifacts: Mapping[str, Mapping[str, Any]]) -> str:
    """Every variant's artifact of revision `rev` in a line."""
    return f"revision {rev}: " + "; ".join(
        compressed_message(variant, record) for variant, record in sorted(artifacts.items())
    )
