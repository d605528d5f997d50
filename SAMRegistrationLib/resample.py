"""Moving images and feature stacks onto a working grid, through a transform."""
from __future__ import annotations

from typing import Optional

import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .grid import Grid


def image_on_grid(image: sitk.Image, grid: Grid, transform: Optional[sitk.Transform] = None,
                  interpolator: int = sitk.sitkLinear, default: float = 0.0) -> torch.Tensor:
    """Resample ``image`` at ``transform(p)`` for every voxel p of ``grid``; (1, 1, D, H, W) float32."""
    out = sitk.Resample(image, grid.reference_image(), transform or sitk.Transform(), interpolator,
                        default, sitk.sitkFloat32)
    return torch.from_numpy(sitk.GetArrayFromImage(out))[None, None]


def sample_tensor(values: torch.Tensor, source: Grid, points: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """Trilinearly sample (1, C, D, H, W) ``values`` living on ``source`` at world ``points`` (..., 3).

    Points outside ``source`` take the nearest border value. Returns (1, C, *points.shape[:-1]).
    """
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3)
    out = []
    for start in range(0, flat.shape[0], chunk):
        norm = source.world_to_normalised(flat[start:start + chunk].to(torch.float64)).to(values.dtype)
        sampled = F.grid_sample(values, norm.view(1, 1, 1, -1, 3), mode="bilinear",
                                padding_mode="border", align_corners=True)
        out.append(sampled.view(values.shape[1], -1))
    return torch.cat(out, dim=1).view(1, values.shape[1], *shape)


def transform_points(points: torch.Tensor, transform: Optional[sitk.Transform]) -> torch.Tensor:
    """Apply an affine-like SimpleITK transform to (..., 3) world points (identity when None)."""
    if transform is None:
        return points
    from .affine import affine_to_matrix
    matrix, offset = affine_to_matrix(transform)
    m = torch.as_tensor(matrix, dtype=points.dtype)
    b = torch.as_tensor(offset, dtype=points.dtype)
    return points @ m.T + b
