"""Owns the deterministic OCI writer: layer tars, blobs, manifests, the index and the archive.

An OCI image layout is JSON plus content-addressed blobs, so it is written here directly rather
than through buildah (whose timestamps differ on every run). Determinism comes from: entries
sorted by name, mtimes clamped (or set) to a given epoch, owners numeric with empty names, no
PAX extras, gzip with mtime 0 at a fixed level, and JSON with sorted keys and no spaces. The
same inputs therefore give the same bytes, digests and index digest. Finished layers are cached
by a key of their inputs (`LayerCache`), so a warm build only re-checks and copies.
See docs/architecture.md ("Images without Docker").
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgemodel_sandbox.errors import EdgeModelSandboxError

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
GZIP_LEVEL = 6
CHUNK = 1 << 20
# Bump when the bytes a layer's inputs produce change (normalisation rules, tar format).
WRITER_FORMAT = 1


class OciError(EdgeModelSandboxError, RuntimeError):
    """A layout or archive that is not what this writer expects."""


@dataclass(frozen=True)
class Entry:
    """One file-system entry of a layer: its tar header and, for files, how to read the data."""

    info: tarfile.TarInfo
    open: Callable[[], IO[bytes]] | None = None


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (media type, digest, size, optional platform/annotations)."""

    media_type: str
    digest: str
    size: int

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer:
    """A finished layer blob: its compressed descriptor and its diff_id (uncompressed)."""

    digest: str
    size: int
    diff_id: str
    uncompressed_size: int

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(LAYER_TYPE, self.digest, self.size)


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def normalise(info: tarfile.TarInfo, epoch: int, *, clamp: bool) -> tarfile.TarInfo:
    """A copy of `info` with a stable name, mtime, owner names and no PAX extras.

    `clamp` keeps older mtimes (Debian's package files) and lowers newer ones to `epoch`;
    otherwise every mtime becomes `epoch` (files extracted or copied just now).
    """
    out = tarfile.TarInfo(normalise_name(info.name))
    out.type = info.type
    out.mode = stat.S_IMODE(info.mode)
    out.uid, out.gid = info.uid, info.gid
    out.uname = out.gname = ""
    out.mtime = min(int(info.mtime), epoch) if clamp else epoch
    out.linkname = info.linkname
    out.size = info.size if info.isreg() else 0
    out.devmajor, out.devminor = info.devmajor, info.devminor
    out.pax_headers = {}
    return out


def normalise_name(name: str) -> str:
    name = name.removeprefix("./").strip("/")
    if name.startswith("../") or "/../" in name or name == "..":
        raise OciError(f"layer entry escapes the root: {name!r}")
    return name


def entries_from_tar(
    path: Path, epoch: int, skip: Callable[[str], bool] = lambda _: False
) -> Iterator[Entry]:
    """Entries of an uncompressed tar (a mmdebstrap rootfs), normalised and sorted.

    Hard links are re-pointed so that, in sorted order, the first member of each link group
    carries the data and the others link to it.
    """
    archive = tarfile.open(path)  # noqa: SIM115 - kept open while the entries are read
    members = [m for m in archive.getmembers() if normalise_name(m.name)]
    by_name = {normalise_name(m.name): m for m in members}
    groups: dict[str, list[str]] = {}
    for member in members:
        if member.islnk():
            target = normalise_name(member.linkname)
            groups.setdefault(target, [target]).append(normalise_name(member.name))
    leader = {name: sorted(group)[0] for group in groups.values() for name in group}
    for name in sorted(by_name):
        if skip(name):
            continue
        member = by_name[name]
        source = by_name[leader.get(name, name)]
        if source.islnk():
            source = by_name[normalise_name(source.linkname)]
        info = normalise(member, epoch, clamp=True)
        if name in leader and leader[name] != name:
            info.type, info.linkname, info.size = tarfile.LNKTYPE, leader[name], 0
            yield Entry(info)
        elif source.isreg():
            info.type, info.linkname, info.size = tarfile.REGTYPE, "", source.size
            info.mode = stat.S_IMODE(source.mode)
            yield Entry(info, _member_reader(archive, source))
        else:
            yield Entry(info)


