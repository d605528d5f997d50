"""Checks that turn broken or ambiguous inputs into one clear line before they cost anything.

ITK reads much that it should not: a NIfTI file whose data were cut short or whose gzip stream
is truncated (the missing voxels come back as zeros), a header with zero, negative or NaN
spacing, a qform and an sform that place the volume in two different places (one is picked
silently). These checks read headers only, never the voxels (a compressed NIfTI file is only
decompressed here when its gzip trailer does not already give the length its header promises).
The others check the geometry of what was read: spacing and directions,
the overlap of the two images, label maps against their image, points inside their image, and
the output folder. Every failure is an :class:`InputError` (or, for memory, a
:class:`ResourceError`) naming the file and the field.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError, ResourceError

#: a qform and an sform may place a voxel this far apart (mm) before they count as disagreeing
#: (real headers differ by float rounding of the quaternion: 0.07 mm seen on FreeSurfer label maps)
FORMS_TOLERANCE_MM = 0.5
#: directions whose columns are further than this from orthonormal are refused
DIRECTION_TOLERANCE = 1e-3
#: the two images must share at least this fraction of the smaller one's bounding box
MIN_OVERLAP = 0.10
#: label maps may differ from their image's geometry by this much (header rounding)
GRID_TOLERANCE_MM = 1e-2
#: points may lie this far outside their image (fraction of its extent) before being refused
POINT_MARGIN = 0.10
#: reading a volume needs its voxels, a float32 copy and the normalised copy
READ_COPIES_FLOAT32 = 2


# --------------------------------------------------------------------------- paths
def check_image_path(path: Path, role: str) -> None:
    """An image is a file, or a folder holding one DICOM series."""
    path = Path(path)
    try:
        exists = path.exists()
    except OSError as exc:          # e.g. a name too long
        raise InputError(f"{role} image cannot be checked: {path} ({exc.strerror or exc})") from None
    if not exists:
        raise InputError(f"{role} file not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{role} image is neither a file nor a folder: {path}")


# --------------------------------------------------------------------------- NIfTI headers
def _nifti_header(path: Path, role: str) -> Optional[tuple[bytes, str]]:
    """(first 348 bytes, byte order) of a NIfTI-1 file; None for NIfTI-2 or other formats."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(348)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {role} {path}: a truncated or corrupt file ({exc.__class__.__name__})") from None
    if len(head) < 348:
        raise InputError(f"cannot read {role} {path}: the file ends inside its NIfTI header ({len(head)} bytes)")
    for order in "<>":
        size = struct.unpack_from(order + "i", head, 0)[0]
        if size == 348:
            return head, order
        if size == 540:
            return None
    raise InputError(f"cannot read {role} {path}: not a valid NIfTI header (sizeof_hdr is "
                     f"{struct.unpack_from('<i', head, 0)[0]}, not 348 or 540)")


def _qform(head: bytes, order: str) -> np.ndarray:
    """The 3x4 qform matrix (RAS) of a NIfTI-1 header."""
    b, c, d = struct.unpack_from(order + "3f", head, 256)
    offset = struct.unpack_from(order + "3f", head, 268)
    pixdim = struct.unpack_from(order + "8f", head, 76)
    a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    scale = np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
    return np.column_stack([rotation * scale, offset])


def _sform(head: bytes, order: str) -> np.ndarray:
    return np.array(struct.unpack_from(order + "12f", head, 280)).reshape(3, 4)


def _gzip_holds(path: Path, expected: int) -> bool:
    """Whether a gzip file's trailer (ISIZE: its length mod 2**32) says it holds ``expected``
    bytes: a whole single-member file then needs no decompressing here; a truncated one ends in
    data, not in that trailer."""
    try:
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            return struct.unpack("<I", handle.read(4))[0] == expected % 2**32
    except OSError:
        return False


def _stream_length(path: Path, role: str) -> int:
    """Bytes of the decompressed stream (the whole file is read; a broken stream is an error)."""
    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        raise InputError(f"cannot read {role} {path}: its gzip stream is truncated or corrupt") from None
    return total


