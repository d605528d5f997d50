"""Registering one pair with a trained SAMIR model, then optionally refining the network's field
on the pair (instance optimisation), as uniGradICON and SAMConvex do.

The network runs on its own grid: the working grid's frame and extent at the spacing the model
was trained at. Its field, in that grid's voxels, becomes a
:class:`~SAMRegistrationLib.displacement.DisplacementField` and is resampled onto the working
grid for the pipeline. The refinement is the engine's Adam stage
(:func:`~SAMRegistrationLib.optimisers.adam_refine`) started from the network's field, on the
frozen features (the finest term of the HFC loss) plus the intensities, with diffusion
regularisation: the paper's losses with squared differences in place of NCC, whose gradients
the engine computes by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import SimpleITK as sitk
import torch

from ...errors import CheckpointError
from ...grid import Grid
from .frozen import frozen_on_grid
from .model import SamirConfig, SamirModel, predict


def load_model(path: Path, sha256: Optional[str] = None) -> SamirModel:
    """A SAMIR model from a ``samreg train samir`` model file (``model.pt``), read with
    ``weights_only=True`` and checked against ``sha256`` (or the ``model.sha256`` beside it)."""
    if not Path(path).is_file():
        raise CheckpointError(f"samir model not found: {path}")
    from ...training.checkpointing import read_model
    saved = read_model(Path(path), sha256, task="samir")
    try:
        model = SamirModel(SamirConfig.parse(saved["task_config"], where="model config"))
        model.load_state_dict(saved["model"], strict=True)
    except Exception as exc:  # a model file of another shape or version
        raise CheckpointError(f"{path} is not a usable samir model ({exc.__class__.__name__}: {str(exc)[:120]}).") from exc
    return model.eval()


@dataclass
class PairInputs:
    grid: Grid                  # the network's grid
    fixed: torch.Tensor         # (1, C, D, H, W)
    moving: torch.Tensor        # (1, C, D, H, W), through the affine


def network_grid(working: Grid, spacing: float) -> Grid:
    """The working grid's frame and extent at the model's spacing."""
    return working if all(abs(s - spacing) < 1e-6 for s in working.spacing) else working.with_spacing(spacing)


def pair_inputs(model: SamirModel, fixed_stack, moving_stack, fixed01: sitk.Image, moving01: sitk.Image,
                affine: Optional[sitk.Transform], grid: Grid, stack_in_fixed_frame: bool = False) -> PairInputs:
    """Frozen features (and intensities, if the model takes them) of both images on ``grid``.
    The moving image is sampled through ``affine``; its stack too, unless ``stack_in_fixed_frame``
    (a stack of the moving image already resampled into the fixed frame through the affine)."""
    from ...resample import image_on_grid
    projection = model.projection()
    fixed = frozen_on_grid(fixed_stack, projection, grid)
    moving = frozen_on_grid(moving_stack, projection, grid, None if stack_in_fixed_frame else affine)
    if model.config.intensity:
        fixed = torch.cat([fixed, image_on_grid(fixed01, grid)[0].float()])
        moving = torch.cat([moving, image_on_grid(moving01, grid, affine)[0].float()])
    return PairInputs(grid, fixed[None], moving[None])


def _unit(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return x / math.sqrt(max(float(reference[0].flatten(1).var(1).sum()), 1e-12))


def with_mind(inputs: PairInputs, fixed01: sitk.Image, moving01: sitk.Image,
              affine: Optional[sitk.Transform], frozen_weight: float = 1.0) -> PairInputs:
    """``inputs`` plus MIND-SSC descriptors of both images on its grid (the moving one through
    ``affine``), each block scaled to unit total variance on the fixed image, the frozen block
    then by ``frozen_weight`` (1: both weigh the same in the refinement's squared differences)."""
    from ...features.mind import mind_ssc
    from ...resample import image_on_grid
    fixed_mind = mind_ssc(image_on_grid(fixed01, inputs.grid))
    moving_mind = mind_ssc(image_on_grid(moving01, inputs.grid, affine))
    weight = math.sqrt(frozen_weight)          # squared differences: the block's weight is its scale squared
    fixed = torch.cat([weight * _unit(inputs.fixed, inputs.fixed), _unit(fixed_mind, fixed_mind)], 1)
    moving = torch.cat([weight * _unit(inputs.moving, inputs.fixed), _unit(moving_mind, fixed_mind)], 1)
    return PairInputs(inputs.grid, fixed, moving)


def network_field(model: SamirModel, inputs: PairInputs) -> torch.Tensor:
    """The network's finest field, (1, 3, D, H, W) in voxels of ``inputs.grid``."""
    with torch.inference_mode():
        return predict(model, inputs.fixed, inputs.moving)[0].clone()


def refine(inputs: PairInputs, field: torch.Tensor, iterations: int, lambda_reg: float, learning_rate: float,
           mask: Optional[torch.Tensor] = None, reporter=None) -> torch.Tensor:
    """Adam on the pair from ``field`` for ``iterations`` steps (0: ``field`` unchanged)."""
    if iterations <= 0:
        return field
    from ...optimisers import adam_refine
    fixed, moving = inputs.fixed.float(), inputs.moving.float()
    return adam_refine(_unit(fixed, fixed), _unit(moving, fixed), field.float(), iterations, lambda_reg, learning_rate,
                       reporter, mask=mask)


def on_working_grid(inputs: PairInputs, field: torch.Tensor, working: Grid):
    """The network grid's voxel field as a world-mm :class:`DisplacementField` on ``working``."""
    from ...displacement import DisplacementField
    result = DisplacementField.from_voxels(inputs.grid, field.float().cpu())
    return result if inputs.grid == working else result.resample(working)


def _resampled(image: sitk.Image, grid: Grid, transform: Optional[sitk.Transform] = None) -> sitk.Image:
    return sitk.Resample(image, grid.reference_image(), transform or sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def _refine_grid(working: Grid, spacing: float) -> Grid:
    """The instance optimisation's grid: the working grid's frame at ``spacing`` (isotropic), or
    the working grid itself where that is coarser on every axis."""
    return working if spacing <= min(working.spacing) + 1e-6 else working.with_spacing(spacing)


def _mask_on(mask: torch.Tensor, shape) -> torch.Tensor:
    import torch.nn.functional as F
    return F.interpolate(mask[None, None].float(), size=tuple(shape), mode="trilinear", align_corners=True)[0, 0] > 0


def register_pair(problem, params, path: Path, sha256: Optional[str]):
    """Method ``samir``'s run: the network's field on the pair, refined for ``params.iterations``.

    The frozen features are LiteMedSAM's stacks of the two images resampled onto the network's
    grid (the moving one through the affine), as in training; the refinement samples the same
    stacks on its own grid, so nothing is encoded twice.
    """
    import time

    from ...displacement import DisplacementField
    from ...field_ops import repair_folds
    from ...problem import MethodResult
    from .frozen import litemedsam_encoder

    model = load_model(path, sha256)
    reporter = problem.reporter
    grid = network_grid(problem.grid, model.config.spacing)
    encoder = litemedsam_encoder(model.config.canvas, problem.settings)
    started = time.perf_counter()
    fixed_image = _resampled(problem.fixed_image, grid)
    moving_image = _resampled(problem.moving_image, grid, problem.affine)
    fixed_stack, fixed_info = encoder.stack(fixed_image, reporter, (0.0, 0.5))
    moving_stack, _ = encoder.stack(moving_image, reporter, (0.5, 1.0))
    encoded = time.perf_counter()

    def inputs_on(target: Grid) -> PairInputs:
        return pair_inputs(model, fixed_stack, moving_stack, problem.fixed_image, problem.moving_image,
                           problem.affine, target, stack_in_fixed_frame=True)

    reporter("optimise", 0.0, "samir network")
    field = network_field(model, inputs_on(grid))
    networked = time.perf_counter()
    result_grid, result = grid, field
    folded = 0
    if params.iterations > 0:
        reporter("optimise", 0.5, f"samir instance optimisation ({params.iterations} iterations)")
        result_grid = _refine_grid(problem.grid, params.refine_spacing)
        start = DisplacementField.from_voxels(grid, field.float()).resample(result_grid).to_voxels()
        targets = inputs_on(result_grid)
        if params.refine_mind:
            targets = with_mind(targets, problem.fixed_image, problem.moving_image, problem.affine,
                                params.frozen_weight)
        result = refine(targets, start, params.iterations, params.lambda_reg,
                        params.learning_rate, _mask_on(problem.mask, result_grid.shape), reporter)
        if params.repair_folds:
            result, folded = repair_folds(result)
    refined = time.perf_counter()
    out = DisplacementField.from_voxels(result_grid, result.float().cpu())
    if result_grid != problem.grid:
        out = out.resample(problem.grid)
    info = {"model": str(path), "network_grid": list(grid.size), "network_spacing_mm": model.config.spacing,
            "refine_grid": list(result_grid.size) if params.iterations > 0 else None,
            "iterations": params.iterations, "folds_repaired": int(folded),
            "encode_seconds": round(encoded - started, 3), "network_seconds": round(networked - encoded, 3),
            "refine_seconds": round(refined - networked, 3), "slice_axis": fixed_info.get("axis")}
    return MethodResult(out, info)