def _member_reader(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        handle = archive.extractfile(member)
        if handle is None:
            raise OciError(f"cannot read {member.name} from {archive.name!r}")
        return handle

    return opener


def entries_from_dir(
    root: Path, epoch: int, overrides: dict[str, tuple[int, int, int]] | None = None
) -> Iterator[Entry]:
    """Entries of a staged directory: every mtime set to `epoch`, owned by root, modes 0755
    (directories, executables) or 0644; `overrides` maps a name to its (uid, gid, mode).
    Symlinks are kept as links."""
    overrides = overrides or {}
    names: list[str] = []
    for folder, dirs, files in os.walk(root):
        for child in [*dirs, *files]:
            names.append(str((Path(folder) / child).relative_to(root)))
    for name in sorted(names):
        path = root / name
        info = tarfile.TarInfo(name)
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            info.mode = 0o777
        elif stat.S_ISDIR(st.st_mode):
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        elif stat.S_ISREG(st.st_mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        else:
            raise OciError(f"unsupported file type in a staged layer: {path}")
        info.uid = info.gid = 0
        if name in overrides:
            info.uid, info.gid, info.mode = overrides[name]
        info.uname = info.gname = ""
        info.mtime = epoch
        opener = (lambda p=path: p.open("rb")) if info.isreg() else None
        yield Entry(info, opener)


class _Digesting(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: IO[bytes] | gzip.GzipFile) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.sha.update(chunk)
        self.size += len(chunk)
        self.target.write(chunk)
        return len(chunk)


def write_layer(entries: Iterable[Entry], destination: Path) -> Layer:
    """Writes a gzip'd layer tar of `entries` (in the given order) to `destination`."""
    with destination.open("wb") as raw:
        compressed = _Digesting(raw)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0
        ) as zipped:
            plain = _Digesting(zipped)
            with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for entry in entries:
                    if entry.open is None:
                        tar.addfile(entry.info)
                    else:
                        with entry.open() as data:
                            tar.addfile(entry.info, data)
    return Layer(
        digest="sha256:" + compressed.sha.hexdigest(),
        size=compressed.size,
        diff_id="sha256:" + plain.sha.hexdigest(),
        uncompressed_size=plain.size,
    )


class BlobStore:
    """A content-addressed folder of blobs (the `blobs/sha256` of a layout, or the cache)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise OciError(f"not a sha256 digest: {digest!r}")
        return self.root / "sha256" / hexdigest

    def has(self, digest: str, size: int) -> bool:
        path = self.path(digest)
        return path.exists() and path.stat().st_size == size

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        descriptor = Descriptor(media_type, digest_of(data), len(data))
        path = self.path(descriptor.digest)
        if not self.has(descriptor.digest, descriptor.size):
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as f:
                f.write(data)
            Path(f.name).rename(path)  # atomic: concurrent builds write the same bytes
        return descriptor

    def put_json(self, document: dict[str, Any], media_type: str) -> Descriptor:
        return self.put_bytes(canonical_json(document), media_type)


class LayerCache:
    """Finished layers by input key: a record (digest, sizes) plus the blob in a `BlobStore`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = BlobStore(root / "blobs")

    def get(self, key: str) -> Layer | None:
        record = self.root / "layers" / f"{key}.json"
        if not record.exists():
            return None
        layer = Layer(**json.loads(record.read_text()))
        return layer if self.blobs.has(layer.digest, layer.size) else None

    def build(self, key: str, entries: Callable[[], Iterable[Entry]]) -> Layer:
        """The cached layer for `key`, writing it from `entries()` on a miss."""
        cached = self.get(key)
        if cached is not None:
            return cached
        staging = self.root / "tmp"
        staging.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=staging, delete=False) as handle:
            temp = Path(handle.name)
        try:
            layer = write_layer(entries(), temp)
            target = self.blobs.path(layer.digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            temp.rename(target)
        finally:
            temp.unlink(missing_ok=True)
        record = self.root / "layers" / f"{key}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(layer.__dict__, sort_keys=True))
        return layer


def key_of(*parts: Any) -> str:
    """A cache key for a layer: the hash of its inputs and of this writer's format."""
    return hashlib.sha256(canonical_json({"format": WRITER_FORMAT, "parts": parts})).hexdigest()


def manifest(config: Descriptor, layers: list[Layer]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.to_dict(),
        "layers": [layer.descriptor.to_dict() for layer in layers],
    }


def image_index(manifests: list[tuple[Descriptor, dict[str, str]]]) -> dict[str, Any]:
    """The multi-platform index: one manifest descriptor per platform dict."""
    return {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [desc.to_dict(platform=platform) for desc, platform in manifests],
    }


def layout_index(index: Descriptor, ref: str) -> dict[str, Any]:
    """index.json of the layout: one entry, the image index, named `ref` for ctr and k3s."""
    return {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [index.to_dict(annotations={REF_NAME: ref, CONTAINERD_NAME: ref})],
    }


def write_archive(
    destination: Path, store: BlobStore, index: Descriptor, ref: str, epoch: int
) -> None:
    """Writes an oci-archive (a tar of an OCI layout) holding `index` and every blob it reaches.

    Each blob's digest is re-checked while it is copied, so a damaged cache cannot slip in.
    """
    digests = _reachable(store, index)
    entries: list[tuple[tarfile.TarInfo, bytes | Path | None]] = []
    for name in ("blobs", "blobs/sha256"):
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        entries.append((info, None))
    for digest in sorted(digests):
        path = store.path(digest)
        info = tarfile.TarInfo(f"blobs/sha256/{digest.split(':')[1]}")
        info.size, info.mode = path.stat().st_size, 0o644
        entries.append((info, path))
    for name, data in (
        ("index.json", canonical_json(layout_index(index, ref))),
        ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
    ):
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        entries.append((info, data))
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=destination.name + ".", suffix=".partial", delete=False
    ) as handle:
        temp = Path(handle.name)
    try:
        _write_archive_tar(temp, entries, epoch)
        temp.chmod(0o644)
        temp.rename(destination)  # atomic: a reader sees the old archive or the new one
    finally:
        temp.unlink(missing_ok=True)