def check_nifti(path: Path, role: str) -> None:
    """Spacing, qform/sform agreement and data length of a NIfTI-1 file, from its header."""
    parsed = _nifti_header(path, role)
    if parsed is None:
        return
    head, order = parsed
    dims = struct.unpack_from(order + "8h", head, 40)
    bitpix = struct.unpack_from(order + "h", head, 72)[0]
    pixdim = struct.unpack_from(order + "8f", head, 76)
    vox_offset = struct.unpack_from(order + "f", head, 108)[0]
    qform_code, sform_code = struct.unpack_from(order + "2h", head, 252)
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(n < 1 for n in dims[1:ndim + 1]):
        raise InputError(f"cannot read {role} {path}: its NIfTI header has impossible dimensions {dims[:ndim + 1]}")
    for axis in range(1, min(ndim, 3) + 1):
        if not (math.isfinite(pixdim[axis]) and pixdim[axis] > 0):
            raise InputError(f"{role} {path} has spacing (pixdim[{axis}]) {pixdim[axis]:g} in its NIfTI header; "
                             "the spacing must be a positive number: fix the header")
    if qform_code > 0 and sform_code > 0:
        corners = np.array([[i, j, k, 1.0] for i in (0, dims[1] - 1) for j in (0, dims[2] - 1)
                            for k in (0, max(dims[3], 1) - 1)])
        gap = float(np.abs(corners @ _qform(head, order).T - corners @ _sform(head, order).T).max())
        if not math.isfinite(gap) or gap > FORMS_TOLERANCE_MM:
            raise InputError(f"{role} {path}: its NIfTI qform and sform disagree (they place voxels up to "
                             f"{gap:.3g} mm apart), so its position is ambiguous; make them agree (or zero one "
                             "of the codes) and try again")
    expected = int(vox_offset) + int(np.prod([int(n) for n in dims[1:ndim + 1]], dtype=np.int64)) * (bitpix // 8)
    if path.name.lower().endswith(".gz"):
        if _gzip_holds(path, expected):      # the usual case: no second decompression of the volume
            return
        actual = _stream_length(path, role)  # several members, or truncated: count for sure
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise InputError(f"{role} {path} is truncated: its NIfTI header promises {expected} bytes, "
                         f"the file holds {actual}")


# --------------------------------------------------------------------------- any image file
def check_readable_size(path: Path, role: str) -> None:
    """Refuse, before any voxel is read, a volume that cannot fit in the memory available."""
    import psutil
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return                      # the read itself will say what is wrong
    voxels = int(np.prod(reader.GetSize(), dtype=np.int64)) * reader.GetNumberOfComponents()
    probe = sitk.Image([1] * len(reader.GetSize()), reader.GetPixelID(), max(1, reader.GetNumberOfComponents()))
    needed = voxels * (probe.GetSizeOfPixelComponent() + 4 * READ_COPIES_FLOAT32)
    available = psutil.virtual_memory().available
    if needed > available:
        dims = "x".join(str(n) for n in reader.GetSize())
        raise ResourceError(f"{role} {path} ({dims} voxels) needs about {needed / 2**30:.1f} GB of memory to read "
                            f"and {available / 2**30:.1f} GB is available; crop or downsample it first (the "
                            "working grid itself is set by --spacing)")


def check_geometry(image: sitk.Image, role: str, path: Path) -> None:
    """Finite positive spacing and orthonormal directions (ITK accepts some that are not)."""
    spacing = np.asarray(image.GetSpacing(), float)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise InputError(f"{role} {path} has spacing {tuple(spacing)}; the spacing must be positive numbers")
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    if not np.isfinite(direction).all() or np.abs(direction.T @ direction - np.eye(3)).max() > DIRECTION_TOLERANCE:
        raise InputError(f"{role} {path} has directions that are not orthonormal "
                         f"({np.round(direction, 4).tolist()}): a sheared or broken header")


# --------------------------------------------------------------------------- between inputs
def _bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    from .grid import Grid
    return Grid.from_image(image).world_bounds()


def check_overlap(fixed: sitk.Image, moving: sitk.Image, fixed_path: Path, moving_path: Path) -> None:
    """The images' bounding boxes must share at least :data:`MIN_OVERLAP` of the smaller one."""
    (f_lo, f_hi), (m_lo, m_hi) = _bounds(fixed), _bounds(moving)
    shared = float(np.prod(np.clip(np.minimum(f_hi, m_hi) - np.maximum(f_lo, m_lo), 0, None)))
    smaller = min(float(np.prod(f_hi - f_lo)), float(np.prod(m_hi - m_lo)))
    where = f"(fixed {fixed_path}, moving {moving_path}); check their origins and directions"
    if shared <= 0:
        raise InputError(f"the fixed and moving images do not overlap in physical space {where}")
    if shared < MIN_OVERLAP * smaller:
        raise InputError(f"the fixed and moving images barely overlap in physical space ({100 * shared / smaller:.1f} % "
                         f"of the smaller one) {where}")


def check_label_map(seg: sitk.Image, role: str, path: Path, image: Optional[sitk.Image] = None,
                    image_role: str = "") -> sitk.Image:
    """A label map of non-negative whole labels with at least one label, on ``image``'s grid when
    one is given. Returns it as int32 (with the image's exact geometry: header rounding removed)."""
    if image is not None:
        if seg.GetSize() != image.GetSize():
            raise InputError(f"{role} {path} has size {seg.GetSize()}, but the {image_role} has {image.GetSize()}")
        for name, a, b in (("spacing", seg.GetSpacing(), image.GetSpacing()),
                           ("origin", seg.GetOrigin(), image.GetOrigin()),
                           ("direction", seg.GetDirection(), image.GetDirection())):
            if np.abs(np.subtract(a, b)).max() > GRID_TOLERANCE_MM:
                raise InputError(f"{role} {path} is not on the {image_role}'s grid: its {name} "
                                 f"{tuple(np.round(a, 4))} differs from {tuple(np.round(b, 4))}")
    values = sitk.GetArrayViewFromImage(seg)
    if not np.isfinite(values).all() or (np.asarray(values) != np.round(values)).any():
        raise InputError(f"{role} {path} holds non-integer values: a label map must hold whole label numbers "
                         "(a probability map?)")
    if values.min() < 0:
        raise InputError(f"{role} {path} holds negative labels (down to {values.min():g}); labels must be >= 0")
    if values.max() == 0:
        raise InputError(f"{role} {path} holds no label (every voxel is 0)")
    labels = sitk.Cast(seg, sitk.sitkInt32)
    if image is not None:
        labels.CopyInformation(image)
    return labels


def check_labels_present(labels: Optional[Sequence[int]], fixed_seg: sitk.Image, moving_seg: sitk.Image,
                         fixed_path: Path, moving_path: Path) -> None:
    """Every label asked for with ``--labels`` is in both label maps."""
    if not labels:
        return
    have = {side: set(np.unique(sitk.GetArrayViewFromImage(seg)).tolist())
            for side, seg in (("fixed", fixed_seg), ("moving", moving_seg))}
    for label in labels:
        for side, path in (("fixed", fixed_path), ("moving", moving_path)):
            if label not in have[side]:
                present = ", ".join(str(v) for v in sorted(have[side]) if v) or "none"
                raise InputError(f"label {label} of --labels is not in the {side} label map {path} "
                                 f"(labels there: {present})")


def check_points_inside(points: np.ndarray, image: sitk.Image, role: str, path: Path) -> None:
    """Points (N, 3; LPS mm) must lie in their image, give or take :data:`POINT_MARGIN` of its extent."""
    lo, hi = _bounds(image)
    margin = POINT_MARGIN * (hi - lo)
    outside = np.where(((points < lo - margin) | (points > hi + margin)).any(axis=1))[0]
    if outside.size:
        first = outside[0]
        raise InputError(f"{role} {path}: point {first + 1} {tuple(np.round(points[first], 1))} lies outside the "
                         f"image ({outside.size} of {len(points)} points outside; wrong units or coordinate system? "
                         "positions are physical LPS millimetres)")


# --------------------------------------------------------------------------- outputs
def check_output_dir(path: Path) -> None:
    """The output folder exists as a folder, or can be created where it is asked for."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output path exists and is not a folder: {path}")
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create the output folder {path}: {ancestor} is a file")
    try:        # the only sure test (permissions, read-only mounts, root): make and remove a folder there
        os.rmdir(tempfile.mkdtemp(prefix=".samreg-probe-", dir=ancestor))
    except OSError as exc:
        raise InputError(f"cannot create the output folder {path}: {ancestor} is not writable "
                         f"({exc.strerror or exc.__class__.__name__})") from None
