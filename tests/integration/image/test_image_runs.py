"""The image's root filesystem runs: unpacked from the archive's layers, `edgemodel --help`
works as uid 10001 through /usr/local/bin/edgemodel, Debian's python3 imports onnxruntime
and numpy and runs a model, and the serve tokenizer loads a tokenizer.json through the
`tokenizers` wheel and streams its text. arm64 runs under qemu-user (binfmt), with an arm64-looking
/proc/cpuinfo bound in (onnxruntime probes the CPU and qemu shows the host's x86 one)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgemodel_sandbox.decoder import TOKENIZER_FILE, byte_tokenizer_json
from edgemodel_sandbox.image import binfmt, lock
from tests.integration.image.archive import ArchiveView

pytestmark = pytest.mark.slow
ARM64_CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
    "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    for n in range(2)
)
SMOKE = (
    "import numpy, onnx, onnxruntime\n"
    "from onnx import TensorProto, helper\n"
    "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [2, 2])\n"
    "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [2, 2])\n"
    "graph = helper.make_graph([helper.make_node('MatMul', ['x', 'x'], ['y'])], 'g', [x], [y])\n"
    "model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])\n"
    "model.ir_version = 8\n"
    "session = onnxruntime.InferenceSession(model.SerializeToString(),"
    " providers=['CPUExecutionProvider'])\n"
    "out = session.run(None, {'x': numpy.array([[1, 2], [3, 4]], dtype=numpy.float32)})[0]\n"
    "print(onnxruntime.__version__, out.tolist())\n"
)

TOKENIZE = (
    "import sys, tokenizers\n"
    "from edgemodel_runtime.serve.tokenizer import StreamDecoder, load_tokenizer\n"
    "tokenizer = load_tokenizer(sys.argv[1])\n"
    "ids = tokenizer.encode('h\\u00e9\\u20ac')\n"
    "stream = StreamDecoder(tokenizer)\n"
    "pieces = [stream.push(token) for token in ids]\n"
    "print(tokenizers.__version__, ids, ascii(pieces))\n"
)


@pytest.fixture(scope="module", params=["amd64", "arm64"])
def rootfs(
    request: pytest.FixtureRequest, archive: ArchiveView, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    arch: str = request.param
    root = tmp_path_factory.mktemp(f"rootfs-{arch}")
    try:
        archive.unpack(arch, root)
        (root.parent / f"cpuinfo-{arch}").write_text(ARM64_CPUINFO)
        with binfmt.qemu_aarch64() if arch == "arm64" else contextlib.nullcontext():
            yield arch, root
    finally:
        shutil.rmtree(root)  # ~0.5 GiB per platform


# In a private mount namespace: /proc (and arm64's cpuinfo) vanish with the command.
CHROOT = (
    'root="$1"; cpuinfo="$2"; arch="$3"; shift 3; mount -t proc proc "$root/proc" '
    '&& { [ "$arch" != arm64 ] || mount --bind "$cpuinfo" "$root/proc/cpuinfo"; } '
    '&& exec chroot --userspec=10001:10001 "$root" env -i PYTHONDONTWRITEBYTECODE=1 '
    'PYTHONUNBUFFERED=1 HOME=/home/edgemodel PATH=/usr/local/bin:/usr/bin:/bin "$@"'
)


def chroot(arch: str, root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    cpuinfo = root.parent / f"cpuinfo-{arch}"
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            CHROOT,
            "sh",
            str(root),
            str(cpuinfo),
            arch,
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_edgemodel_help_runs_as_the_image_user(rootfs: tuple[str, Path]) -> None:
    arch, root = rootfs
    result = chroot(arch, root, "edgemodel", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "compress", "operator", "artifact-server"):
        assert command in result.stdout
    whoami = chroot(arch, root, "id", "-u")
    assert whoami.stdout.strip() == "10001"


def test_python_runs_an_onnx_model(rootfs: tuple[str, Path]) -> None:
    arch, root = rootfs
    result = chroot(arch, root, "python3", "-c", SMOKE)
    assert result.returncode == 0, result.stderr
    version, _, output = result.stdout.strip().partition(" ")
    assert version == lock.parse(lock.RUNTIME_LOCK.read_text())["onnxruntime"].version
    assert output == "[[7.0, 10.0], [15.0, 22.0]]"


def test_serve_streams_text_through_a_tokenizer_json(rootfs: tuple[str, Path]) -> None:
    arch, root = rootfs
    path = root / "tmp" / TOKENIZER_FILE
    path.write_text(byte_tokenizer_json())
    path.chmod(0o644)
    try:
        result = chroot(arch, root, "python3", "-c", TOKENIZE, f"/tmp/{TOKENIZER_FILE}")
    finally:
        path.unlink()
    assert result.returncode == 0, result.stderr
    version, _, rest = result.stdout.strip().partition(" ")
    assert version == lock.parse(lock.RUNTIME_LOCK.read_text())["tokenizers"].version
    assert rest == "[104, 195, 169, 226, 130, 172] ['h', '', '\\xe9', '', '', '\\u20ac']"
