"""Synthetic perturbations for benchmarking: random smooth deformations, intensity changes,
synthetic fixed/moving pairs with a known ground-truth field, and re-oriented copies.

Conventions: images keep spacing/origin/direction (physical LPS mm). A displacement field is a
3-component vector image on the fixed grid holding u(p) in mm, with the fixed->moving map
phi(p) = p + u(p), as used by ``sitk.DisplacementFieldTransform``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..grid import Grid

_MAX_SAMPLE_POINTS = 250_000   # reference voxels used while calibrating the field's magnitude
_SLAB = 16                     # z slices per chunk when evaluating a field on a full grid


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------

def _world_points(image: sitk.Image, z0: int, z1: int, stride: tuple[int, int, int] = (1, 1, 1)
                  ) -> np.ndarray:
    """World coordinates (N,3) of the voxels in slices [z0, z1), in (z,y,x) C order."""
    nx, ny, _ = image.GetSize()
    iz, iy, ix = np.meshgrid(np.arange(z0, z1, stride[2]), np.arange(0, ny, stride[1]),
                             np.arange(0, nx, stride[0]), indexing="ij")
    idx = np.stack([ix.ravel(), iy.ravel(), iz.ravel()], axis=1).astype(np.float64)
    return Grid.from_image(image).index_to_world(idx)


def _world_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box of the image's voxel corners (half a voxel beyond centres)."""
    grid = Grid.from_image(image)
    lo, hi = grid.world_bounds()
    half = 0.5 * np.abs(grid.matrix).sum(axis=1)
    return lo - half, hi + half


def _vector_image(disp_zyx3: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(disp_zyx3, dtype=np.float64), isVector=True)
    out.CopyInformation(reference)
    return out


def _field_transform(field: sitk.Image) -> sitk.DisplacementFieldTransform:
    """DisplacementFieldTransform on a copy: the transform takes over the image's buffer."""
    return sitk.DisplacementFieldTransform(sitk.Cast(sitk.Image(field), sitk.sitkVectorFloat64))


# --------------------------------------------------------------------------------------------
# A) random smooth fields
# --------------------------------------------------------------------------------------------

