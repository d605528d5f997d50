"""Method ``pyramid`` (the default): coarse-to-fine coupled convex registration on a feature
pyramid, after SAMConvex (Li, Tian et al., "SAMConvex: Fast Discrete Optimization for CT
Registration using Self-supervised Anatomical Embedding and Correlation Pyramid", MICCAI 2023),
on our encoders' features (MIND-SSC, LiteMedSAM, fused, auto) instead of the paper's SAM embedding.

A cost volume of cosine similarity on L2-normalised features at 1/4, 1/2 and full working
resolution (search radii 2, 2, 2), ConvexAdam's coupled convex step at each level, the levels
composed through the field; then Adam instance optimisation at full resolution on the features
plus, where the two images share a contrast, their intensities (smoothed once) as one more
channel; fold repair.
When Adam runs, the full-resolution convex level is left out (Adam refines there anyway); across
contrasts Adam is skipped and that level kept. The algorithm is in :mod:`.algorithm` (torch),
loaded by :func:`run` only.

Measured (2026-11-30, this 2-core CPU, default encoder; Dice or TRE / fold %, convexadam in
brackets): acdc_fs1 0.905 / 0 (0.874; Elastix 0.896), acdc067 0.890 / 0 (0.864), brain 0.763 /
0 (0.730), lung 1.31 mm / 0.001 (1.33), spine 0.919 / 0 (0.903). The intensity channel is what
lifts the same-contrast cases (acdc_fs1 0.883 with Adam on features alone, 0.891 without Adam);
it costs accuracy on lung CT above weight 1 (1.35 mm at 2, 1.44 at 4), where lung density
changes with breathing, hence weight 1 with CT and 4 for MR pairs.
"""
from __future__ import annotations

import math
from typing import Optional

from pydantic import ConfigDict, Field, model_validator

from ...params import Parameters
from ...plugins import MethodPlugin


class PyramidParams(Parameters):
    """The pyramid's levels, its convex steps and the optional Adam stage."""
    model_config = ConfigDict(strict=True)

    factors: list[int] = Field(default_factory=lambda: [4, 2, 1],
                               description="working voxels per level voxel, coarse to fine (paper: 4, 2, 1; a "
                                           "finest level at 1/2 lost 0.01-0.045 Dice on the cardiac cases)")
    radii: list[int] = Field(default_factory=lambda: [2, 2, 2],
                             description="search half-width per level, in its voxels (paper 2, 3, 3; spine 0.919 "
                                         "with 2, 2, 2 vs 0.916 with 2, 3, 2 and faster)")
    full_level_with_adam: bool = Field(False, description="keep the full-resolution level (factor 1) when the "
                                                          "Adam stage runs; Adam refines there anyway (same Dice "
                                                          "within 0.001, a third of the time)")
    level_smooth: int = Field(3, ge=0, le=10, description="extra 3^3 box passes on each level's field (acdc_fs1 "
                                                          "0.891 vs 0.884 with 0, 0.887 with 1)")
    cost_scale: float = Field(0.5, gt=0.0, le=10.0, description="cost = this x SSD of unit vectors (= 2 (1 - cos)); "
                                                                "0.25 and 1.0 gave the same Dice")
    norm_floor: float = Field(0.1, ge=0.0, le=1.0, description="feature vectors shorter than this x the mean are "
                                                               "not inflated by the normalisation")
    level_ic_iterations: int = Field(0, ge=0, le=200, description="inverse-consistency steps at each level "
                                                                  "(acdc_fs1 0.889 vs 0.891, twice the time)")
    iterations: int = Field(50, ge=0, le=100000, description="Adam steps after the pyramid, on the features and, "
                                                             "where the images share a contrast, their intensities "
                                                             "(0: none)")
    intensity_weight: Optional[float] = Field(
        None, ge=0.0, le=100.0,
        description="the images' intensities as one more Adam channel, at this share of the features' total "
                    "variance, where the images share a contrast (none: 4 for MR pairs, 1 with CT, whose lung "
                    "density changes with breathing: lung 1.31 mm at 1, 1.35 at 2; acdc_fs1 0.904 at 4, 0.896 at 1)")
    intensity_smooth: int = Field(1, ge=0, le=10, description="3^3 box passes on both intensity channels, so a "
                                                              "difference in resolution is not matched as structure "
                                                              "(quick bench, moving re-sampled coarser: translation "
                                                              "error 1.23 -> 0.70 mm; brain 0.774 -> 0.763)")
    adam_across_contrasts: bool = Field(False, description="run the Adam stage (on features alone) where the "
                                                           "contrasts differ too (spine T1w->T2w 0.906 vs 0.916)")
    learning_rate: float = Field(0.2, gt=0.0, le=100.0, description="Adam learning rate (1.0 jitters)")
    lambda_reg: float = Field(0.3, ge=0.0, le=100.0, description="Adam's diffusion regularisation weight (at "
                                                                 "1.5 mm, scaled as convexadam's)")
    grid_sp_adam: Optional[int] = Field(None, ge=1, le=8, description="Adam field grid in working voxels (none: "
                                                                      "as convexadam chooses)")
    smooth_passes: int = Field(3, ge=0, le=10, description="3^3 box filters applied to the Adam field each step")
    repair_folds: bool = Field(True, description="locally smooth away any det J <= 0 at the end")

    @model_validator(mode="after")
    def _levels(self) -> "PyramidParams":
        if not self.factors or len(self.factors) != len(self.radii):
            raise ValueError(f"factors {self.factors} and radii {self.radii} must be non-empty lists of equal length")
        if any(not 1 <= f <= 16 for f in self.factors) or any(not 1 <= r <= 6 for r in self.radii):
            raise ValueError(f"factors must be 1..16 and radii 1..6, got {self.factors} and {self.radii}")
        if list(self.factors) != sorted(self.factors, reverse=True):
            raise ValueError(f"factors go from coarse to fine (decreasing), got {self.factors}")
        return self


