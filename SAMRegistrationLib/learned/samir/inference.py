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
    return working if abs(min(working.spacing) - spacing) < 1e-6 else working.with_spacing(spacing)


def pair_inputs(model: SamirModel, fixed_stack, moving_stack, fixed01: sitk.Image, moving01: sitk.Image,
                affine: Optional[sitk.Transform], working: Grid) -> PairInputs:
    """Frozen features (and intensities, if the model takes them) of both images on the network's grid."""
    from ...resample import image_on_grid
    grid = network_grid(working, model.config.spacing)
    projection = model.projection()
    fixed = frozen_on_grid(fixed_stack, projection, grid)
    moving = frozen_on_grid(moving_stack, projection, grid, affine)
    if model.config.intensity:
        fixed = torch.cat([fixed, image_on_grid(fixed01, grid)[0].float()])
        moving = torch.cat([moving, image_on_grid(moving01, grid, affine)[0].float()])
    return PairInputs(grid, fixed[None], moving[None])


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
    scale = 1.0 / math.sqrt(max(float(fixed[0].flatten(1).var(1).sum()), 1e-12))
    return adam_refine(fixed * scale, moving * scale, field.float(), iterations, lambda_reg, learning_rate,
                       reporter, mask=mask)


def on_working_grid(inputs: PairInputs, field: torch.Tensor, working: Grid):
    """The network grid's voxel field as a world-mm :class:`DisplacementField` on ``working``."""
    from ...displacement import DisplacementField
    result = DisplacementField.from_voxels(inputs.grid, field.float().cpu())
    return result if inputs.grid == working else result.resample(working)
