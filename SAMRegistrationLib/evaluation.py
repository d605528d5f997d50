"""How good a registration is: the scores ``report.json`` carries under ``metrics``.

:func:`evaluate` takes the final fixed->moving displacement field on the fixed grid, the
affine pre-alignment alone, and whatever ground truth the run has (label maps of both images,
paired landmarks, prompt regions) and scores three mappings:

* ``initial``: the identity (the images as they are);
* ``affine``: the affine stage alone (only when it ran, and only with label maps or landmarks);
* final: the whole mapping (affine and deformable), at the top level of the metrics.

Regularity (``sdlogj``, ``fold_percent``) comes from the Jacobian determinant of the final field;
Dice and HD95 from the moving label map resampled (nearest neighbour) through each mapping; TRE
from the fixed landmarks mapped through it. With prompt regions, each region is also compared
with the label map of its own image (``regions``) and each used pair's Dice is given after the
affine stage and after the registration (``region_pairs``). The formulas are
``SAMRegistrationLib/metrics.py``'s; this module only decides what is scored against what.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .affine import affine_to_matrix
from .fields import displacement_transform
from .metrics import (fold_percent, jacobian_determinant, region_pair_dice, resample_segmentation, sdlogj,
                      segmentation_metrics, tre, tre_initial)
from .report_schema import Metrics, RegionPair, RegionQuality, StageMetrics


@dataclass
class GroundTruth:
    """What a run can be scored against; every part optional.

    ``fixed_seg`` / ``moving_seg``: label maps (integer images) of the two images, both or
    neither; ``labels``: the labels to score (None: every non-zero label in either map).
    ``fixed_points`` / ``moving_points``: (N, 3) paired landmarks, LPS mm. ``regions``: the
    prompt regions, ``{"fixed": (label image, infos), "moving": (...)}`` as the prompt stage
    makes them (label i + 1 is ``infos[i]["label"]``)."""
    fixed_seg: Optional[sitk.Image] = None
    moving_seg: Optional[sitk.Image] = None
    labels: Optional[Sequence[int]] = None
    fixed_points: Optional[np.ndarray] = None
    moving_points: Optional[np.ndarray] = None
    regions: dict = dataclass_field(default_factory=dict)

    @property
    def has_segmentations(self) -> bool:
        return self.fixed_seg is not None and self.moving_seg is not None

    @property
    def has_landmarks(self) -> bool:
        return self.fixed_points is not None and self.moving_points is not None


@dataclass
class Evaluation:
    """The scores and the by-products the outputs need (so nothing is computed twice)."""
    metrics: Metrics
    jacobian: np.ndarray                        # (z, y, x) det J of the final mapping on the fixed grid
    warped_seg: Optional[sitk.Image] = None     # the moving label map through the final mapping


def labels_in(*images: sitk.Image) -> list[int]:
    """The non-zero values found in any of ``images``, sorted."""
    values: set[int] = set()
    for image in images:
        values |= set(int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)))
    values.discard(0)
    return sorted(values)


def landmark_errors(fixed_points: np.ndarray, moving_points: np.ndarray,
                    transform: Optional[sitk.Transform] = None) -> np.ndarray:
    """|A(f) - m| per landmark pair, mm, for an affine-like ``transform`` (identity when None)."""
    fixed_points = np.asarray(fixed_points, dtype=np.float64)
    moving_points = np.asarray(moving_points, dtype=np.float64)
    if transform is None:
        return np.linalg.norm(fixed_points - moving_points, axis=1)
    matrix, offset = affine_to_matrix(transform)
    return np.linalg.norm(fixed_points @ matrix.T + offset - moving_points, axis=1)


def evaluate(field: sitk.Image, truth: Optional[GroundTruth] = None, affine: Optional[sitk.Transform] = None,
             transform: Optional[sitk.Transform] = None) -> Evaluation:
    """Score the fixed->moving displacement ``field`` (an ITK displacement field image on the
    fixed grid, LPS mm: what ``displacement.nrrd`` holds).

    ``affine``: the affine stage's transform, None when the stage did not run (then there is
    no ``affine`` block, and the region pairs' "after the affine stage" is the identity).
    ``transform``: ``field`` as a SimpleITK transform, when the caller has one already.
    """
    truth = truth or GroundTruth()
    transform = transform if transform is not None else displacement_transform(field)
    displacement = sitk.GetArrayViewFromImage(field)                 # (z, y, x, 3), no copy
    jac = jacobian_determinant(displacement, field.GetSpacing(), np.asarray(field.GetDirection()).reshape(3, 3))

    final: dict = {"sdlogj": sdlogj(jac), "fold_percent": fold_percent(jac)}
    initial: dict = {"sdlogj": 0.0, "fold_percent": 0.0}
    after_affine: dict = {}
    warped_seg = None
    if truth.has_segmentations:
        labels = list(truth.labels) if truth.labels else labels_in(truth.fixed_seg, truth.moving_seg)
        warped_seg = resample_segmentation(truth.moving_seg, truth.fixed_seg, transform)
        final.update(segmentation_metrics(truth.fixed_seg, warped_seg, labels))
        initial.update(_segmentation_scores(truth, labels, None))
        if affine is not None:
            after_affine.update(_segmentation_scores(truth, labels, affine))
    if truth.has_landmarks:
        mean, sd, per_point = tre(truth.fixed_points, truth.moving_points, field)
        final.update({"tre_mean_mm": mean, "tre_sd_mm": sd, "tre_median_mm": float(np.median(per_point))})
        mean0, sd0, per_point0 = tre_initial(truth.fixed_points, truth.moving_points)
        initial.update({"tre_mean_mm": mean0, "tre_sd_mm": sd0, "tre_median_mm": float(np.median(per_point0))})
        if affine is not None:
            errors = landmark_errors(truth.fixed_points, truth.moving_points, affine)
            after_affine.update({"tre_mean_mm": float(errors.mean()), "tre_sd_mm": float(errors.std())})
    quality = region_quality(truth)
    if quality:
        final["regions"] = quality
    if truth.regions:
        final["region_pairs"] = [RegionPair(**pair) for pair in region_pair_dice(
            truth.regions["fixed"][0], truth.regions["moving"][0],
            [info["label"] for info in truth.regions["fixed"][1]], transform, affine)]
    final["initial"] = StageMetrics(**initial)
    if after_affine:
        final["affine"] = StageMetrics(**after_affine)
    return Evaluation(Metrics(**final), jac, warped_seg)


def _segmentation_scores(truth: GroundTruth, labels: list[int], transform: Optional[sitk.Transform]) -> dict:
    """Dice and HD95 of the moving label map through ``transform`` (identity when None)."""
    return segmentation_metrics(truth.fixed_seg, resample_segmentation(truth.moving_seg, truth.fixed_seg, transform),
                                labels)


def region_quality(truth: GroundTruth) -> dict[str, list[RegionQuality]]:
    """Each prompt region against the label map of its own image (where that map has its size)."""
    segmentations = {"fixed": truth.fixed_seg, "moving": truth.moving_seg}
    out: dict[str, list[RegionQuality]] = {}
    for side, (label_image, infos) in truth.regions.items():
        segmentation = segmentations[side]
        if segmentation is not None and segmentation.GetSize() == label_image.GetSize():
            from .prompting.segment import region_quality as quality_of
            out[side] = [RegionQuality(**entry) for entry in quality_of(label_image, segmentation, infos)]
    return out
