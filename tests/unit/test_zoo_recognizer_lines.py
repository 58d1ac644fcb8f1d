"""The zoo's recognizer lines: PP-OCR's pre-processing and reading text back (pure parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemodel_sandbox import zoo


def test_a_short_crop_is_resized_to_height_48_and_padded_with_zero() -> None:
    crop = np.full((20, 100, 3), 255, np.uint8)  # white: 1.0 once normalised
    line = zoo.rec_normalise(crop)
    assert line.shape == (3, 48, 320) and line.dtype == np.float32
    assert np.allclose(line[:, :, :240], 1.0)  # ceil(48 * 100 / 20) = 240 columns of text
    assert np.all(line[:, :, 240:] == 0.0)  # the rest is PP-OCR's zero padding


def test_a_long_crop_is_squeezed_to_the_full_width() -> None:
    crop = np.zeros((10, 400, 3), np.uint8)  # ratio 40: wider than 320 at height 48
    line = zoo.rec_normalise(crop)
    assert np.allclose(line, -1.0)  # black everywhere, no padding


def test_read_lines_collapses_repeats_blanks_and_spaces() -> None:
    charset = ["", "a", "b", " "]
    steps = [0, 1, 1, 0, 1, 3, 3, 2, 3]  # blank a a blank a space space b space
    posteriors = np.eye(4, dtype=np.float32)[steps][None]
    assert zoo.read_lines(posteriors, charset) == ["aa b"]


def test_codes_never_use_letters_that_read_as_digits() -> None:
    assert "O" not in zoo.CODE_LETTERS and "I" not in zoo.CODE_LETTERS
    rng = np.random.default_rng(0)
    phrases = [zoo.rec_phrase(rng) for _ in range(200)]
    assert all(1 <= len(p.split()) <= 4 for p in phrases)
    assert any(any(c.isdigit() for c in p) for p in phrases)


def test_missing_fonts_make_the_zoo_unavailable_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "FONT_DIR", tmp_path)
    with pytest.raises(zoo.ZooUnavailable, match="fonts-dejavu-core"):
        zoo.ocr_fonts()
