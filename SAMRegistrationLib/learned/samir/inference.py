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

from pathlib import Path
from typing import Optional

import SimpleITK as sitk
import torch

from ...grid import Grid
from ..refinement import PairInputs, network_grid, on_working_grid, refine_on_pair, resampled
from .frozen import frozen_on_grid
from .model import SamirConfig, SamirModel, predict


def load_model(path: Path, sha256: Optional[str] = None) -> SamirModel:
    """A ``samir`` model from a ``samreg train samir`` model file, read with ``weights_only=True``
    and checked against ``sha256`` (or the ``model.sha256`` beside it)."""
    from ...training.checkpointing import load_trained_model
    return load_trained_model(path, sha256, "samir", lambda config: SamirModel(SamirConfig.parse(config, where="model config")))


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


def network_field(model: SamirModel, inputs: PairInputs) -> torch.Tensor:
    """The network's finest field, (1, 3, D, H, W) in voxels of ``inputs.grid``."""
    with torch.inference_mode():
        return predict(model, inputs.fixed, inputs.moving)[0].clone()


def register_pair(problem, params, path: Path, sha256: Optional[str]):
    """Method ``samir``'s run: the network's field on the pair, refined for ``params.iterations``.

    The frozen features are LiteMedSAM's stacks of the two images resampled onto the network's
    grid (the moving one through the affine), as in training; the refinement samples the same
    stacks on its own grid, so nothing is encoded twice.
    """
    import time

    from ...problem import MethodResult
    from .frozen import litemedsam_encoder

    model = load_model(path, sha256)
    reporter = problem.reporter
    grid = network_grid(problem.grid, model.config.spacing)
    encoder = litemedsam_encoder(model.config.canvas, problem.settings)
    started = time.perf_counter()
    fixed_image = resampled(problem.fixed_image, grid)
    moving_image = resampled(problem.moving_image, grid, problem.affine)
    fixed_stack, fixed_info = encoder.stack(fixed_image, reporter, (0.0, 0.5))
    moving_stack, _ = encoder.stack(moving_image, reporter, (0.5, 1.0))
    encoded = time.perf_counter()

    def inputs_on(target: Grid) -> PairInputs:
        return pair_inputs(model, fixed_stack, moving_stack, problem.fixed_image, problem.moving_image,
                           problem.affine, target, stack_in_fixed_frame=True)

    reporter("optimise", 0.0, "samir network")
    field = network_field(model, inputs_on(grid))
    networked = time.perf_counter()
    result_grid, result, folded = refine_on_pair(problem, params, grid, field, inputs_on, params.frozen_weight)
    refined = time.perf_counter()
    out = on_working_grid(result_grid, result, problem.grid)
    info = {"model": str(path), "network_grid": list(grid.size), "network_spacing_mm": model.config.spacing,
            "refine_grid": list(result_grid.size) if params.iterations > 0 else None,
            "iterations": params.iterations, "folds_repaired": int(folded),
            "encode_seconds": round(encoded - started, 3), "network_seconds": round(networked - encoded, 3),
            "refine_seconds": round(refined - networked, 3), "slice_axis": fixed_info.get("axis")}
    return MethodResult(out, info)
