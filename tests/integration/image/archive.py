"""Reads an oci-archive back from the tar alone (index, manifests, configs, layers) for the
image tests, and the revision label the tests expect."""

from __future__ import annotations

import gzip
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemodel_sandbox.image import build, oci


@dataclass
class ArchiveView:
    """What an oci-archive holds, read back from the tar alone."""

    path: Path
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: Path) -> ArchiveView:
        return cls(path, oci.read_archive(path))

    def blob(self, digest: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.files[f"blobs/sha256/{digest.split(':')[1]}"])
        return document

    @property
    def layout_index(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.files["index.json"])
        return document

    @property
    def index(self) -> dict[str, Any]:
        return self.blob(self.layout_index["manifests"][0]["digest"])

    def manifest(self, arch: str) -> dict[str, Any]:
        for entry in self.index["manifests"]:
            if entry["platform"]["architecture"] == arch:
                return self.blob(entry["digest"])
        raise KeyError(arch)

    def config(self, arch: str) -> dict[str, Any]:
        return self.blob(self.manifest(arch)["config"]["digest"])

    def layer_members(self, arch: str, number: int) -> dict[str, tarfile.TarInfo]:
        digest = self.manifest(arch)["layers"][number]["digest"]
        with tarfile.open(self.path) as outer:
            handle = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert handle is not None
            with gzip.open(handle) as plain, tarfile.open(fileobj=plain, mode="r|") as layer:
                return {member.name: member for member in layer}

    def layer_file(self, arch: str, number: int, name: str) -> bytes:
        digest = self.manifest(arch)["layers"][number]["digest"]
        with tarfile.open(self.path) as outer:
            handle = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert handle is not None
            with gzip.open(handle) as plain, tarfile.open(fileobj=plain, mode="r|") as layer:
                for member in layer:
                    if member.name == name:
                        data = layer.extractfile(member)
                        assert data is not None
                        return data.read()
        raise KeyError(name)

    def unpack(self, arch: str, destination: Path) -> None:
        """Applies the platform's layers in order (the layers add files only: no whiteouts)."""
        for layer in self.manifest(arch)["layers"]:
            with tarfile.open(self.path) as outer:
                handle = outer.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
                assert handle is not None
                with gzip.open(handle) as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
                    tar.extractall(destination, numeric_owner=True, filter="fully_trusted")


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=build.ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", *build.PROJECT_INPUTS)
    return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