def _write_archive_tar(
    temp: Path, entries: list[tuple[tarfile.TarInfo, bytes | Path | None]], epoch: int
) -> None:
    with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in sorted(entries, key=lambda item: item[0].name):
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            if content is None:
                tar.addfile(info)
            elif isinstance(content, bytes):
                tar.addfile(info, io.BytesIO(content))
            else:
                with content.open("rb") as source:
                    checked = _CheckedReader(source, info.name.rsplit("/", 1)[1])
                    tar.addfile(info, checked)
                    checked.verify()


class _CheckedReader:
    """Reads a blob through and verifies its sha256 at the end."""

    def __init__(self, source: IO[bytes], expected: str) -> None:
        self.source, self.expected, self.sha = source, expected, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha.update(data)
        return data

    def verify(self) -> None:
        if self.sha.hexdigest() != self.expected:
            raise OciError(f"cached blob sha256:{self.expected} is damaged; delete it and rebuild")


def _reachable(store: BlobStore, index: Descriptor) -> set[str]:
    found = {index.digest}
    document = json.loads(store.path(index.digest).read_bytes())
    for child in document.get("manifests", []):
        found.add(child["digest"])
        manifest_doc = json.loads(store.path(child["digest"]).read_bytes())
        found.add(manifest_doc["config"]["digest"])
        found.update(layer["digest"] for layer in manifest_doc["layers"])
    return found


def read_archive(path: Path) -> dict[str, bytes]:
    """Small members (index.json, oci-layout, JSON blobs) of an oci-archive, by name.

    Layer blobs are left out (they are large); read them with `open_blob`.
    """
    found: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isreg() and member.size < 1 << 20:
                handle = tar.extractfile(member)
                if handle is not None:
                    found[member.name] = handle.read()
    return found


def extract_blob(archive: Path, digest: str, destination: IO[bytes]) -> None:
    name = f"blobs/sha256/{digest.split(':')[1]}"
    with tarfile.open(archive) as tar:
        handle = tar.extractfile(name)
        if handle is None:
            raise OciError(f"{archive} has no blob {digest}")
        shutil.copyfileobj(handle, destination, CHUNK)
