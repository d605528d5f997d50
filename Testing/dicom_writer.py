"""DICOM series written by SimpleITK for the tests (one 2D .dcm per slice, with the tags that
decide a series' geometry), so that no DICOM data need be stored."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from SAMRegistrationLib.dicom_series import locale_kept

SHAPE = (12, 20, 24)                     # slices, rows, columns
PIXEL = (0.7, 0.8)                       # x (column) spacing, y (row) spacing in mm
GAP = 2.5


def pattern_volume() -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    return (x * 3 + y * 50 + z * 1000 - 2000).astype(np.int16)


def rotation_matrix(a: float = 0.0, b: float = 0.0) -> np.ndarray:
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    return rz @ rx


def write_series(folder: Path, volume: Optional[np.ndarray] = None, rot: Optional[np.ndarray] = None,
                 origin=(-10.0, 5.0, 30.0), gap: float = GAP, uid: str = "1.2.826.0.1.3680043.2.1125.1",
                 desc: str = "CT test", positions: Optional[list] = None, name: str = "slice",
                 first_number: int = 1, pixel=PIXEL) -> list[Path]:
    """One 2D .dcm per slice; files are named in reverse slice order so the reader must sort."""
    with locale_kept():         # GDCM's writer resets the process's locale too
        return _write_series(folder, volume, rot, origin, gap, uid, desc, positions, name, first_number, pixel)


def _write_series(folder, volume, rot, origin, gap, uid, desc, positions, name, first_number, pixel) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    volume = pattern_volume() if volume is None else volume
    rot = np.eye(3) if rot is None else rot
    iop = "\\".join(f"{v:.8f}" for v in np.concatenate([rot[:, 0], rot[:, 1]]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k, plane in enumerate(volume):
        pos = positions[k] if positions is not None else np.asarray(origin) + k * gap * rot[:, 2]
        image = sitk.GetImageFromArray(plane)
        image.SetSpacing(pixel)
        number = first_number + k
        for tag, value in {"0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
                           "0020|000e": uid, "0008|0018": f"{uid}.{number}", "0020|0013": str(number),
                           "0020|0032": "\\".join(f"{v:.6f}" for v in pos), "0020|0037": iop,
                           "0028|0030": f"{pixel[1]}\\{pixel[0]}", "0008|103e": desc}.items():
            image.SetMetaData(tag, value)
        files.append(folder / f"{name}{len(volume) - k:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(image)
    return files
