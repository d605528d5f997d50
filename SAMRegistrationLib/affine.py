"""Built-in affine pre-alignment (fixed -> moving physical map, ITK convention).

Rigid then affine, Mattes mutual information (works across modalities), multi-resolution,
on copies of the [0, 1]-normalised images resampled to a coarse isotropic grid. The rigid
stage is started both from the identity and from the centres of mass; the affine stage
continues from the better of the two, and the identity is kept if nothing beats it. So images
that already overlap well are not pushed away by a field-of-view difference, and images with
a large table shift are still found.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from .grid import Grid

log = logging.getLogger(__name__)

COARSE_SPACING_MM = 3.0
MAX_LOG_SCALE = np.log(2.0)   # reject affines that shrink or grow a direction by more than 2x


def _coarse(image: sitk.Image, spacing: float) -> sitk.Image:
    grid = Grid.from_image(image)
    target = max(spacing, min(grid.spacing))
    coarse = grid.with_spacing(target)
    smoothed = sitk.SmoothingRecursiveGaussian(image, [max(0.0, 0.5 * (target - s)) + 1e-3 for s in grid.spacing])
    return sitk.Resample(smoothed, coarse.reference_image(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _method(fixed: sitk.Image, seed: int) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=100,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def _evaluate(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # too few overlapping samples
        return 0.0


def _plausible(affine: sitk.AffineTransform) -> bool:
    matrix = np.asarray(affine.GetMatrix()).reshape(3, 3)
    singular = np.linalg.svd(matrix, compute_uv=False)
    return np.linalg.det(matrix) > 0 and bool(np.all(np.abs(np.log(singular)) < MAX_LOG_SCALE))


def _rigid(fixed: sitk.Image, moving: sitk.Image, start: sitk.Euler3DTransform) -> sitk.Euler3DTransform:
    rigid = _method(fixed, seed=1)
    rigid.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=True)
    result = rigid.Execute(fixed, moving)
    return sitk.Euler3DTransform(result) if not isinstance(result, sitk.Euler3DTransform) else result


def _as_affine(rigid: sitk.Euler3DTransform) -> sitk.AffineTransform:
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    return affine


def _affine_from(fixed: sitk.Image, moving: sitk.Image, rigid: sitk.Euler3DTransform) -> sitk.AffineTransform:
    affine = _as_affine(rigid)
    method = _method(fixed, seed=2)
    method.SetInitialTransform(affine, inPlace=True)
    method.Execute(fixed, moving)
    if not _plausible(affine):
        log.info("affine stage gave an implausible matrix; keeping the rigid result")
        return _as_affine(rigid)
    return affine


def affine_prealign(fixed01: sitk.Image, moving01: sitk.Image,
                    progress: Optional[Callable[[float, str], None]] = None) -> tuple[sitk.AffineTransform, dict]:
    """Return the fixed->moving affine and a small report (metric values, chosen start)."""
    progress = progress or (lambda f, m: None)
    fixed_c, moving_c = _coarse(fixed01, COARSE_SPACING_MM), _coarse(moving01, COARSE_SPACING_MM)
    centre = Grid.from_image(fixed_c).index_to_world((np.asarray(fixed_c.GetSize()) - 1) / 2.0)

    identity_start = sitk.Euler3DTransform()
    identity_start.SetCenter(centre.tolist())
    moments_start = sitk.CenteredTransformInitializer(fixed_c, moving_c, sitk.Euler3DTransform(),
                                                      sitk.CenteredTransformInitializerFilter.MOMENTS)
    moments_start = sitk.Euler3DTransform(moments_start)

    identity_affine = sitk.AffineTransform(3)
    identity_affine.SetCenter(centre.tolist())
    candidates = [("identity", identity_affine, _evaluate(fixed_c, moving_c, identity_affine))]
    # rigid from both starts; the affine stage (the costlier one) only from the better of them
    rigids = []
    for index, (name, start) in enumerate((("identity", identity_start), ("moments", moments_start))):
        progress(index / 3, f"rigid from {name}")
        try:
            rigid = _rigid(fixed_c, moving_c, start)
        except RuntimeError as exc:  # e.g. no overlap from this start
            log.info("rigid from %s failed: %s", name, str(exc).splitlines()[-1:])
            continue
        rigids.append((name, rigid, _evaluate(fixed_c, moving_c, rigid)))
    if rigids:
        name, rigid, _ = min(rigids, key=lambda c: c[2])
        progress(2 / 3, f"affine from the rigid fit started at {name}")
        try:
            affine = _affine_from(fixed_c, moving_c, rigid)
            candidates.append((f"affine from {name}", affine, _evaluate(fixed_c, moving_c, affine)))
        except RuntimeError as exc:
            log.info("affine stage failed: %s", str(exc).splitlines()[-1:])
            candidates.append((f"rigid from {name}", _as_affine(rigid), _evaluate(fixed_c, moving_c, rigid)))
    progress(1.0, "affine done")
    # Mattes MI is reported negated by ITK: lower is better.
    name, best, value = min(candidates, key=lambda c: c[2])
    report = {"chosen": name, "metric": {c[0]: round(c[2], 5) for c in candidates},
              "matrix": list(best.GetMatrix()), "translation": list(best.GetTranslation()),
              "center": list(best.GetCenter())}
    return best, report


def affine_to_matrix(affine: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """Return (A, b) with T(p) = A p + b for an ITK affine-like transform."""
    if isinstance(affine, sitk.AffineTransform) or hasattr(affine, "GetMatrix"):
        matrix = np.asarray(affine.GetMatrix(), dtype=float).reshape(3, 3)
        centre = np.asarray(affine.GetCenter(), dtype=float)
        translation = np.asarray(affine.GetTranslation(), dtype=float)
        return matrix, translation + centre - matrix @ centre
    raise TypeError(f"not an affine transform: {affine}")


def identity_affine() -> sitk.AffineTransform:
    return sitk.AffineTransform(3)
