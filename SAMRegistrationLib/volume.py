"""Reading, validating and intensity-normalising volumes.

Inputs are read with SimpleITK (NIfTI, NRRD, MHA, a DICOM folder, ...) and keep their
geometry. Nothing here writes to or modifies an input file.
"""
from __future__ import annotations

import hashlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import SimpleITK as sitk

from .errors import InputError, ResourceError
from .input_checks import check_geometry, check_nifti, check_readable_size

sitk.ProcessObject_SetGlobalWarningDisplay(False)

CT_WINDOW = (-1000.0, 600.0)        # HU range mapped to [0, 1]: lungs and soft tissue both visible
MR_PERCENTILES = (0.5, 99.5)
FOREGROUND_THRESHOLD = 0.02         # normalised intensity above which a voxel holds anatomy


def read_volume(path: str | Path, role: str = "image", pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """Read a 3D scalar volume; raise :class:`InputError` naming ``role`` and the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} not found: {path}")
    try:
        if path.is_dir():
            from .dicom_series import read_dicom_folder
            image = read_dicom_folder(path, role)
        else:
            check_file_header(path, role)
            with native_stderr_silenced():
                image = sitk.ReadImage(str(path))
    except (InputError, ResourceError):
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "Unable" in line), first[-1] if first else "")
        raise InputError(f"cannot read {role} {path}: not a readable image ({detail.strip()[:160]})") from None
    image = _as_3d_scalar(image, role, path)
    check_geometry(image, role, path)
    return sitk.Cast(image, pixel_type)


def check_file_header(path: Path, role: str) -> None:
    """What can be told from the header alone: NIfTI sanity, and whether the voxels fit in memory."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        check_nifti(path, role)
    check_readable_size(path, role)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Keep ITK's own C++ messages (MetaIO, GDCM print straight to file descriptor 2) out of the
    terminal: the error they lead to is reported as one line of ours instead."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _as_3d_scalar(image: sitk.Image, role: str, path: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{role} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "a scalar volume is needed")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = sitk.Extract(image, list(image.GetSize()[:3]) + [0], [0, 0, 0, 0])
        dim = 3
    if dim != 3:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"{role} {path} is {dim}D ({size}); a 3D volume is needed")
    if min(image.GetSize()) < 2:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"{role} {path} is a single slice ({size}); a 3D volume with several slices is needed")
    return image


def check_values(image: sitk.Image, role: str, path: str | Path) -> None:
    """Reject NaN/infinite, empty and constant volumes."""
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{role} {path} contains {bad} NaN or infinite voxel(s)")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        what = "empty (all zero)" if hi == 0 else f"constant (every voxel is {lo:g})"
        raise InputError(f"{role} {path} is {what}; there is nothing to register")


def detect_modality(image: sitk.Image) -> str:
    """'ct' when the intensities look like Hounsfield units (air near -1000), else 'mr'."""
    array = sitk.GetArrayViewFromImage(image)
    sample = array.ravel()[:: max(1, array.size // 500_000)]
    p1, p99 = np.percentile(sample, [1, 99])
    return "ct" if p1 < -500 and p99 > -200 else "mr"


def normalise_intensity(image: sitk.Image, modality: str = "auto") -> tuple[sitk.Image, str]:
    """Map intensities to [0, 1]: a fixed HU window for CT, robust percentiles for MR."""
    if modality == "auto":
        modality = detect_modality(image)
    if modality not in ("ct", "mr"):
        raise InputError(f"unknown modality {modality!r}; use auto, ct or mr")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if modality == "ct":
        lo, hi = CT_WINDOW
    else:
        sample = array.ravel()[:: max(1, array.size // 2_000_000)]
        foreground = sample[sample > sample.min()]
        if foreground.size < 100:
            foreground = sample
        lo, hi = (float(v) for v in np.percentile(foreground, MR_PERCENTILES))
        lo = min(lo, float(sample.min()))  # background stays at 0
        if hi <= lo:
            hi = lo + 1.0
    out = np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result, modality


def content_hash(image: sitk.Image) -> str:
    """SHA256 of voxel values and geometry (feature-cache key)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    for values in (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        digest.update(np.asarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def foreground_mask(image01: sitk.Image, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """Voxels above a small threshold of a [0, 1]-normalised image, (z, y, x) bool."""
    return sitk.GetArrayViewFromImage(image01) > threshold


def read_segmentation(path: str | Path, role: str) -> sitk.Image:
    image = read_volume(path, role, pixel_type=sitk.sitkInt32)
    return image


def optional_path(value: Optional[str | Path]) -> Optional[Path]:
    return Path(value) if value else None
