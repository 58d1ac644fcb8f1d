"""The wheel lock (runtime_image/requirements-*.txt): it covers every runtime dependency of
pyproject.toml with a version the specifier allows, pins one version for both platforms with
each platform's wheel hash, and the GPU lock is the CPU lock with onnxruntime-gpu swapped in."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from edgemodel_sandbox.image import lock


def test_lock_covers_pyprojects_runtime_dependencies() -> None:
    pins = lock.parse(lock.RUNTIME_LOCK.read_text())
    for text in lock.pyproject_dependencies():
        requirement = Requirement(text)
        pin = pins[lock.canonical(requirement.name)]
        assert requirement.specifier.contains(pin.version, prereleases=True), (text, pin)
    for extra in ("pytest", "mypy", "ruff", "scikit-learn", "nvidia-pytriton"):
        assert extra not in pins  # test/dev/bench extras stay out of the image


def test_native_distributions_carry_a_wheel_hash_per_platform() -> None:
    pins = lock.parse(lock.RUNTIME_LOCK.read_text())
    for name in ("onnxruntime", "numpy", "grpcio", "aiohttp", "pyyaml", "protobuf"):
        assert len(pins[name].hashes) == 2, name
    assert len(pins["kopf"].hashes) == 1  # pure Python: one wheel for both


def test_gpu_lock_swaps_onnxruntime_and_keeps_the_cpu_versions() -> None:
    cpu = lock.parse(lock.RUNTIME_LOCK.read_text())
    gpu = lock.parse(lock.GPU_LOCK.read_text())
    assert "onnxruntime" not in gpu
    wanted = next(r for r in lock.pyproject_dependencies() if r.startswith("onnxruntime"))
    assert Requirement(wanted).specifier.contains(gpu["onnxruntime-gpu"].version)
    assert "nvidia-cuda-runtime" in gpu  # CUDA and cuDNN come as PyPI wheels
    assert any(name.startswith("nvidia-cudnn") for name in gpu)
    for name, pin in cpu.items():
        if name in gpu:
            assert gpu[name].version == pin.version, name


def test_malformed_lock_lines_are_named() -> None:
    with pytest.raises(lock.LockError, match="lock line 2"):
        lock.parse("numpy==2.0 --hash=sha256:" + "0" * 64 + "\nnumpy>=2\n")
    with pytest.raises(lock.LockError, match="numpy has no --hash"):
        lock.parse("numpy==2.0\n")


def test_platforms_must_agree_on_versions() -> None:
    amd = {"numpy": lock.Pin("numpy", "2.0", ("a",))}
    arm = {"numpy": lock.Pin("numpy", "1.26", ("b",))}
    with pytest.raises(lock.LockError, match="numpy resolves to different versions"):
        lock.merge({"amd64": amd, "arm64": arm})
    merged = lock.merge({"amd64": amd, "arm64": {"numpy": lock.Pin("numpy", "2.0", ("b",))}})
    assert merged["numpy"].hashes == ("a", "b")
