"""SAMIR's network (He, Liu et al., "SAMIR", seed 001): a light 3D head on frozen foundation
features, then a coarse-to-fine pyramid that predicts a stationary velocity per level,
integrates it by scaling and squaring and composes it with the coarser level's field.

Fields are (B, 3, D, H, W) displacements in voxels of the level's grid, channels (x, y, z),
sampled with ``align_corners=True`` as everywhere in the engine (:mod:`...field_ops`).
Decisions the paper leaves open (docs/methods.md, "samir"):
- the head: two 3^3 convolutions (LeakyReLU) from the frozen channels to ``head_channels``,
  shared by both images;
- levels: ``levels`` (4: full, 1/2, 1/4, 1/8), the head's features average-pooled per level;
- each level's block: three 3^3 convolutions on [fixed, moving warped by the coarser field,
  their local correlation within ``radius`` voxels], the last initialised to zero so an
  untrained level adds nothing (without the correlation the network did not learn within
  200 CPU steps: docs/methods.md);
- integration: ``steps`` squarings of v / 2^steps (7, as VoxelMorph's default).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...field_ops import compose, integrate_velocity as integrate, warp


def upsample_field(field: torch.Tensor, shape) -> torch.Tensor:
    """A coarse field on a grid ``shape``, its voxel displacements rescaled to the new voxels."""
    scale = torch.tensor([(n - 1) / max(m - 1, 1) for n, m in zip(reversed(shape), reversed(field.shape[-3:]))],
                         dtype=field.dtype, device=field.device).view(1, 3, 1, 1, 1)
    return F.interpolate(field, size=tuple(shape), mode="trilinear", align_corners=True) * scale


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2))


class Head(nn.Module):
    """Frozen channels -> ``channels`` per voxel, with some context across slices."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(_block(in_channels, channels), _block(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def local_correlation(fixed: torch.Tensor, moving: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine similarity of each fixed voxel's features with the moving features at every offset
    within ``radius`` voxels: (B, (2r+1)^3, D, H, W), offsets in (z, y, x) raster order."""
    f = F.normalize(fixed, dim=1)
    m = F.pad(F.normalize(moving, dim=1), [radius] * 6)
    d, h, w = fixed.shape[-3:]
    size = 2 * radius + 1
    return torch.cat([(f * m[:, :, k:k + d, j:j + h, i:i + w]).sum(1, keepdim=True)
                      for k in range(size) for j in range(size) for i in range(size)], 1)


class LevelBlock(nn.Module):
    """[fixed, warped moving, their local correlation] -> a velocity (3 channels), three convolutions."""

    def __init__(self, channels: int, width: int, radius: int = 0) -> None:
        super().__init__()
        self.radius = radius
        extra = (2 * radius + 1) ** 3 if radius > 0 else 0
        self.layers = nn.Sequential(_block(2 * channels + extra, width), _block(width, width))
        self.out = nn.Conv3d(width, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        parts = [fixed, moving] + ([local_correlation(fixed, moving, self.radius)] if self.radius > 0 else [])
        return self.out(self.layers(torch.cat(parts, 1)))


class SamirNet(nn.Module):
    """(fixed, moving) frozen features (B, C, D, H, W) -> per-level fields, finest first.

    The sides must be multiples of 2^(levels-1) (callers pad, :func:`...field_ops.pad_to_multiple`).
    """

    def __init__(self, in_channels: int, head_channels: int = 16, width: int = 32, levels: int = 4,
                 steps: int = 7, radius: int = 0) -> None:
        super().__init__()
        self.levels, self.steps = levels, steps
        self.head = Head(in_channels, head_channels)
        self.blocks = nn.ModuleList([LevelBlock(head_channels, width, radius) for _ in range(levels)])

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> list[torch.Tensor]:
        f, m = self.head(fixed), self.head(moving)
        pyramid = [(f, m)]
        for _ in range(1, self.levels):
            f, m = F.avg_pool3d(f, 2), F.avg_pool3d(m, 2)
            pyramid.append((f, m))
        fields: list[torch.Tensor] = []
        field = None
        for level in reversed(range(self.levels)):          # coarse to fine
            f, m = pyramid[level]
            if field is not None:
                field = upsample_field(field, f.shape[-3:])
                m = warp(m, field)
            step = integrate(self.blocks[level](f, m), self.steps)
            field = step if field is None else compose(step, field)
            fields.append(field)
        return fields[::-1]                                  # finest first
