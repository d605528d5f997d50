"""The pyramid method's algorithm on tensors (see the package docstring for the method).

1. The features are L2-normalised per voxel and average-pooled into a pyramid (by default
   1/4, 1/2 and 1 of the working grid), re-normalised on each level.
2. At each level, coarse to fine, the moving features are warped by the field found so far
   (upsampled to the level), a cost volume of 1 - cosine similarity over integer shifts in
   [-r, r]^3 level voxels is built (SSD of unit vectors / 2, patch-aggregated), and
   ConvexAdam's coupled convex schedule picks a smooth residual field; optionally made
   inverse consistent with the backward problem.
3. The residual is composed with the field so far, not added: with the moving features
   warped by u, the residual v aligns fixed(x) with moving(x + v + u(x + v)), so the total
   is w = v + u o (id + v).
4. Optionally Adam instance optimisation of the final field on ConvexAdam's Adam grid, then
   fold repair and upsampling to working voxels.

Fields are (1, 3, D, H, W) with channels (x, y, z) in voxel units of the grid they live on;
levels are related by cell-centred resizing (:func:`~SAMRegistrationLib.field_ops.resize_field`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import reduce

import torch
import torch.nn.functional as F

from ...field_ops import box3, compose, pad_to_multiple, repair_folds, resize_field, warp
from ...optimisers import THETAS, adam_refine, coupled_convex, inverse_consistent, shift_offsets, ssd_cost_volume

# Defaults of the tensor functions; the method's defaults are PyramidParams' (in __init__.py).
LEVEL_FACTORS = (4, 2, 1)
RADII = (2, 3, 2)
LEVEL_SMOOTH = 3
COST_SCALE = 0.5
NORM_FLOOR = 0.1
ADAM_LR = 0.2


@dataclass
class PyramidResult:
    displacement: torch.Tensor   # (1, 3, D, H, W) working-voxel units, (x, y, z)
    info: dict


def unit_features(x: torch.Tensor, floor: float = NORM_FLOOR) -> torch.Tensor:
    """Per-voxel L2 normalisation of (1, C, D, H, W) features; vectors shorter than ``floor``
    times the mean norm are divided by that instead, so near-empty voxels stay near zero."""
    norm = x.norm(dim=1, keepdim=True)
    eps = float(norm.mean()) * floor + 1e-12
    return x / norm.clamp_min(eps)


def level_step(fixed: torch.Tensor, moving: torch.Tensor, radius: int, thetas=THETAS, cost_scale: float = COST_SCALE,
               ic_iterations: int = 0, smooth: int = LEVEL_SMOOTH) -> torch.Tensor:
    """Residual field (level voxels) aligning unit features ``moving`` (already warped) to ``fixed``."""
    offsets = shift_offsets(radius, fixed.device)
    cost = ssd_cost_volume(fixed, moving, radius).mul_(cost_scale)
    forward = coupled_convex(cost, offsets, thetas)
    del cost
    if ic_iterations > 0:
        cost = ssd_cost_volume(moving, fixed, radius).mul_(cost_scale)
        backward = coupled_convex(cost, offsets, thetas)
        del cost
        forward = inverse_consistent(forward, backward, ic_iterations)
    return box3(forward, times=smooth) if smooth > 0 else forward




def pyramid_convex(fixed: torch.Tensor, moving: torch.Tensor, factors=LEVEL_FACTORS, radii=RADII, thetas=THETAS,
                   cost_scale: float = COST_SCALE, ic_iterations: int = 0, smooth: int = LEVEL_SMOOTH,
                   floor: float = NORM_FLOOR, reporter=None) -> tuple[torch.Tensor, list]:
    """Coarse-to-fine convex stage on (1, C, D, H, W) features whose sides are multiples of
    every factor. Returns the field on the finest level's grid (its voxels) and per-level info."""
    report = reporter or (lambda *a, **k: None)
    fix_u, mov_u = unit_features(fixed, floor), unit_features(moving, floor)
    field, field_factor, levels = None, None, []
    for index, (factor, radius) in enumerate(zip(factors, radii)):
        factor, radius = int(factor), int(radius)
        start = time.perf_counter()
        fix_l = unit_features(F.avg_pool3d(fix_u, factor), floor) if factor > 1 else fix_u
        mov_l = unit_features(F.avg_pool3d(mov_u, factor), floor) if factor > 1 else mov_u
        shape = fix_l.shape[-3:]
        if field is not None:
            field = resize_field(field, shape, field_factor / factor)
            mov_l = warp(mov_l, field)
        residual = level_step(fix_l, mov_l, radius, thetas, cost_scale, ic_iterations, smooth)
        field = residual if field is None else compose(residual, field)
        field_factor = factor
        levels.append({"factor": factor, "radius": radius, "grid": list(shape),
                       "residual_max": round(float(residual.abs().max()) * factor, 2),
                       "seconds": round(time.perf_counter() - start, 2)})
        report("optimise", 0.5 * (index + 1) / len(factors), f"pyramid level 1/{factor} done")
    return field, levels


