"""The image spec's pure rules: platform names, pip's manylinux tags, the tag scheme and the
config every platform gets (edgemodel_sandbox.image.spec)."""

from __future__ import annotations

import pytest

from edgemodel_sandbox.image import spec

INFO = spec.ImageInfo(
    version="0.1.0",
    revision="c2c4cb35af46011c4fe2b1f5b043d41f6ef8c93e",
    source_date_epoch=1795622432,
)


def test_platform_accepts_debian_oci_and_machine_names() -> None:
    for name in ("arm64", "linux/arm64", "linux/arm64/v8", "aarch64"):
        assert spec.platform(name).oci == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert spec.platform("x86_64").oci == {"architecture": "amd64", "os": "linux"}
    with pytest.raises(spec.SpecError, match="unknown architecture 'armhf'"):
        spec.platform("armhf")


def test_pip_lists_the_newer_manylinux_tags_not_only_manylinux2014() -> None:
    args = spec.pip_target_args("/t", "aarch64")
    platforms = [args[i + 1] for i, arg in enumerate(args) if arg == "--platform"]
    for tag in (
        "manylinux_2_28_aarch64",
        "manylinux_2_27_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ):
        assert tag in platforms
    glibc = [int(tag.split("_")[2]) for tag in platforms if tag.startswith("manylinux_2_")]
    assert max(glibc) <= 36  # bookworm's glibc is 2.36
    assert args[:2] == ["--target", "/t"] and "--only-binary=:all:" in args
    assert args[args.index("--python-version") + 1] == "3.11"


def test_tag_is_version_and_short_commit_with_a_dirty_marker() -> None:
    assert spec.image_tag("0.1.0", INFO.revision) == "0.1.0-c2c4cb35af46"
    assert spec.image_tag("0.1.0", INFO.revision + "-dirty") == "0.1.0-c2c4cb35af46-dirty"
    assert INFO.ref == "edgemodel.local/runtime:0.1.0-c2c4cb35af46"
    with pytest.raises(spec.SpecError, match="'main' is not a git commit id"):
        spec.image_tag("0.1.0", "main")


def test_config_carries_the_runtime_contract() -> None:
    arm64 = spec.platform("arm64")
    config = spec.runtime_config(arm64, INFO, ["sha256:a"], ["step"], spec.IMAGE_TITLE)
    assert config["created"] == "2026-11-25T16:00:32Z"
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == INFO.revision
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:a"]}
    assert "variant" not in spec.runtime_config(spec.platform("amd64"), INFO, [], [], "t")
