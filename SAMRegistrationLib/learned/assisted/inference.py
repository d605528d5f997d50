"""Registering one pair with a trained ``assisted`` model, then optionally refining its field on
the pair (:mod:`..refinement`, the same instance optimisation as ``samir``).

The network runs on its own grid (the working grid's frame at the model's spacing) on both
images' intensities and their masks. Where the masks come from (``masks``):

- ``prompts``: the regions that the prompt decoder found from the clicks (or ``--auto-prompts``),
  paired fixed/moving by the prompts path, structure i in both images;
- ``files``: segmentations the user already has (``fixed_mask``, ``moving_mask``: label maps of
  the fixed and the moving image, e.g. from TotalSegmentator), one structure per label in both
  (or those of ``mask_labels``);
- ``none``: no masks (the network was trained to work without them too);
- ``auto`` (default): the prompts' regions if there are any, else the files if both are given,
  else none. The report says which was used (``resolved.method.masks``).

The instance optimisation refines on the intensities and the masks (with MIND-SSC), so the
masks' correspondence keeps pulling there too.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import SimpleITK as sitk
import torch

from ...errors import InputError
from ...grid import Grid
from ..refinement import PairInputs, network_grid, on_working_grid, refine_on_pair
from .config import AssistedConfig
from .masks import to_channels
from .model import AssistedModel, predict


def load_model(path: Path, sha256: Optional[str] = None) -> AssistedModel:
    """A ``assisted`` model from a ``samreg train assisted`` model file, read with ``weights_only=True``
    and checked against ``sha256`` (or the ``model.sha256`` beside it)."""
    from ...training.checkpointing import load_trained_model
    return load_trained_model(path, sha256, "assisted", lambda config: AssistedModel(AssistedConfig.parse(config, where="model config")))


class StructureMasks:
    """The pair's structures as masks on any grid: ``on(grid)`` -> ((N, D, H, W) fixed, moving),
    the moving ones through the affine (as the moving image is)."""

    def __init__(self, problem, params) -> None:
        self.problem, self.source, self.count = problem, "none", 0
        regions = problem.regions
        has_regions = regions is not None and regions[0].shape[0] > 0
        has_files = bool(params.fixed_mask) and bool(params.moving_mask)
        if params.masks == "prompts" and not has_regions:
            raise InputError("assisted: masks=prompts, but no prompted structure was found in both images "
                             "(give --moving-prompts/--fixed-prompts or --auto-prompts K)")
        if params.masks in ("auto", "prompts") and has_regions:
            self.source, self.count = "prompts", int(regions[0].shape[0])
        elif params.masks in ("auto", "files") and has_files:
            self._read_files(params)

    def _read_files(self, params) -> None:
        from ...volume import read_segmentation
        import numpy as np
        self.fixed_labels = read_segmentation(params.fixed_mask, "fixed mask")
        self.moving_labels = read_segmentation(params.moving_mask, "moving mask")
        fixed_values = set(np.unique(sitk.GetArrayViewFromImage(self.fixed_labels)).tolist()) - {0}
        moving_values = set(np.unique(sitk.GetArrayViewFromImage(self.moving_labels)).tolist()) - {0}
        wanted = params.mask_labels or sorted(fixed_values & moving_values)
        missing = [v for v in wanted if v not in fixed_values or v not in moving_values]
        if missing or not wanted:
            raise InputError(f"assisted: label(s) {missing or 'none'} not in both masks "
                             f"({params.fixed_mask}: {sorted(fixed_values)}, {params.moving_mask}: {sorted(moving_values)})")
        self.values = [int(v) for v in wanted]
        self.source, self.count = "files", len(self.values)

    def on(self, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        problem = self.problem
        if self.source == "prompts":
            from ...resample import sample_tensor
            points = grid.world_points()
            return tuple(sample_tensor(r[None].float().cpu(), problem.grid, points)[0] for r in problem.regions)
        if self.source == "files":
            from ...resample import image_on_grid
            def side(labels: sitk.Image, transform) -> torch.Tensor:
                return torch.stack([image_on_grid(sitk.Cast(labels == v, sitk.sitkFloat32), grid, transform)[0, 0]
                                    for v in self.values])
            return side(self.fixed_labels, None), side(self.moving_labels, problem.affine)
        empty = torch.zeros((0, *grid.shape))
        return empty, empty


def register_pair(problem, params, path: Path, sha256: Optional[str]):
    """Method ``assisted``'s run: the network's field from both images and their masks, refined
    for ``params.iterations``."""
    from ...problem import MethodResult
    from ...resample import image_on_grid

    model = load_model(path, sha256)
    channels = model.config.mask_channels
    structures = StructureMasks(problem, params)
    grid = network_grid(problem.grid, model.config.spacing)
    started = time.perf_counter()

    def inputs_on(target: Grid, with_masks: bool) -> tuple[PairInputs, torch.Tensor, torch.Tensor]:
        fixed = image_on_grid(problem.fixed_image, target)
        moving = image_on_grid(problem.moving_image, target, problem.affine)
        fixed_structures, moving_structures = structures.on(target)
        fixed_masks, moving_masks = to_channels(fixed_structures, channels), to_channels(moving_structures, channels)
        if with_masks and structures.count:
            fixed, moving = torch.cat([fixed, fixed_masks], 1), torch.cat([moving, moving_masks], 1)
        return PairInputs(target, fixed, moving), fixed_masks, moving_masks

    problem.reporter("optimise", 0.0, f"assisted network (masks: {structures.source})")
    images, fixed_masks, moving_masks = inputs_on(grid, with_masks=False)
    with torch.inference_mode():
        field = predict(model, images.fixed, images.moving, fixed_masks, moving_masks)[0].clone()
    networked = time.perf_counter()
    result_grid, result, folded = refine_on_pair(problem, params, grid, field,
                                                 lambda target: inputs_on(target, with_masks=True)[0],
                                                 params.input_weight)
    refined = time.perf_counter()
    info = {"model": str(path), "masks": structures.source, "structures": structures.count,
            "mask_channels": channels, "network_grid": list(grid.size), "network_spacing_mm": model.config.spacing,
            "refine_grid": list(result_grid.size) if params.iterations > 0 else None,
            "iterations": params.iterations, "folds_repaired": int(folded),
            "network_seconds": round(networked - started, 3), "refine_seconds": round(refined - networked, 3)}
    if structures.count > channels:
        info["note"] = f"{structures.count} structures share {channels} mask channels (structure i in channel i mod {channels})"
    return MethodResult(on_working_grid(result_grid, result, problem.grid), info)
