"""Tests for SAMRegistrationLib.qc and SAMRegistrationLib.io_atomic."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.io_atomic import write_image_atomic, write_json_atomic
from SAMRegistrationLib.qc import write_qc_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _blob(shift_mm: float = 0.0) -> sitk.Image:
    """Anisotropic, obliquely oriented volume holding a bright ellipsoid."""
    shape = (12, 40, 32)  # z, y, x
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    arr = np.exp(-(((x - 16 - shift_mm) / 8) ** 2 + ((y - 20) / 10) ** 2 + ((z - 6) / 3) ** 2))
    arr += 0.05 * np.random.default_rng(1).normal(size=shape)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing((0.9, 0.7, 3.0))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    img.SetOrigin((5.0, -3.0, 12.0))
    return img


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_write_qc_png(tmp_path):
    fixed, before = _blob(), _blob(shift_mm=5.0)
    out = tmp_path / "sub" / "qc.png"
    write_qc_png(fixed, before, fixed, out, title="unit test")
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 600 and height > 400
    assert len(data) > 20_000
    assert _leftovers(out.parent) == []


def test_write_qc_png_size_mismatch(tmp_path):
    other = sitk.Image(5, 5, 5, sitk.sitkFloat32)
    with pytest.raises(InputError, match="before"):
        write_qc_png(_blob(), other, _blob(), tmp_path / "qc.png")
    assert not (tmp_path / "qc.png").exists()
    assert _leftovers(tmp_path) == []


def test_write_image_atomic_roundtrip(tmp_path):
    img = _blob()
    out = tmp_path / "warped.nii.gz"
    write_image_atomic(img, out)
    back = sitk.ReadImage(str(out))
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip: the .nii.gz writer was used
    assert _leftovers(tmp_path) == []


def test_write_image_atomic_failure_cleans_up(tmp_path):
    out = tmp_path / "bad.unknownext"
    with pytest.raises(RuntimeError):
        write_image_atomic(_blob(), out)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_write_json_atomic(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("old")
    write_json_atomic({"a": np.float32(1.5), "b": float("nan"), "c": np.arange(3),
                       "d": (np.int64(2), True), 4: Path("x/y")}, out)
    assert json.loads(out.read_text()) == {"a": 1.5, "b": None, "c": [0, 1, 2], "d": [2, True],
                                           "4": "x/y"}
    assert _leftovers(tmp_path) == []