def pyramid_register(fixed: torch.Tensor, moving: torch.Tensor, *, factors=LEVEL_FACTORS, radii=RADII,
                     thetas=THETAS, cost_scale: float = COST_SCALE, ic_iterations: int = 0,
                     smooth: int = LEVEL_SMOOTH, floor: float = NORM_FLOOR, adam_factor: int = 1,
                     iterations: int = 0, lambda_reg: float = 0.3, learning_rate: float = ADAM_LR,
                     passes: int = 3, adam_unit: bool = False, repair: bool = True,
                     mask: torch.Tensor | None = None, adam_extra=None, reporter=None) -> PyramidResult:
    """Register (C, D, H, W) moving features to fixed ones on the same grid; the field is in
    working voxels, (1, 3, D, H, W). ``mask`` (D, H, W) limits the Adam data term;
    ``adam_extra`` = (fixed, moving) (C', D, H, W) channels added for the Adam stage only."""
    if len(factors) != len(radii) or not factors:
        raise ValueError(f"pyramid factors {factors} and radii {radii} must be non-empty and of equal length")
    shape = fixed.shape[-3:]
    ga = max(1, int(adam_factor))
    multiple = reduce(lambda a, b: a * b // math.gcd(a, b), [int(f) for f in factors] + [ga])
    fix = pad_to_multiple(fixed[None].float(), multiple)
    mov = pad_to_multiple(moving[None].float(), multiple)
    padded = fix.shape[-3:]
    with torch.no_grad():
        field, levels = pyramid_convex(fix, mov, factors, radii, thetas, cost_scale, ic_iterations, smooth, floor,
                                       reporter)
        finest = int(factors[-1])
        adam_shape = [n // ga for n in padded]
        init = resize_field(field, adam_shape, finest / ga) if finest != ga else field
        if adam_unit:
            fix, mov = unit_features(fix, floor), unit_features(mov, floor)
        if adam_extra is not None and iterations > 0:
            fix = torch.cat([fix, pad_to_multiple(adam_extra[0][None].float(), multiple)], 1)
            mov = torch.cat([mov, pad_to_multiple(adam_extra[1][None].float(), multiple)], 1)
        fix_a, mov_a = (F.avg_pool3d(fix, ga), F.avg_pool3d(mov, ga)) if ga > 1 else (fix, mov)
        mask_a = None
        if mask is not None:
            m = pad_to_multiple(mask[None, None].float(), multiple)
            mask_a = (F.max_pool3d(m, ga) if ga > 1 else m)[0, 0] > 0
    start = time.perf_counter()
    field = adam_refine(fix_a, mov_a, init, int(iterations), float(lambda_reg), float(learning_rate), reporter,
                        int(passes), mask_a) if iterations > 0 else init
    adam_seconds = round(time.perf_counter() - start, 2)
    folded = 0
    if repair:
        field, folded = repair_folds(field)
    with torch.no_grad():
        full = resize_field(field, padded, float(ga)) if ga > 1 else field
        full = full[..., :shape[0], :shape[1], :shape[2]].contiguous()
    info = {"levels": levels, "adam_grid": adam_shape, "adam_s": adam_seconds, "folded_voxels_repaired": folded}
    return PyramidResult(full, info)
