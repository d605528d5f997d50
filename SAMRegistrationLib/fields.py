"""From a working-grid displacement to the ITK displacement field on the fixed image grid."""
from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from .grid import Grid
from .resample import sample_tensor, transform_points


def total_displacement(fixed_grid: Grid, work_grid: Grid, field_voxels: torch.Tensor,
                       affine: Optional[sitk.Transform], slab: int = 16) -> np.ndarray:
    """Fixed->moving world displacement on ``fixed_grid``: u(p) = A(p + M v(p)) - p.

    ``field_voxels`` is (1, 3, D, H, W) in working-grid voxels (x, y, z); M maps working voxel
    offsets to world millimetres. Returns (z, y, x, 3) float32 in LPS mm. Outside the working
    grid the field continues with its border value.
    """
    matrix = torch.as_tensor(work_grid.matrix, dtype=torch.float64)
    field = field_voxels.to(torch.float32)
    nz = fixed_grid.size[2]
    out = np.empty((nz, fixed_grid.size[1], fixed_grid.size[0], 3), dtype=np.float32)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        part = fixed_grid.cropped((0, 0, z0), (fixed_grid.size[0], fixed_grid.size[1], z1))
        points = part.world_points(torch.float64)
        v = sample_tensor(field, work_grid, points)[0].permute(1, 2, 3, 0).to(torch.float64)
        moved = transform_points(points + v @ matrix.T, affine)
        out[z0:z1] = (moved - points).numpy().astype(np.float32)
    return out


def displacement_image(displacement: np.ndarray, fixed_grid: Grid) -> sitk.Image:
    """(z, y, x, 3) float32 world displacement -> SimpleITK vector image on the fixed grid."""
    return fixed_grid.image_from_array(np.ascontiguousarray(displacement, dtype=np.float32), is_vector=True)


def displacement_transform(displacement: sitk.Image) -> sitk.DisplacementFieldTransform:
    """Transform that reproduces exactly what a reader of the written field gets."""
    return sitk.DisplacementFieldTransform(sitk.Cast(displacement, sitk.sitkVectorFloat64))
