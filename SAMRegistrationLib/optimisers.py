"""ConvexAdam's optimisers on feature volumes (Siebert et al., "ConvexAdam: Self-Configuring
Dual-Optimisation-Based 3D Multitask Medical Image Registration", IEEE TMI 2024), shared by
the methods that use them (``convexadam``, ``promptreg``, ``pyramid``).

1. Features are average-pooled onto a coarse grid (``grid_sp`` working voxels per cell).
2. A dense SSD cost volume over integer shifts in [-disp_hw, disp_hw]^3 coarse cells,
   aggregated over a 3^3 patch twice.
3. Coupled convex optimisation: alternate a per-node argmin of cost + theta |d - v|^2 with a
   3^3 box smoothing of the chosen shifts, theta rising over a fixed schedule.
4. Inverse consistency: both directions are solved and symmetrised by fixed-point steps.
5. Adam instance optimisation of a dense field on a ``grid_sp_adam`` grid, smoothed by three
   3^3 box filters each step, SSD of features plus diffusion regularisation.

Every field is (1, 3, D, H, W) with channels (x, y, z) in voxel units of the grid it lives on.
Sampling is ``align_corners=True`` throughout within a grid; moving between a grid and its
pooled version uses cell-centred interpolation, so shifts are never off by half a cell
(a scale bug of the public code). The result is always upsampled and scaled to working
voxels (the public code's ``ic=False`` path forgets this).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .field_ops import AdamStep, box3, diffusion_grad, pad_to_multiple, repair_folds, resize_field, warp
from .trilinear import channels_last_table, ssd_value_and_gradient

THETAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class ConvexAdamResult:
    displacement: torch.Tensor   # (1, 3, D, H, W) working-voxel units, (x, y, z)
    info: dict


# --------------------------------------------------------------------------- convex stage
def shift_offsets(radius: int, device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dz, dy, dx = torch.meshgrid(r, r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)], dim=1)   # (L, 3) (x, y, z)


def ssd_cost_volume(fixed: torch.Tensor, moving: torch.Tensor, radius: int, slab: int = 4) -> torch.Tensor:
    """cost[l, z, y, x] = sum_c (fixed(p) - moving(p + d_l))^2, patch-aggregated; (L, D, H, W).

    Labels are ordered like :func:`shift_offsets` (z slowest, x fastest). The x shifts of one
    (z, y) shift are evaluated together through a strided view of the padded moving volume,
    a few z-planes at a time so that the intermediates stay in cache (measured 2x faster).
    """
    _, channels, d, h, w = fixed.shape
    padded = F.pad(moving, [radius] * 6, mode="replicate")[0]
    side = 2 * radius + 1
    cost = torch.empty(side, side, side, d, h, w, device=fixed.device, dtype=fixed.dtype)
    for z0 in range(0, d, slab):
        z1 = min(d, z0 + slab)
        fix = fixed[0, :, z0:z1].unsqueeze(-2)                            # (C, dz, h, 1, w)
        for dz in range(side):
            for dy in range(side):
                block = padded[:, z0 + dz:z1 + dz, dy:dy + h, :]             # (C, dz, h, w + 2r)
                shifted = block.unfold(-1, w, 1)                             # (C, dz, h, side, w)
                cost[dz, dy, :, z0:z1] = (fix - shifted).pow_(2).sum(0).permute(2, 0, 1, 3)
    return box3(box3(cost.view(side ** 3, d, h, w)))


def coupled_convex(cost: torch.Tensor, offsets: torch.Tensor, thetas=THETAS, chunk: int = 256) -> torch.Tensor:
    """Returns the smoothed shift field (1, 3, D, H, W) in coarse-cell units."""
    labels, d, h, w = cost.shape
    flat = cost.view(labels, -1)
    choice = offsets[flat.argmin(0)]                                   # (N, 3)
    smooth = box3(choice.t().reshape(1, 3, d, h, w))
    # theta |d - v|^2 = theta |d|^2 - 2 theta d.v + const per node: one matrix product per chunk
    # with the offsets augmented by |d|^2; small chunks keep the (L, chunk) scores in cache
    augmented = torch.cat([offsets, (offsets ** 2).sum(1, keepdim=True)], 1)    # (L, 4)
    for theta in thetas:
        v = smooth.view(3, -1)
        weights = torch.cat([v * (-2.0 * theta), torch.full_like(v[:1], theta)], 0)   # (4, N)
        best = torch.empty(v.shape[1], dtype=torch.long, device=cost.device)
        for start in range(0, v.shape[1], chunk):
            score = torch.addmm(flat[:, start:start + chunk], augmented, weights[:, start:start + chunk])
            best[start:start + chunk] = score.argmin(0)
        choice = offsets[best]
        smooth = box3(choice.t().reshape(1, 3, d, h, w))
    return smooth


def inverse_consistent(forward: torch.Tensor, backward: torch.Tensor, iterations: int) -> torch.Tensor:
    """Symmetrise two fields (voxel units) so that forward ~ -backward o (id + forward)."""
    for _ in range(iterations):
        f_new = 0.5 * (forward - warp(backward, forward))
        b_new = 0.5 * (backward - warp(forward, backward))
        forward, backward = f_new, b_new
    return forward


# --------------------------------------------------------------------------- Adam stage
def adam_refine(fixed: torch.Tensor, moving: torch.Tensor, init: torch.Tensor, iterations: int,
                lambda_reg: float, lr: float, reporter=None, passes: int = 3,
                mask: torch.Tensor | None = None, extra_loss=None) -> torch.Tensor:
    """Instance optimisation on the pooled grid; returns the smoothed field (voxel units).

    The field is a free parameter smoothed by ``passes`` 3^3 box filters before use. Every
    gradient is computed by hand: the SSD's from the trilinear corners (:mod:`.sampling`),
    the diffusion term's analytically, and the smoother's backward pass is the smoother itself
    (symmetric up to boundary terms). Only ``extra_loss`` goes through autograd.

    ``mask`` (D, H, W) limits where the data term is evaluated (anatomy, not air); the sum is
    still divided by the number of all voxels, so the balance with the regulariser is the
    same as without a mask and the mask only saves time. ``extra_loss(field)`` adds a
    differentiable term of the smoothed field (voxel units of this grid).
    """
    param = init.clone()
    optimiser = AdamStep(param, lr)
    shape = tuple(fixed.shape[-3:])
    total = float(fixed[0, 0].numel())
    if mask is not None and bool(mask.any()):
        index = mask.reshape(-1).nonzero()[:, 0]
    else:
        index = torch.arange(fixed[0, 0].numel(), device=fixed.device)
    d, h, w = shape
    zyx = torch.stack([index // (h * w), (index // w) % h, index % w], 1)
    base = zyx.flip(1).to(fixed.dtype)                                  # (N, 3) voxel (x, y, z)
    table = channels_last_table(moving)
    targets = fixed.reshape(fixed.shape[1], -1)[:, index].t().contiguous()   # (N, C)
    for step in range(iterations):
        field = box3(param, times=passes)
        points = base + field.reshape(3, -1)[:, index].t()
        value, point_grad = ssd_value_and_gradient(table, shape, points, targets)
        data_value = value / total
        grad_field = torch.zeros_like(field)
        grad_field.view(3, -1)[:, index] = point_grad.t() / total
        if extra_loss is not None:          # e.g. promptreg's region terms on the smoothed field
            field.requires_grad_(True)
            extra = extra_loss(field)
            extra.backward()
            grad_field += field.grad
            data_value += float(extra.detach())
            field = field.detach()
        reg_value, reg_grad = diffusion_grad(field)
        grad_field.add_(reg_grad, alpha=lambda_reg)
        optimiser.step(box3(grad_field, times=passes))
        if reporter is not None and (step % 10 == 0 or step == iterations - 1):
            loss = data_value + lambda_reg * reg_value
            reporter("optimise", 0.5 + 0.5 * (step + 1) / iterations, f"Adam {step + 1}/{iterations} loss {loss:.4f}")
    return box3(param, times=passes)


# --------------------------------------------------------------------------- method
def convex_adam(fixed: torch.Tensor, moving: torch.Tensor, params, reporter=None,
                mask: torch.Tensor | None = None, extra_loss_factory=None) -> ConvexAdamResult:
    """Register (C, D, H, W) moving features to fixed features on the same working grid.

    ``params`` has ConvexAdam's parameters as attributes (``ConvexAdamParams`` of
    ``methods/convexadam.py``: grid_sp, disp_hw, grid_sp_adam, lambda_reg, iterations,
    learning_rate, ic_iterations, smooth_passes, repair_folds), already resolved for the grid.

    ``mask`` (D, H, W) bool marks voxels holding anatomy in either image; only there does the
    Adam data term need evaluating. ``extra_loss_factory(init, factor)``, given the convex
    stage's field on the Adam grid and that grid's pooling factor, may return a loss of the
    field to add to the Adam stage (or None), plus a dict for the result's info.
    """
    report = reporter or (lambda *a, **k: None)
    shape = fixed.shape[-3:]
    gs, ga = int(params.grid_sp), int(params.grid_sp_adam or 1)
    multiple = gs * ga // math.gcd(gs, ga)
    fix = pad_to_multiple(fixed[None].float(), multiple)
    mov = pad_to_multiple(moving[None].float(), multiple)
    padded_shape = fix.shape[-3:]

    with torch.no_grad():
        report("optimise", 0.0, "cost volume")
        fix_c, mov_c = F.avg_pool3d(fix, gs), F.avg_pool3d(mov, gs)
        radius = int(params.disp_hw)
        offsets = shift_offsets(radius, fix.device)
        cost = ssd_cost_volume(fix_c, mov_c, radius)
        report("optimise", 0.15, "coupled convex optimisation")
        forward = coupled_convex(cost, offsets)
        del cost
        if params.ic_iterations > 0:
            cost_back = ssd_cost_volume(mov_c, fix_c, radius)
            backward = coupled_convex(cost_back, offsets)
            del cost_back
            forward = inverse_consistent(forward, backward, int(params.ic_iterations))
        report("optimise", 0.45, "convex stage done")
        # coarse cells -> Adam-grid voxels
        adam_shape = [n // ga for n in padded_shape]
        init = resize_field(forward, adam_shape, gs / ga)
        fix_a, mov_a = (F.avg_pool3d(fix, ga), F.avg_pool3d(mov, ga)) if ga > 1 else (fix, mov)
        mask_a = None
        if mask is not None:
            m = pad_to_multiple(mask[None, None].float(), multiple)
            mask_a = (F.max_pool3d(m, ga) if ga > 1 else m)[0, 0] > 0

    extra_loss, extra_info = extra_loss_factory(init, ga) if extra_loss_factory is not None else (None, {})
    if params.iterations > 0:
        field = adam_refine(fix_a, mov_a, init, int(params.iterations), float(params.lambda_reg),
                            float(params.learning_rate), report, int(params.smooth_passes),
                            mask_a, extra_loss)
    else:
        field = init
    folded = 0
    if params.repair_folds:
        field, folded = repair_folds(field)
    with torch.no_grad():
        full = resize_field(field, padded_shape, float(ga)) if ga > 1 else field
        full = full[..., :shape[0], :shape[1], :shape[2]].contiguous()
    info = {"coarse_grid": list(fix_c.shape[-3:]), "labels": int(offsets.shape[0]),
            "adam_grid": list(adam_shape), "folded_voxels_repaired": folded, **extra_info}
    return ConvexAdamResult(full, info)
