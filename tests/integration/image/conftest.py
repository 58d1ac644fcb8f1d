"""Fixtures for the image tests: the runtime image (built or re-assembled from the cache, as
`make image` does) and a reader of its oci-archive.

The first run on a machine pays for the Debian bases (arm64 under qemu, ~10 min); later runs
reuse ${XDG_CACHE_HOME:-~/.cache}/edgemodel/image and take seconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from edgemodel_sandbox.image import build
from tests.integration.image.archive import ArchiveView


@pytest.fixture(scope="session")
def runtime_image() -> build.BuiltImage:
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (mmdebstrap --mode=root, binfmt for arm64)")
    return build.ensure_runtime_image()


@pytest.fixture(scope="session")
def archive(
    runtime_image: build.BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArchiveView]:
    # A private copy: a concurrent `make image` may replace build/image/ under the tests.
    copy = tmp_path_factory.mktemp("image") / runtime_image.path.name
    shutil.copyfile(runtime_image.path, copy)
    yield ArchiveView.read(copy)
    copy.unlink()
