"""Instance optimisation of a learned network's field on the pair, shared by the learned methods
(``samir``, ``assisted``), as uniGradICON and SAMConvex refine theirs.

A network runs on its own grid: the working grid's frame and extent at the spacing it was
trained at (:func:`network_grid`). Its field then starts the engine's Adam stage
(:func:`~SAMRegistrationLib.optimisers.adam_refine`) on a grid of ``refine_spacing``, on
per-voxel inputs of both images (the method's: frozen features, intensities, masks) plus
MIND-SSC descriptors, with diffusion regularisation; folds are repaired as in ``convexadam``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import SimpleITK as sitk
import torch

from ..grid import Grid


@dataclass
class PairInputs:
    grid: Grid                  # the network's grid
    fixed: torch.Tensor         # (1, C, D, H, W)
    moving: torch.Tensor        # (1, C, D, H, W), through the affine


def network_grid(working: Grid, spacing: float) -> Grid:
    """The working grid's frame and extent at the model's spacing."""
    return working if all(abs(s - spacing) < 1e-6 for s in working.spacing) else working.with_spacing(spacing)


def _unit(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return x / math.sqrt(max(float(reference[0].flatten(1).var(1).sum()), 1e-12))


def with_mind(inputs: PairInputs, fixed01: sitk.Image, moving01: sitk.Image,
              affine: Optional[sitk.Transform], frozen_weight: float = 1.0) -> PairInputs:
    """``inputs`` plus MIND-SSC descriptors of both images on its grid (the moving one through
    ``affine``), each block scaled to unit total variance on the fixed image, the frozen block
    then by ``frozen_weight`` (1: both weigh the same in the refinement's squared differences)."""
    from ..features.mind import mind_ssc
    from ..resample import image_on_grid
    fixed_mind = mind_ssc(image_on_grid(fixed01, inputs.grid))
    moving_mind = mind_ssc(image_on_grid(moving01, inputs.grid, affine))
    weight = math.sqrt(frozen_weight)          # squared differences: the block's weight is its scale squared
    fixed = torch.cat([weight * _unit(inputs.fixed, inputs.fixed), _unit(fixed_mind, fixed_mind)], 1)
    moving = torch.cat([weight * _unit(inputs.moving, inputs.fixed), _unit(moving_mind, fixed_mind)], 1)
    return PairInputs(inputs.grid, fixed, moving)


def refine(inputs: PairInputs, field: torch.Tensor, iterations: int, lambda_reg: float, learning_rate: float,
           mask: Optional[torch.Tensor] = None, reporter=None) -> torch.Tensor:
    """Adam on the pair from ``field`` for ``iterations`` steps (0: ``field`` unchanged)."""
    if iterations <= 0:
        return field
    from ..optimisers import adam_refine
    fixed, moving = inputs.fixed.float(), inputs.moving.float()
    return adam_refine(_unit(fixed, fixed), _unit(moving, fixed), field.float(), iterations, lambda_reg, learning_rate,
                       reporter, mask=mask)


def on_working_grid(grid: Grid, field: torch.Tensor, working: Grid):
    """A field in voxels of ``grid`` as a world-mm :class:`DisplacementField` on ``working``."""
    from ..displacement import DisplacementField
    result = DisplacementField.from_voxels(grid, field.float().cpu())
    return result if grid == working else result.resample(working)


def resampled(image: sitk.Image, grid: Grid, transform: Optional[sitk.Transform] = None) -> sitk.Image:
    return sitk.Resample(image, grid.reference_image(), transform or sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def refine_grid(working: Grid, spacing: float) -> Grid:
    """The instance optimisation's grid: the working grid's frame at ``spacing`` (isotropic), or
    the working grid itself where that is coarser on every axis."""
    return working if spacing <= min(working.spacing) + 1e-6 else working.with_spacing(spacing)


def mask_on(mask: torch.Tensor, shape) -> torch.Tensor:
    import torch.nn.functional as F
    return F.interpolate(mask[None, None].float(), size=tuple(shape), mode="trilinear", align_corners=True)[0, 0] > 0


def refine_on_pair(problem, params, grid: Grid, field: torch.Tensor, inputs_on: Callable[[Grid], PairInputs],
                   input_weight: float) -> tuple[Grid, torch.Tensor, int]:
    """The network's ``field`` (voxels of ``grid``) refined for ``params.iterations`` on
    ``inputs_on(refine grid)`` (plus MIND-SSC with ``params.refine_mind``, the method's inputs
    weighted by ``input_weight``), folds repaired with ``params.repair_folds``.
    Returns (the result's grid, the field in its voxels, voxels repaired); with 0 iterations the
    network's field unchanged."""
    from ..displacement import DisplacementField
    from ..field_ops import repair_folds
    if params.iterations <= 0:
        return grid, field, 0
    problem.reporter("optimise", 0.5, f"instance optimisation ({params.iterations} iterations)")
    result_grid = refine_grid(problem.grid, params.refine_spacing)
    start = DisplacementField.from_voxels(grid, field.float()).resample(result_grid).to_voxels()
    targets = inputs_on(result_grid)
    if params.refine_mind:
        targets = with_mind(targets, problem.fixed_image, problem.moving_image, problem.affine, input_weight)
    result = refine(targets, start, params.iterations, params.lambda_reg, params.learning_rate,
                    mask_on(problem.mask, result_grid.shape), problem.reporter)
    folded = 0
    if params.repair_folds:
        result, folded = repair_folds(result)
    return result_grid, result, int(folded)