#: the intensity channel's default weight: MR pairs, and pairs with a CT image
MR_INTENSITY_WEIGHT = 4.0
CT_INTENSITY_WEIGHT = 1.0


def intensity_weight(params: PyramidParams, modalities: tuple[str, str]) -> float:
    if params.intensity_weight is not None:
        return float(params.intensity_weight)
    return CT_INTENSITY_WEIGHT if "ct" in modalities else MR_INTENSITY_WEIGHT


def run(problem, params: PyramidParams):
    from ...displacement import DisplacementField
    from ...problem import MethodResult
    from ..convexadam import adam_grid_factor, effective_lambda
    from .algorithm import pyramid_register

    anatomy = int(problem.mask.sum())
    adam_factor = params.grid_sp_adam or adam_grid_factor(anatomy, problem.spacing)
    lambda_reg = effective_lambda(params.lambda_reg, problem.spacing)
    fixed, moving = problem.features()
    same_contrast = problem.same_contrast()
    iterations = params.iterations if same_contrast or params.adam_across_contrasts else 0
    factors, radii = list(params.factors), list(params.radii)
    if iterations and not params.full_level_with_adam and len(factors) > 1 and factors[-1] == 1:
        factors, radii = factors[:-1], radii[:-1]
    weight = intensity_weight(params, problem.modalities)
    extra, intensity_scale = None, 0.0
    if iterations and same_contrast and weight > 0:
        fixed_intensity, moving_intensity = problem.intensities()
        if params.intensity_smooth:
            from ...field_ops import box3
            fixed_intensity = box3(fixed_intensity[None], times=params.intensity_smooth)[0]
            moving_intensity = box3(moving_intensity[None], times=params.intensity_smooth)[0]
        feature_variance = float(fixed.flatten(1).var(1).sum())
        intensity_scale = math.sqrt(weight * feature_variance / max(float(fixed_intensity.var()), 1e-12))
        extra = (fixed_intensity * intensity_scale, moving_intensity * intensity_scale)
    result = pyramid_register(
        fixed, moving, factors=tuple(factors), radii=tuple(radii), cost_scale=params.cost_scale,
        ic_iterations=params.level_ic_iterations, smooth=params.level_smooth, floor=params.norm_floor,
        adam_factor=adam_factor, iterations=iterations, lambda_reg=lambda_reg,
        learning_rate=params.learning_rate, passes=params.smooth_passes, repair=params.repair_folds,
        mask=problem.mask, adam_extra=extra, reporter=problem.reporter)
    field = DisplacementField.from_voxels(problem.grid, result.displacement.float().cpu())
    info = {**result.info, "same_contrast": same_contrast, "adam_iterations": iterations,
            "intensity_weight": weight if extra is not None else 0.0, "intensity_scale": round(intensity_scale, 4),
            "lambda_effective": lambda_reg, "grid_sp_adam": adam_factor, "anatomy_voxels": anatomy}
    return MethodResult(field, info)


PLUGIN = MethodPlugin(
    name="pyramid",
    summary="coarse-to-fine convex registration on a 1/4, 1/2, 1 feature pyramid (SAMConvex)",
    Params=PyramidParams,
    run=run,
)
