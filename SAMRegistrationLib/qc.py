"""Quality-control figure: fixed vs moving colour overlays before and after registration."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .io_atomic import atomic_path

_PLANES = ("axial", "coronal", "sagittal")


def _as_lps_array(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Scalar float array (z,y,x) reoriented so x->L, y->P, z->S; and its (x,y,z) spacing."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        image = sitk.VectorMagnitude(image)
    if image.GetDimension() != 3:
        raise InputError(f"QC needs 3-D images, got a {image.GetDimension()}-D image.")
    img = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(img).astype(np.float32), img.GetSpacing()


def _window(arr: np.ndarray) -> np.ndarray:
    """Scale to [0,1] using the 1st-99th percentile (of a subsample for speed)."""
    flat = arr.ravel()
    step = max(1, flat.size // 1_000_000)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros_like(arr)
    lo, hi = np.percentile(sample, [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((np.nan_to_num(arr) - lo) / (hi - lo), 0.0, 1.0)


def _slices(arr: np.ndarray, spacing: tuple[float, float, float]):
    """Central (slice2d, extent) per plane; rows run A->P (axial) or S->I (coronal, sagittal)."""
    nz, ny, nx = arr.shape
    sx, sy, sz = spacing
    ax = arr[nz // 2]                    # (y, x): rows anterior->posterior, cols right->left
    co = arr[:, ny // 2, :][::-1]        # (z, x): rows superior->inferior
    sa = arr[:, :, nx // 2][::-1]        # (z, y): rows superior->inferior, cols anterior->posterior
    return [
        (ax, (0, nx * sx, ny * sy, 0)),
        (co, (0, nx * sx, nz * sz, 0)),
        (sa, (0, ny * sy, nz * sz, 0)),
    ]


def _overlay(fixed2d: np.ndarray, moving2d: np.ndarray) -> np.ndarray:
    """RGB: fixed in magenta, moving in green (aligned structures appear grey/white)."""
    return np.stack([fixed2d, moving2d, fixed2d], axis=-1)


def write_qc_png(fixed: sitk.Image, before: sitk.Image, after: sitk.Image, path: Path,
                 title: str = "") -> None:
    """Write a 2x3 PNG: rows before/after, columns axial/coronal/sagittal central planes.

    ``before``/``after`` are the moving image resampled onto the fixed grid. Planes follow the
    nearest LPS orientation, shown in radiological convention with physical aspect ratio.
    """
    for name, img in (("before", before), ("after", after)):
        if img.GetSize() != fixed.GetSize():
            raise InputError(f"QC image '{name}' has size {img.GetSize()}, expected the fixed grid "
                             f"size {fixed.GetSize()}.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    f_arr, spacing = _as_lps_array(fixed)
    f_arr = _window(f_arr)
    rows = [("before", _window(_as_lps_array(before)[0])), ("after", _window(_as_lps_array(after)[0]))]
    f_slices = _slices(f_arr, spacing)

    fig = Figure(figsize=(12, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    for r, (row_name, m_arr) in enumerate(rows):
        for c, ((fs, extent), (ms, _)) in enumerate(zip(f_slices, _slices(m_arr, spacing))):
            ax = axes[r, c]
            ax.imshow(_overlay(fs, ms), extent=extent, aspect="equal", interpolation="nearest")
            ax.set_title(f"{_PLANES[c]} - {row_name}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle((title + "\n" if title else "") + "fixed = magenta, moving = green", fontsize=11)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(str(tmp), format="png")
