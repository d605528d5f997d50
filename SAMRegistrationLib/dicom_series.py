"""A careful DICOM-folder reader.

ITK reads a folder with several series, missing slices, uneven spacing or gantry tilt
with at most a warning, and the volume then has the wrong geometry. ``read_dicom_folder``
checks the slice headers first and refuses anything ambiguous with one clear line.
"""
from __future__ import annotations

import contextlib
import locale
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from .errors import InputError

TILT_TOLERANCE_DEG = 0.5
ORIENTATION_TOLERANCE = 1e-4        # on direction cosines
SPACING_TOLERANCE = 1e-3            # mm, pixel spacing
GAP_RELATIVE_TOLERANCE = 0.01       # of the median slice gap ...
GAP_ABSOLUTE_TOLERANCE = 0.01       # ... or this many mm, whichever is larger


@contextlib.contextmanager
def locale_kept() -> Iterator[None]:
    """GDCM resets the C library's locale to "C" when it reads or writes; put it back, or
    Python in this process decodes text (a child's output) as ASCII from then on."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def read_dicom_folder(path: Path, role: str) -> sitk.Image:
    """The one DICOM series in ``path`` (see :func:`_read_dicom_folder`); the locale is kept."""
    with locale_kept():
        return _read_dicom_folder(path, role)


def _read_dicom_folder(path: Path, role: str) -> sitk.Image:
    """Read the one DICOM series in ``path`` as a 3D image in slice-position order.

    Raises :class:`InputError` (one line naming ``role``, the folder and the problem) for
    a folder without a series, several series, a single slice, inconsistent slices,
    gantry tilt, missing / uneven / duplicate slices and unreadable files.
    """
    path = Path(path)

    def fail(problem: str) -> InputError:
        return InputError(f"{role} folder {path}: {problem}".replace("\r", " ").replace("\n", " "))

    if not path.is_dir():
        raise fail("not a folder")
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not ids:
        _check_skipped_files(path, set(), fail)
        raise fail("no DICOM series found (no DICOM files in it; sub-folders are not searched)")
    if len(ids) > 1:
        names = [_describe(path, uid) for uid in ids]
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise fail(f"holds {len(ids)} series ({listed}); give a folder that holds one series")
    files = [str(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])]
    _check_skipped_files(path, {Path(f).name for f in files}, fail)

    headers = [_header(f, fail) for f in files]
    if len(files) == 1:
        if headers[0]["depth"] > 1:        # one multi-frame file: let ITK read it whole
            return sitk.ReadImage(files[0])
        raise fail("holds a single slice (one file); a 3D volume with several slices is needed")
    if any(h["depth"] > 1 for h in headers):
        raise fail("mixes several multi-frame files in one series; give a folder with one volume")
    first = headers[0]
    for f, h in zip(files, headers):
        if (h["rows"], h["cols"]) != (first["rows"], first["cols"]):
            raise fail(f"slice sizes differ ({first['cols']}x{first['rows']} in {Path(files[0]).name}, "
                       f"{h['cols']}x{h['rows']} in {Path(f).name})")
        if np.abs(h["spacing"] - first["spacing"]).max() > SPACING_TOLERANCE:
            raise fail(f"pixel spacing differs between slices ({_fmt(first['spacing'])} mm in "
                       f"{Path(files[0]).name}, {_fmt(h['spacing'])} mm in {Path(f).name})")
        if np.abs(h["iop"] - first["iop"]).max() > ORIENTATION_TOLERANCE:
            raise fail(f"slice orientation (0020|0037) differs between slices ({_fmt(first['iop'])} in "
                       f"{Path(files[0]).name}, {_fmt(h['iop'])} in {Path(f).name})")

    row, col = first["iop"][:3], first["iop"][3:]
    normal = np.cross(row, col)
    positions = np.array([h["ipp"] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions, files = positions[order], [files[i] for i in order]
    gaps = np.diff(positions @ normal)
    median = float(np.median(gaps))
    tol = max(GAP_RELATIVE_TOLERANCE * median, GAP_ABSOLUTE_TOLERANCE)

    duplicates = int(np.sum(gaps < tol))
    if duplicates:
        raise fail(f"{duplicates} slice(s) duplicate the position of another slice (duplicate positions; "
                   "several acquisitions, echoes or phases in one series?)")
    steps = positions[1:] - positions[0]
    cosines = np.abs(steps @ normal) / np.linalg.norm(steps, axis=1)
    tilt = float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))
    if tilt > TILT_TOLERANCE_DEG:
        raise fail(f"gantry tilt: slice positions progress at {tilt:.1f} degrees to the slice normal; "
                   "resample it to an untilted volume first")
    if np.abs(gaps - median).max() > tol:
        multiples = gaps / median
        detail = ""
        if np.all(np.abs(multiples - np.round(multiples)) * median <= tol):
            detail = f"; about {int(np.round(multiples).sum() - len(gaps))} slice(s) seem missing"
        raise fail(f"uneven slice spacing or missing slices: gaps between slices range from "
                   f"{gaps.min():.3g} to {gaps.max():.3g} mm (median {median:.3g} mm){detail}")

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        for f in files:                      # error path only: find the file that breaks it
            try:
                sitk.ReadImage(f)
            except RuntimeError:
                raise fail(f"file {Path(f).name} cannot be read (corrupt or truncated)") from None
        raise fail(f"cannot read the series ({_first_line(exc)})") from None
    spacing = first["spacing"]
    image.SetSpacing((float(spacing[1]), float(spacing[0]), float(np.mean(gaps))))
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    return image


def _header(file: str, fail) -> dict:
    """Geometry tags of one file, read without its pixels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise fail(f"file {Path(file).name} cannot be read (corrupt or truncated)") from None

    def numbers(tag: str, count: int) -> np.ndarray:
        try:
            values = np.array([float(v) for v in reader.GetMetaData(tag).split("\\")])
        except (RuntimeError, ValueError):
            values = np.array([])
        if values.size != count:
            raise fail(f"file {Path(file).name} lacks a valid tag {tag}")
        return values

    iop = numbers("0020|0037", 6)
    iop = np.concatenate([iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])])
    size = reader.GetSize()
    return {"ipp": numbers("0020|0032", 3), "iop": iop, "spacing": numbers("0028|0030", 2),
            "rows": int(numbers("0028|0010", 1)[0]), "cols": int(numbers("0028|0011", 1)[0]),
            "depth": size[2] if len(size) > 2 else 1}


def _check_skipped_files(folder: Path, in_series: set[str], fail) -> None:
    """GDCM silently drops DICOM files it cannot parse; name the first such file."""
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name in in_series or f.name.upper() == "DICOMDIR":
            continue
        try:
            with open(f, "rb") as handle:
                magic = handle.read(132)[128:] == b"DICM"
        except OSError:
            magic = False
        if magic or f.suffix.lower() in (".dcm", ".ima"):
            raise fail(f"file {f.name} looks like DICOM but cannot be read (corrupt or truncated)")


def _describe(folder: Path, uid: str) -> str:
    """'description' (tag 0008|103e) of a series, or its UID, with its number of files."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
        text = reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        text = ""
    return f"'{text or uid}' ({len(files)} files)"


def _fmt(values: np.ndarray) -> str:
    return "\\".join(f"{v:.4g}" for v in values)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "ERROR" in line), lines[-1] if lines else "")[:160]
