"""A reconcile parses its EdgeModel's spec once per generation, not once per pass.

The API server bumps metadata.generation on every change of an EdgeModel's spec and never
for its status, so (uid, generation) names one spec; most passes (a pod became ready, a
status write came back) re-read the same one. `Runtime.spec_of` keeps the last parse per
EdgeModel; a new generation or a re-created EdgeModel (new uid) is parsed again, an invalid
spec raises every time and is never kept. See docs/architecture.md, "Reconcile cost".
"""

from __future__ import annotations

import pytest

from edgemodel_operator.api import SpecError
from edgemodel_operator.handlers import Runtime
from edgemodel_operator.settings import Settings

KEY = ("ns", "digits")
RAW = {
    "model": {"uri": "https://models.example.com/digits.onnx", "sha256": "3" * 64},
    "targets": [{"name": "arm", "arch": "arm64"}],
}


def test_the_same_generation_is_parsed_once() -> None:
    runtime = Runtime(settings=Settings())
    first = runtime.spec_of(KEY, "uid-1", 1, RAW)
    assert runtime.spec_of(KEY, "uid-1", 1, RAW) is first


def test_a_new_generation_or_uid_is_parsed_again() -> None:
    runtime = Runtime(settings=Settings())
    first = runtime.spec_of(KEY, "uid-1", 1, RAW)
    changed = {**RAW, "targets": [{"name": "x86", "arch": "amd64"}]}
    second = runtime.spec_of(KEY, "uid-1", 2, changed)
    assert [t.name for t in second.targets] == ["x86"]
    recreated = runtime.spec_of(KEY, "uid-2", 2, RAW)
    assert recreated is not second and [t.name for t in recreated.targets] == ["arm"]
    assert first is not recreated


def test_an_invalid_spec_raises_each_time_and_is_not_kept() -> None:
    runtime = Runtime(settings=Settings())
    runtime.spec_of(KEY, "uid-1", 1, RAW)
    for _ in range(2):
        with pytest.raises(SpecError):
            runtime.spec_of(KEY, "uid-1", 2, {"targets": []})
    assert [t.name for t in runtime.spec_of(KEY, "uid-1", 1, RAW).targets] == ["arm"]


def test_a_deleted_edgemodel_is_forgotten() -> None:
    runtime = Runtime(settings=Settings())
    first = runtime.spec_of(KEY, "uid-1", 1, RAW)
    runtime.forget(KEY)
    assert runtime.spec_of(KEY, "uid-1", 1, RAW) is not first