class _WorkGrid:
    """Axis-aligned world grid (identity direction, isotropic spacing) holding (x,y,z,3) fields."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, spacing: float, pad_nodes: int) -> None:
        self.spacing = float(spacing)
        self.origin = lo - pad_nodes * self.spacing
        self.shape = tuple(int(math.ceil((h - l) / self.spacing)) + 2 * pad_nodes + 1
                           for l, h in zip(lo, hi))

    def index_of(self, world: np.ndarray) -> np.ndarray:
        """(3,N) continuous work-grid index of (N,3) world points."""
        return ((world - self.origin) / self.spacing).T

    def node_index(self) -> np.ndarray:
        """(x,y,z,3) integer index of every node."""
        return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in self.shape],
                                    indexing="ij"), axis=-1)


def _sample(coeffs: list[np.ndarray], index_3n: np.ndarray) -> np.ndarray:
    """Cubic B-spline evaluation of prefiltered per-component coefficients at (3,N) -> (N,3)."""
    return np.stack([ndimage.map_coordinates(c, index_3n, order=3, prefilter=False, mode="nearest")
                     for c in coeffs], axis=1)


def _prefilter(field_xyz3: np.ndarray) -> list[np.ndarray]:
    return [ndimage.spline_filter(field_xyz3[..., c], order=3, mode="nearest") for c in range(3)]


def _exponential(velocity: np.ndarray, grid: _WorkGrid) -> np.ndarray:
    """Displacement of exp(velocity) by scaling and squaring on the work grid (mm, (x,y,z,3))."""
    vmax = float(np.linalg.norm(velocity, axis=-1).max())
    # Start from a step well under a node spacing so the first-order start is accurate.
    steps = max(6, int(math.ceil(math.log2(max(vmax, 1e-12) / (0.05 * grid.spacing)))))
    disp = velocity / 2.0 ** steps
    nodes = grid.node_index()
    shape = disp.shape
    for _ in range(steps):
        where = (nodes + disp / grid.spacing).reshape(-1, 3).T
        disp = disp + _sample(_prefilter(disp), where).reshape(shape)
    return disp


def _strided_sample_points(reference: sitk.Image) -> np.ndarray:
    size = np.asarray(reference.GetSize())
    stride = 1
    while np.prod(np.ceil(size / stride)) > _MAX_SAMPLE_POINTS:
        stride += 1
    return _world_points(reference, 0, int(size[2]), (stride, stride, stride))


def _evaluate_on(reference: sitk.Image, coeffs: list[np.ndarray], grid: _WorkGrid) -> np.ndarray:
    """Evaluate a work-grid field on every voxel of ``reference``; returns (z,y,x,3) float64."""
    nx, ny, nz = reference.GetSize()
    out = np.empty((nz, ny, nx, 3), dtype=np.float64)
    for z0 in range(0, nz, _SLAB):
        z1 = min(z0 + _SLAB, nz)
        out[z0:z1] = _sample(coeffs, grid.index_of(_world_points(reference, z0, z1))
                             ).reshape(z1 - z0, ny, nx, 3)
    return out


def _smooth_field_pair(reference: sitk.Image, seed: int, max_displacement_mm: float,
                       control_spacing_mm: float, with_inverse: bool
                       ) -> tuple[sitk.Image, Optional[sitk.Image]]:
    """Forward field exp(v) and (optionally) its inverse exp(-v) on ``reference``'s grid."""
    if reference.GetDimension() != 3:
        raise ValueError("random smooth fields are implemented for 3-D images only")
    if max_displacement_mm < 0 or control_spacing_mm <= 0:
        raise ValueError("max_displacement_mm must be >= 0 and control_spacing_mm > 0")
    rng = np.random.default_rng(seed)
    lo, hi = _world_bounds(reference)
    h = control_spacing_mm / 4.0
    grid = _WorkGrid(lo, hi, h, pad_nodes=int(math.ceil(max_displacement_mm / h)) + 3)

    # Random cubic B-spline coefficients on a coarse control grid enclosing the work grid.
    ctrl_origin = grid.origin - 2.0 * control_spacing_mm
    work_extent = (np.asarray(grid.shape) - 1) * h
    ctrl_shape = tuple(int(math.ceil(e / control_spacing_mm)) + 5 for e in work_extent)
    ctrl = rng.standard_normal(ctrl_shape + (3,))
    work_world = grid.node_index() * h + grid.origin
    where = ((work_world - ctrl_origin) / control_spacing_mm).reshape(-1, 3).T
    velocity = _sample([ctrl[..., c] for c in range(3)], where).reshape(grid.shape + (3,))

    zeros = np.zeros(reference.GetSize()[::-1] + (3,))
    if max_displacement_mm == 0:
        return _vector_image(zeros, reference), (_vector_image(zeros, reference) if with_inverse else None)

    # Calibrate the velocity so that max |exp(v)| over the reference voxels is the requested value.
    samples = grid.index_of(_strided_sample_points(reference))
    velocity *= max_displacement_mm / np.linalg.norm(velocity, axis=-1).max()
    for _ in range(8):
        coeffs = _prefilter(_exponential(velocity, grid))
        peak = float(np.linalg.norm(_sample(coeffs, samples), axis=1).max())
        ratio = max_displacement_mm / max(peak, 1e-12)
        if abs(ratio - 1.0) < 1e-3:
            break
        velocity *= ratio
        coeffs = None
    if coeffs is None:
        coeffs = _prefilter(_exponential(velocity, grid))

    forward = _vector_image(_evaluate_on(reference, coeffs, grid), reference)
    inverse = None
    if with_inverse:
        inverse = _vector_image(_evaluate_on(reference, _prefilter(_exponential(-velocity, grid)), grid),
                                reference)
    return forward, inverse


def random_smooth_field(reference: sitk.Image, seed: int, max_displacement_mm: float = 6.0,
                        control_spacing_mm: float = 30.0) -> sitk.Image:
    """Random smooth, fold-free displacement field (float64 vector image) on ``reference``'s grid.

    A random cubic B-spline velocity with control spacing ``control_spacing_mm`` (defined in
    world space, so independent of direction and spacing) is exponentiated by scaling and
    squaring, and scaled so that the largest displacement magnitude over the voxels is
    ``max_displacement_mm``. Reproducible for a given ``seed``.
    """
    return _smooth_field_pair(reference, seed, max_displacement_mm, control_spacing_mm, False)[0]


# --------------------------------------------------------------------------------------------
# B) intensity changes
# --------------------------------------------------------------------------------------------

