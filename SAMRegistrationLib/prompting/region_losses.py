"""Loss terms that point-prompt regions and click pairs add to an optimisation (``promptreg``).

* a soft Dice per region pair, averaged over regions (each region counts the same, however
  small; the public PromptReg code pools all regions into one Dice, so large ones dominate),
* the contour-aware Chamfer loss of "Medical Image Registration Meets Vision Foundation Model:
  Prototype Learning and Contour Awareness" (IPMI 2025, Eq. 7; squared
  distances, both directions): sampled fixed-region contour points, carried into the moving
  image, against the moving contour's distance map, and moving contour points carried back
  (first-order inverse) against the fixed contour's distance map, all differentiable through
  ``grid_sample``,
* for structures clicked in both images, the squared distance between the fixed click carried
  by the field and the moving click.

Fields are (1, 3, D, H, W) in voxels of the grid the regions live on.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_erosion, distance_transform_edt

from ..field_ops import identity_grid, voxel_to_normalised

CONTOUR_POINTS = 2000    # sampled contour points per region and step


def contour_distance(masks: torch.Tensor) -> torch.Tensor:
    """(K, D, H, W) masks -> (K, D, H, W) distance (voxels) to each mask's boundary."""
    out = []
    for mask in masks.numpy() > 0.5:
        boundary = mask & ~binary_erosion(mask)
        out.append(distance_transform_edt(~boundary) if boundary.any() else np.zeros(mask.shape))
    return torch.from_numpy(np.stack(out).astype(np.float32))


def contour_points(masks: torch.Tensor) -> list[torch.Tensor]:
    """For each (D, H, W) mask: (N, 3) voxel indices (x, y, z) of its boundary."""
    points = []
    for mask in masks.numpy() > 0.5:
        boundary = mask & ~binary_erosion(mask)
        zyx = np.argwhere(boundary)
        points.append(torch.from_numpy(zyx[:, ::-1].astype(np.float32).copy()))
    return points


def _sample_at(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(1, C, D, H, W) values at (N, 3) voxel positions (x, y, z) -> (C, N)."""
    d, h, w = values.shape[-3:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)], dtype=points.dtype)
    grid = (points * scale - 1.0).view(1, 1, 1, -1, 3)
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=True).view(values.shape[1], -1)


def pair_agreement(field: torch.Tensor, fixed_regions: torch.Tensor, moving_regions: torch.Tensor) -> torch.Tensor:
    """(K,) Dice of each region pair after ``field`` (the feature registration)."""
    with torch.no_grad():
        grid = identity_grid(fixed_regions.shape[-3:], fixed_regions.device) + voxel_to_normalised(field)
        warped = F.grid_sample(moving_regions[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        overlap = (warped * fixed_regions).flatten(1).sum(1)
        return 2 * overlap / (warped.flatten(1).sum(1) + fixed_regions.flatten(1).sum(1)).clamp_min(1e-6)


def region_loss(fixed_regions: torch.Tensor, moving_regions: torch.Tensor, dice_weight: float,
                contour_weight: float, seed: int = 0):
    """The region terms as a function of the (1, 3, D, H, W) field on the regions' grid: soft
    Dice per region pair (mean over pairs) and, with ``contour_weight`` > 0, the Chamfer term."""
    base = identity_grid(fixed_regions.shape[-3:], fixed_regions.device)
    fixed_masks, moving_masks = fixed_regions[None], moving_regions[None]
    if contour_weight > 0:
        moving_distance = contour_distance(moving_regions)[None]            # (1, K, D, H, W)
        fixed_distance = contour_distance(fixed_regions)[None]
        contours = contour_points(fixed_regions)
        moving_contours = contour_points(moving_regions)
    generator = torch.Generator().manual_seed(seed)

    def loss(field: torch.Tensor) -> torch.Tensor:
        grid = base + voxel_to_normalised(field)
        warped = F.grid_sample(moving_masks, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        overlap = (warped * fixed_masks).flatten(2).sum(-1)
        sizes = warped.flatten(2).sum(-1) + fixed_masks.flatten(2).sum(-1)
        total = dice_weight * (1 - (2 * overlap / sizes.clamp_min(1e-6)).mean())
        if contour_weight > 0:
            # Eq. 7 of the IPMI 2025 contour loss, both directions, squared distances in voxels: fixed contour
            # points carried into the moving image -> moving contour ...
            contour = torch.zeros(())
            for k, points in enumerate(contours):
                if len(points) == 0:
                    continue
                pick = points[torch.randint(0, len(points), (min(CONTOUR_POINTS, len(points)),), generator=generator)]
                displacement = _sample_at(field, pick).t()                   # (N, 3) voxels (x, y, z)
                contour = contour + _sample_at(moving_distance[:, k:k + 1], pick + displacement).pow(2).mean()
            # ... and moving contour points carried back into the fixed image (first-order inverse
            # p - u(p) of the fixed -> moving field) -> fixed contour
            for k, points in enumerate(moving_contours):
                if len(points) == 0:
                    continue
                pick = points[torch.randint(0, len(points), (min(CONTOUR_POINTS, len(points)),), generator=generator)]
                back = pick - _sample_at(field, pick).t()
                contour = contour + _sample_at(fixed_distance[:, k:k + 1], back).pow(2).mean()
            total = total + contour_weight * contour / max(fixed_regions.shape[0], 1)
        return total
    return loss


def landmark_loss(fixed_points: torch.Tensor, moving_points: torch.Tensor, factor: int, weight: float):
    """Mean squared distance (working voxels) between fixed points carried by the field and their
    moving partners; points in working voxels, the field on a grid pooled by ``factor``."""
    offset = (factor - 1) / 2.0          # a pooled cell's centre in working voxels

    def loss(field: torch.Tensor) -> torch.Tensor:
        on_grid = (fixed_points - offset) / factor
        carried = fixed_points + factor * _sample_at(field, on_grid).t()
        return weight * (carried - moving_points).pow(2).sum(1).mean()
    return loss
