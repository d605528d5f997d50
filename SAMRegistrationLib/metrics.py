"""Registration quality metrics: Dice, HD95, Jacobian determinant statistics and landmark TRE.

Conventions: numpy label/volume arrays are (z,y,x); a displacement field is (z,y,x,3) holding
the (x,y,z) LPS world displacement in mm on the fixed grid, phi(p) = p + u(p).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError

_STRUCT = ndimage.generate_binary_structure(3, 1)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InputError(f"Segmentations have different shapes {a.shape} and {b.shape}; "
                         "resample the warped segmentation onto the fixed grid first.")


def dice_per_label(fixed_seg: np.ndarray, warped_seg: np.ndarray,
                   labels: Sequence[int]) -> dict[int, float]:
    """Dice overlap per label; NaN where the label is absent from both segmentations."""
    _check_same_shape(fixed_seg, warped_seg)
    out: dict[int, float] = {}
    for lab in labels:
        a = fixed_seg == lab
        b = warped_seg == lab
        na, nb = int(a.sum()), int(b.sum())
        if na + nb == 0:
            out[int(lab)] = float("nan")
        else:
            out[int(lab)] = 2.0 * int(np.logical_and(a, b).sum()) / (na + nb)
    return out


def _surface(mask: np.ndarray) -> np.ndarray:
    """Border voxels of a binary mask: the mask minus its 6-connected 3D erosion."""
    return mask & ~ndimage.binary_erosion(mask, structure=_STRUCT, border_value=0)


def _hd95_masks(a: np.ndarray, b: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    if not a.any() or not b.any():
        return float("nan")
    # Crop to the bounding box of both masks plus one voxel: exact, and much faster.
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, a.shape)
    sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    a, b = a[sl], b[sl]
    # Erosion with border_value=0 marks crop-edge voxels as border: only happens where the crop
    # edge is the image edge (elsewhere the one-voxel margin is background), as without cropping.
    sa, sb = _surface(a), _surface(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing_zyx)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing_zyx)
    d_ab = np.percentile(dist_to_b[sa], 95)
    d_ba = np.percentile(dist_to_a[sb], 95)
    return float(max(d_ab, d_ba))


def hd95_per_label(fixed_seg: np.ndarray, warped_seg: np.ndarray, labels: Sequence[int],
                   spacing_zyx: Sequence[float]) -> dict[int, float]:
    """Symmetric 95th-percentile surface distance (mm) per label; NaN if either side is empty."""
    _check_same_shape(fixed_seg, warped_seg)
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != fixed_seg.ndim:
        raise InputError(f"spacing_zyx has {len(spacing)} values for a {fixed_seg.ndim}-D segmentation.")
    return {int(lab): _hd95_masks(fixed_seg == lab, warped_seg == lab, spacing) for lab in labels}


def _index_gradients(comp: np.ndarray) -> list[np.ndarray]:
    """np.gradient of a (z,y,x) array along each axis (zero along axes of length 1)."""
    return [np.gradient(comp, axis=ax) if comp.shape[ax] > 1 else np.zeros_like(comp)
            for ax in range(3)]


def jacobian_determinant(disp: np.ndarray, spacing_xyz: Sequence[float],
                         direction_3x3: Sequence[float] | np.ndarray) -> np.ndarray:
    """Determinant of d phi / d p for phi(p) = p + u(p), in world coordinates; returns (z,y,x).

    With p = origin + M i, M = D diag(s) (i = continuous (x,y,z) index), the index derivatives
    G = du/di satisfy G = (du/dp) M, hence du/dp = G M^-1 (each row: grad_p = M^-T grad_i).
    Central differences in the interior, one-sided at the borders; computed in z slabs.
    """
    disp = np.asarray(disp)
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise InputError(f"Displacement field must have shape (z,y,x,3), got {disp.shape}.")
    D = np.asarray(direction_3x3, dtype=np.float64).reshape(3, 3)
    M = D @ np.diag(np.asarray(spacing_xyz, dtype=np.float64).reshape(3))
    Minv = np.linalg.inv(M)
    nz = disp.shape[0]
    out = np.empty(disp.shape[:3], dtype=np.float64)
    chunk = 16
    for z0 in range(0, nz, chunk):
        z1 = min(z0 + chunk, nz)
        h0, h1 = max(z0 - 1, 0), min(z1 + 1, nz)  # one-slice halo keeps central differences exact
        slab = disp[h0:h1].astype(np.float64, copy=False)
        J = np.empty(slab.shape[:3] + (3, 3), dtype=np.float64)
        for a in range(3):
            gz, gy, gx = _index_gradients(slab[..., a])
            for b in range(3):  # J[a,b] = delta_ab + sum_k G[a,k] Minv[k,b], k over (x,y,z)
                J[..., a, b] = gx * Minv[0, b] + gy * Minv[1, b] + gz * Minv[2, b] + (a == b)
        out[z0:z1] = np.linalg.det(J[z0 - h0:z0 - h0 + (z1 - z0)])
    return out


def sdlogj(jac: np.ndarray) -> float:
    """Standard deviation of log(Jacobian determinant), determinants clipped at 1e-9."""
    return float(np.std(np.log(np.clip(np.asarray(jac, dtype=np.float64), 1e-9, None))))


def fold_percent(jac: np.ndarray) -> float:
    """Percentage of voxels whose Jacobian determinant is <= 0 (folding)."""
    jac = np.asarray(jac)
    return float(100.0 * np.count_nonzero(jac <= 0) / jac.size) if jac.size else float("nan")


def _points(arr: np.ndarray, name: str) -> np.ndarray:
    pts = np.asarray(arr, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"{name} landmarks must be an (N,3) array, got shape {pts.shape}.")
    return pts


def _summary(dist: np.ndarray) -> tuple[float, float, np.ndarray]:
    if dist.size == 0:
        return float("nan"), float("nan"), dist
    return float(dist.mean()), float(dist.std()), dist


def tre_initial(fixed_points: np.ndarray,
                moving_points: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Landmark distances (mm) without registration: (mean, sd, per_point)."""
    f, m = _points(fixed_points, "Fixed"), _points(moving_points, "Moving")
    if len(f) != len(m):
        raise InputError(f"Fixed and moving landmark counts differ ({len(f)} vs {len(m)}).")
    return _summary(np.linalg.norm(f - m, axis=1))


