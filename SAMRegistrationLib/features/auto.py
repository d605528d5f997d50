"""``auto``: the foundation-model fusion when the two images share a contrast, MIND-SSC alone
when they do not.

SAM-family embeddings describe what a slice looks like, so a T1 and a T2 image of the same
anatomy get different features and the fusion is pulled towards wrong matches; MIND-SSC
compares each voxel only with its own neighbours and is built for exactly that case.
Measured (README, "Why not always"): on the spine T1w -> T2w pair LiteMedSAM alone lowers
Dice below the initial overlap (0.67 vs 0.85), and MIND beats the fusion there (0.903 vs
0.901) and on the brain pair with the moving contrast inverted (0.624 vs 0.603); on the
same-contrast cases the fusion is better (brain, acdc067) or as good (lung).

Whether the contrasts agree is read from the intensities after the affine pre-alignment:
the Pearson correlation of both images, smoothed to a few millimetres so that residual
misalignment does not hide the relation, over the voxels where both hold anatomy. Measured:
same contrast 0.65 (brain, two subjects) to 0.97 (lung CT) on the shared cases, other contrasts
-0.70 (brain, moving contrast inverted) to -0.10 (spine T1w/T2w); the threshold lies between.
"""
from __future__ import annotations

import math

import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..grid import Grid
from ..encoders import build_encoder
from ..resample import image_on_grid
from ..volume import FOREGROUND_THRESHOLD

FUSED = "litemedsam+mind"
CROSS_CONTRAST = "mind"
AGREEMENT_SPACING_MM = 3.0     # grid the correlation is measured on
SAME_CONTRAST_MIN = 0.3        # correlation at or above which the contrasts count as the same
MIN_SAMPLES = 200              # fewer joint-anatomy voxels than this: no verdict, keep the fusion


def _smooth_within(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Two 3^3 box filters (about a Gaussian of one voxel's sigma) that average only voxels of
    ``mask``, so the step from anatomy to background (the same in every contrast) stays out."""
    weight = mask.float()
    values = volume * weight
    for _ in range(2):
        values = F.avg_pool3d(values, 3, stride=1, padding=1)
        weight = F.avg_pool3d(weight, 3, stride=1, padding=1)
    return values / weight.clamp_min(1e-6)


def contrast_agreement(fixed01: sitk.Image, moving01: sitk.Image, affine: sitk.Transform,
                       grid: Grid) -> float:
    """Correlation of the smoothed intensities of both images on a coarse copy of ``grid``
    (moving mapped through ``affine``), over voxels with anatomy in both; NaN if too few."""
    coarse = grid.with_spacing(max(AGREEMENT_SPACING_MM, min(grid.spacing)))
    fixed = image_on_grid(fixed01, coarse).float()
    moving = image_on_grid(moving01, coarse, affine).float()
    both = (fixed > FOREGROUND_THRESHOLD) & (moving > FOREGROUND_THRESHOLD)
    # one voxel off the anatomy's border: partial-volume voxels there are dim in every
    # contrast and would read as agreement
    both = -F.max_pool3d(-both.float(), 3, stride=1, padding=1) > 0.5
    if int(both.sum()) < MIN_SAMPLES:
        return math.nan
    inside = both.flatten()
    a = _smooth_within(fixed, both).flatten()[inside].double()
    b = _smooth_within(moving, both).flatten()[inside].double()
    a, b = a - a.mean(), b - b.mean()
    denominator = float((a.pow(2).sum() * b.pow(2).sum()).sqrt())
    return float((a * b).sum()) / denominator if denominator > 0 else math.nan


def choose_encoder(agreement: float) -> str:
    """The fusion unless the contrasts measurably differ (an undecided NaN keeps the fusion)."""
    return CROSS_CONTRAST if agreement < SAME_CONTRAST_MIN else FUSED


class AutoEncoder:
    name = "auto"

    def __init__(self, settings) -> None:
        self.settings = settings

    def features(self, fixed01, moving01, affine, grid, reporter):
        agreement = contrast_agreement(fixed01, moving01, affine, grid)
        chosen = choose_encoder(agreement)
        if math.isnan(agreement):
            verdict = "too little shared anatomy to compare contrasts"
        else:
            verdict = f"intensity correlation {agreement:.2f}: " + \
                ("same contrast" if chosen == FUSED else "different contrasts")
        reporter("encode", 0.0, f"{verdict}, encoder {chosen}")
        fixed, moving, info = build_encoder(chosen, self.settings).features(
            fixed01, moving01, affine, grid, reporter)
        choice = {"chosen": chosen, "intensity_correlation": None if math.isnan(agreement) else round(agreement, 3),
                  "same_contrast_min": SAME_CONTRAST_MIN}
        return fixed, moving, {"auto": choice, **info}


def make_auto(settings) -> AutoEncoder:
    return AutoEncoder(settings)
