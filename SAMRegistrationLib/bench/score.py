"""The one scoring path for every method: a fixed->moving field in, the same metrics out."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..metrics import fold_percent, jacobian_determinant, resample_segmentation, sdlogj, segmentation_metrics, tre
from .cases import Case


def _read_labels(path: str, reference: sitk.Image) -> sitk.Image:
    labels = sitk.ReadImage(path, sitk.sitkInt32)
    if labels.GetSize() == reference.GetSize() and np.allclose(labels.GetSpacing(), reference.GetSpacing(), atol=1e-3):
        labels.CopyInformation(reference)      # tolerate header rounding between image and labels
    return labels


def initial_metrics(case: Case) -> dict:
    """Metrics of the unregistered pair, computed directly (the identity run must reproduce them)."""
    fixed = sitk.ReadImage(case.fixed, sitk.sitkFloat32)
    out: dict = {}
    if case.has_labels:
        fixed_seg = _read_labels(case.fixed_seg, fixed)
        moving_seg = sitk.ReadImage(case.moving_seg, sitk.sitkInt32)
        out.update(segmentation_metrics(fixed_seg, resample_segmentation(moving_seg, fixed_seg), _labels(case, fixed_seg)))
    if case.has_landmarks:
        from ..landmarks import read_points
        f = read_points(case.fixed_landmarks, fixed)
        m = read_points(case.moving_landmarks, sitk.ReadImage(case.moving))
        d = np.linalg.norm(f - m, axis=1)
        out.update(tre_mean_mm=float(d.mean()), tre_sd_mm=float(d.std()))
    return out


def _labels(case: Case, fixed_seg: sitk.Image) -> list[int]:
    if case.labels:
        return list(case.labels)
    values = np.unique(sitk.GetArrayViewFromImage(fixed_seg))
    return [int(v) for v in values if v != 0]


def _finite(value: Optional[float]) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else float(value)


def score_field(case: Case, field: sitk.Image) -> dict:
    """Dice/HD95 per label, SDlogJ, % folding, TRE and endpoint error, as far as the case allows."""
    fixed = sitk.ReadImage(case.fixed, sitk.sitkFloat32)
    if field.GetSize() != fixed.GetSize():
        raise ValueError(f"field size {field.GetSize()} differs from the fixed image {fixed.GetSize()}")
    field = sitk.Cast(field, sitk.sitkVectorFloat64)
    field.CopyInformation(fixed)
    disp = sitk.GetArrayFromImage(field)
    jac = jacobian_determinant(disp, fixed.GetSpacing(), np.asarray(fixed.GetDirection()).reshape(3, 3))
    metrics: dict = {"sdlogj": sdlogj(jac), "fold_percent": fold_percent(jac)}
    del jac
    if case.has_labels:
        fixed_seg = _read_labels(case.fixed_seg, fixed)
        moving_seg = sitk.ReadImage(case.moving_seg, sitk.sitkInt32)
        transform = sitk.DisplacementFieldTransform(sitk.Image(field))
        warped = resample_segmentation(moving_seg, fixed_seg, transform)
        metrics.update(segmentation_metrics(fixed_seg, warped, _labels(case, fixed_seg)))
    if case.has_landmarks:
        from ..landmarks import read_points
        f = read_points(case.fixed_landmarks, fixed)
        m = read_points(case.moving_landmarks, sitk.ReadImage(case.moving))
        mean, sd, _ = tre(f, m, field)
        metrics.update(tre_mean_mm=mean, tre_sd_mm=sd)
    if case.true_field:
        true = sitk.ReadImage(case.true_field, sitk.sitkVectorFloat64)
        if true.GetSize() != fixed.GetSize():
            true = sitk.Resample(true, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
        error = np.linalg.norm(disp - sitk.GetArrayFromImage(true), axis=-1)
        region = _evaluation_region(case, fixed)
        metrics.update(epe_mean_mm=float(error[region].mean()), epe_p95_mm=float(np.percentile(error[region], 95)))
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in metrics.items()}


def _evaluation_region(case: Case, fixed: sitk.Image) -> np.ndarray:
    """Where endpoint error counts: labelled anatomy if any, else the fixed image's foreground."""
    if case.fixed_seg:
        region = sitk.GetArrayFromImage(sitk.ReadImage(case.fixed_seg)) > 0
        if region.any():
            return region
    from ..volume import foreground_mask, normalise_intensity
    image01, _ = normalise_intensity(fixed, "auto")
    return np.asarray(foreground_mask(image01))
