"""SAMIR's losses (seed 001, Eqs. 3-5): image NCC, the hierarchical feature-consistency loss on
frozen features, Dice on warped labels (the weakly supervised variant) and diffusion.

All take (B, C, D, H, W) tensors and fields in voxels of their grid (see :mod:`.network`).
Decisions the paper leaves open: NCC is local (a 9^3 window, as VoxelMorph's), minimised as
1 - NCC; the HFC compares the *frozen* features (not the trainable head's, which could
collapse), pooled to each level, by mean squared difference, weighted 2^-(l-1) with l = 1 the
finest; diffusion is the mean squared forward difference of each level's field (voxel units,
so each level is weighted as its grid sees it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...field_ops import warp


def local_ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean local normalised cross-correlation over ``window``^3 boxes (single channel)."""
    pad = window // 2

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, window, stride=1, padding=pad, count_include_pad=False)

    mf, mw = box(fixed), box(warped)
    cross = box(fixed * warped) - mf * mw
    var_f = (box(fixed * fixed) - mf * mf).clamp_min(0)
    var_w = (box(warped * warped) - mw * mw).clamp_min(0)
    ncc = cross * cross / (var_f * var_w + eps)
    return 1.0 - ncc.mean()


def hfc_loss(fixed_features: torch.Tensor, moving_features: torch.Tensor, fields: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 3: sum over levels l of 2^-(l-1) mean || F_mov^l o phi^l - F_fix^l ||^2, finest level first."""
    total = fixed_features.new_zeros(())
    f, m = fixed_features, moving_features
    for level, field in enumerate(fields):
        if level:
            f, m = F.avg_pool3d(f, 2), F.avg_pool3d(m, 2)
        total = total + (warp(m, field) - f).pow(2).sum(1).mean() / 2 ** level
    return total


def dice_loss(fixed_onehot: torch.Tensor, moving_onehot: torch.Tensor, field: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice of the moving one-hot labels warped by ``field`` against the fixed ones
    (background channel excluded by the caller)."""
    warped = warp(moving_onehot, field)
    dims = (2, 3, 4)
    overlap = 2 * (warped * fixed_onehot).sum(dims)
    size = warped.sum(dims) + fixed_onehot.sum(dims)
    return 1.0 - ((overlap + eps) / (size + eps)).mean()


def diffusion_loss(fields: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared forward differences of every level's field, summed over the levels."""
    total = fields[0].new_zeros(())
    for field in fields:
        for dim in (2, 3, 4):
            if field.shape[dim] > 1:
                total = total + torch.diff(field, dim=dim).pow(2).mean()
    return total


def mind_ssd_loss(fixed: torch.Tensor, moving: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of MIND-SSC descriptors, the moving ones warped by ``field``: the
    image term where the two images' contrasts differ (NCC assumes they agree). MIND is computed
    on the unwarped images and warped as a feature map, so no gradient runs through it."""
    from ...features.mind import mind_ssc
    with torch.no_grad():
        fixed_mind = torch.cat([mind_ssc(f[None]) for f in fixed])
        moving_mind = torch.cat([mind_ssc(m[None]) for m in moving])
    return (warp(moving_mind, field) - fixed_mind).pow(2).sum(1).mean()
