"""Reproducibility of the image: the same commit and the same cached inputs (Debian bases,
wheels) give the same bytes.

A second `make image` re-assembles the archive from cached layers; a rebuild of every layer
from the same inputs into a fresh layer cache and another output file must give the same
index digest and a byte-identical archive. (Debian's archive moves on, so a *new* base cache
may differ later: the promise is "same commit + same cache", docs/architecture.md.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemodel_runtime.sources import sha256_file
from edgemodel_sandbox.image import build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first(
    runtime_image: build.BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> tuple[build.Source, build.BuiltImage]:
    """One snapshot of the project (edits made meanwhile cannot reach the builds) and its image,
    assembled through the shared cache like `make image`."""
    folder = tmp_path_factory.mktemp("repro")
    source = build.snapshot(folder / "src")
    return source, build.build_runtime(source=source, output=folder / "first.oci.tar")


def test_second_build_from_the_cache_is_identical(
    first: tuple[build.Source, build.BuiltImage], tmp_path: Path
) -> None:
    source, image = first
    again = build.build_runtime(source=source, output=tmp_path / "again.oci.tar")
    assert again.index_digest == image.index_digest
    assert again.ref == image.ref
    assert sha256_file(again.path) == sha256_file(image.path)


def test_rebuilding_every_layer_from_the_same_inputs_gives_the_same_index(
    first: tuple[build.Source, build.BuiltImage], tmp_path: Path
) -> None:
    source, image = first
    rebuilt = build.build_runtime(
        source=source, output=tmp_path / "out" / "rebuilt.oci.tar", layer_cache=tmp_path / "oci"
    )
    assert len(list((tmp_path / "oci" / "layers").iterdir())) == 5  # written again, not copied
    assert rebuilt.index_digest == image.index_digest
    assert sha256_file(rebuilt.path) == sha256_file(image.path)


def test_pause_image_rebuilds_identically(tmp_path: Path) -> None:
    first = build.ensure_pause_image()
    again = build.build_pause(output=tmp_path / "pause.oci.tar", layer_cache=tmp_path / "oci")
    assert again.index_digest == first.index_digest
    assert sha256_file(again.path) == sha256_file(first.path)