def tre(fixed_points: np.ndarray, moving_points: np.ndarray,
        disp_image: sitk.Image) -> tuple[float, float, np.ndarray]:
    """Target registration error (mm) after mapping fixed landmarks through phi: (mean, sd, per_point).

    The displacement is linearly interpolated at each fixed landmark (zero outside the field).
    """
    f, m = _points(fixed_points, "Fixed"), _points(moving_points, "Moving")
    if len(f) != len(m):
        raise InputError(f"Fixed and moving landmark counts differ ({len(f)} vs {len(m)}).")
    if disp_image.GetNumberOfComponentsPerPixel() != 3 or disp_image.GetDimension() != 3:
        raise InputError("The displacement field must be a 3-D image with 3-component vectors.")
    # DisplacementFieldTransform takes ownership of (empties) its image: give it a copy.
    field = sitk.Cast(disp_image, sitk.sitkVectorFloat64)
    if field is disp_image:  # pragma: no cover - Cast always returns a new image
        field = sitk.Image(disp_image)
    tx = sitk.DisplacementFieldTransform(field)
    mapped = np.array([tx.TransformPoint(tuple(float(c) for c in p)) for p in f],
                      dtype=np.float64).reshape(-1, 3)
    return _summary(np.linalg.norm(mapped - m, axis=1))


def _nanmean(values) -> Optional[float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def _clean(v: float) -> Optional[float]:
    return None if v is None or math.isnan(v) else float(v)


def segmentation_metrics(fixed_seg_img: sitk.Image, warped_seg_img: sitk.Image,
                         labels: Sequence[int]) -> dict:
    """Dice and HD95 per label plus NaN-safe means, as a JSON-friendly dict (NaN -> None)."""
    if fixed_seg_img.GetSize() != warped_seg_img.GetSize():
        raise InputError(f"Warped segmentation size {warped_seg_img.GetSize()} differs from the "
                         f"fixed segmentation size {fixed_seg_img.GetSize()}.")
    a = sitk.GetArrayViewFromImage(fixed_seg_img)
    b = sitk.GetArrayViewFromImage(warped_seg_img)
    spacing_zyx = tuple(reversed(fixed_seg_img.GetSpacing()))
    labels = [int(l) for l in labels]
    dice = dice_per_label(a, b, labels)
    hd = hd95_per_label(a, b, labels, spacing_zyx)
    return {
        "dice": {str(k): _clean(v) for k, v in dice.items()},
        "dice_mean": _nanmean(dice.values()),
        "hd95": {str(k): _clean(v) for k, v in hd.items()},
        "hd95_mean_mm": _nanmean(hd.values()),
    }


def resample_segmentation(moving_seg: sitk.Image, reference: sitk.Image,
                          transform: Optional[sitk.Transform] = None) -> sitk.Image:
    """Resample a label image onto ``reference``'s grid (nearest neighbour, background 0)."""
    tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    return sitk.Resample(moving_seg, reference, tx, sitk.sitkNearestNeighbor, 0,
                         moving_seg.GetPixelID())


def region_pair_dice(fixed_regions: sitk.Image, moving_regions: sitk.Image, names: Sequence[str],
                     transform: sitk.Transform, affine: Optional[sitk.Transform] = None) -> list[dict]:
    """Dice of each used prompt-region pair (label i + 1 is ``names[i]``) after the affine
    pre-alignment and after the registration: did the registration bring the regions together?
    Pairs left out by the checks (empty regions) are not listed."""
    fixed = sitk.GetArrayViewFromImage(fixed_regions)
    moving = sitk.GetArrayViewFromImage(moving_regions)
    after = sitk.GetArrayFromImage(resample_segmentation(moving_regions, fixed_regions, transform))
    before = sitk.GetArrayFromImage(resample_segmentation(moving_regions, fixed_regions, affine))
    out = []
    for number, name in enumerate(names, start=1):
        if not ((fixed == number).any() and (moving == number).any()):
            continue
        out.append({"region": name, "dice_affine": round(dice_per_label(fixed, before, [number])[number], 4),
                    "dice": round(dice_per_label(fixed, after, [number])[number], 4)})
    return out