def _bias_field(shape_zyx: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random quadratic polynomial over [-1,1]^3 index coordinates, zero mean, max |f| = 1."""
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape_zyx]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    coeff = rng.uniform(-1.0, 1.0, len(terms))
    f = np.zeros(shape_zyx)
    for c, t in zip(coeff, terms):
        f = f + c * t
    f -= f.mean()
    peak = np.abs(f).max()
    return f / peak if peak > 0 else f


def intensity_change(image: sitk.Image, seed: int, gamma_range: tuple[float, float] = (0.7, 1.4),
                     noise_fraction: float = 0.03, bias_strength: float = 0.2) -> sitk.Image:
    """Random gamma, smooth multiplicative bias and gaussian noise, in the original intensity range.

    Intensities are normalised by the 1st/99th percentiles of the nonzero voxels, changed, and
    mapped back with the same percentiles. Returns a new float32 image with the same geometry.
    """
    rng = np.random.default_rng(seed)
    arr = sitk.GetArrayFromImage(image).astype(np.float64)   # a copy: the input stays untouched
    fg = arr[arr != 0]
    if fg.size < 10:
        fg = arr.ravel()
    lo, hi = (float(v) for v in np.percentile(fg, [1.0, 99.0]))
    if hi <= lo:
        hi = lo + 1.0
    x = (arr - lo) / (hi - lo)

    gamma = math.exp(rng.uniform(math.log(gamma_range[0]), math.log(gamma_range[1])))
    # Gamma on the [0,1] part; the residual outside keeps the map continuous and monotone.
    clipped = np.clip(x, 0.0, 1.0)
    x = clipped ** gamma + (x - clipped)
    if bias_strength:
        x *= np.exp(bias_strength * _bias_field(arr.shape, rng))
    if noise_fraction:
        x += rng.normal(0.0, noise_fraction, arr.shape)

    out = sitk.GetImageFromArray((x * (hi - lo) + lo).astype(np.float32))
    out.CopyInformation(image)
    return out


# --------------------------------------------------------------------------------------------
# C) synthetic pairs
# --------------------------------------------------------------------------------------------

@dataclass
class SyntheticPair:
    """A fixed/moving pair with the true fixed->moving displacement ``true_field`` (fixed grid).

    ``inverse_field`` (moving->fixed, q -> q + w(q), also on the fixed grid) is what generated
    the moving image: moving(q) = fixed(q + w(q)).
    """
    fixed: sitk.Image
    moving: sitk.Image
    fixed_seg: Optional[sitk.Image]
    moving_seg: Optional[sitk.Image]
    true_field: sitk.Image
    inverse_field: Optional[sitk.Image] = None


def _derived_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), stream]).generate_state(1)[0])


def make_synthetic_pair(fixed: sitk.Image, fixed_seg: Optional[sitk.Image], seed: int,
                        max_displacement_mm: float = 6.0, control_spacing_mm: float = 30.0,
                        change_intensity: bool = True) -> SyntheticPair:
    """Moving image (and segmentation) = ``fixed`` deformed by a known random smooth field.

    ``true_field`` equals ``random_smooth_field(fixed, seed, max_displacement_mm,
    control_spacing_mm)``; the moving image is fixed pushed forward through it, so
    moving(phi(p)) = fixed(p) with phi(p) = p + true_field(p). With ``change_intensity`` the
    moving image also gets ``intensity_change`` with a seed derived from ``seed``.
    """
    true_field, inverse = _smooth_field_pair(fixed, seed, max_displacement_mm, control_spacing_mm, True)
    background = float(np.min(sitk.GetArrayViewFromImage(fixed)))
    moving = sitk.Resample(sitk.Cast(fixed, sitk.sitkFloat32), fixed, _field_transform(inverse),
                           sitk.sitkLinear, background, sitk.sitkFloat32)
    moving_seg = None
    if fixed_seg is not None:
        moving_seg = sitk.Resample(fixed_seg, fixed, _field_transform(inverse),
                                   sitk.sitkNearestNeighbor, 0, fixed_seg.GetPixelID())
    if change_intensity:
        moving = intensity_change(moving, _derived_seed(seed, 1))
    return SyntheticPair(fixed=fixed, moving=moving, fixed_seg=fixed_seg, moving_seg=moving_seg,
                         true_field=true_field, inverse_field=inverse)


# --------------------------------------------------------------------------------------------
# D) re-oriented copies
# --------------------------------------------------------------------------------------------

def reoriented_copy(image: sitk.Image, spacing_factor: float = 1.3, is_label: bool = False) -> sitk.Image:
    """Same physical content stored with permuted axes (2,0,1), a flipped axis and coarser spacing.

    The result covers the same physical extent with spacing = permuted spacing * spacing_factor,
    resampled linearly (float32) for images or by nearest neighbour for labels.
    """
    # PermuteAxes and Flip both update origin/direction so voxels keep their world positions.
    stored = sitk.Flip(sitk.PermuteAxes(image, (2, 0, 1)), (True, False, False))
    size = np.asarray(stored.GetSize(), dtype=np.float64)
    spacing = np.asarray(stored.GetSpacing(), dtype=np.float64)
    new_spacing = spacing * float(spacing_factor)
    new_size = np.maximum(1, np.round(size * spacing / new_spacing)).astype(int)
    direction = np.asarray(stored.GetDirection(), dtype=np.float64).reshape(3, 3)
    corner = np.asarray(stored.GetOrigin()) - direction @ (0.5 * spacing)
    new_origin = corner + direction @ (0.5 * new_spacing)

    ref = sitk.Image([int(n) for n in new_size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in new_spacing])
    ref.SetOrigin([float(o) for o in new_origin])
    ref.SetDirection(stored.GetDirection())
    if is_label:
        return sitk.Resample(stored, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                             stored.GetPixelID())
    background = float(np.min(sitk.GetArrayViewFromImage(stored)))
    return sitk.Resample(sitk.Cast(stored, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear,
                         background, sitk.sitkFloat32)
