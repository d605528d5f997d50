"""The ``assisted`` losses beyond SAMIR's (NCC, Dice, diffusion: :mod:`..samir.losses`): the
prototype loss (Eqs. 3-6) and the contour loss (Eq. 7) of Xu et al., IPMI 2025.

Masks are (B, K, D, H, W) soft masks, one channel per structure; a structure counts where both
images' masks of it are non-empty. Decisions the paper leaves open (docs/methods.md):

- prototypes (Eq. 3) are masked averages of an encoder level's features, the masks average-
  pooled to it; the background (1 - the structures' sum) is one more class;
- contrast (Eqs. 4-5, the standard InfoNCE sign: minimise -log softmax): each image's voxels
  are classified by cosine / ``temperature`` against the *other* image's prototypes, so a
  structure is represented alike in both; the loss is averaged over each class's voxels
  (weighted by the soft mask) and then over classes, so the background does not swamp it;
- alignment (Eq. 6): the sum over structures of 1 - cos(fixed prototype, moving prototype);
- contour (Eq. 7): points of each fixed mask's contour mapped through the field (x + u(x),
  which is differentiable in u) against points of the moving mask's contour, symmetric Chamfer
  of squared distances in voxels of the network's grid (spacing-free), averaged over structures.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def present(fixed_masks: torch.Tensor, moving_masks: torch.Tensor) -> torch.Tensor:
    """(K,) bool: structures whose masks are non-empty in both images (batch item 0)."""
    return (fixed_masks[0].flatten(1).sum(1) > 0) & (moving_masks[0].flatten(1).sum(1) > 0)


def _with_background(masks: torch.Tensor) -> torch.Tensor:
    return torch.cat([(1.0 - masks.sum(1, keepdim=True)).clamp_min(0.0), masks], 1)


def prototypes(features: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, C, D, H, W) features, (B, K, D, H, W) masks -> (B, K, C) masked means (Eq. 3)."""
    weights = masks.flatten(2)                                          # (B, K, N)
    return torch.einsum("bkn,bcn->bkc", weights, features.flatten(2)) / (weights.sum(2)[..., None] + eps)


def _contrast(features: torch.Tensor, classes: torch.Tensor, other_prototypes: torch.Tensor,
              temperature: float, eps: float = 1e-6) -> torch.Tensor:
    """Mean over classes of the class-weighted mean of -log softmax_k(cos(f(x), P_k) / T)[class]."""
    f = F.normalize(features.flatten(2), dim=1)                          # (B, C, N)
    p = F.normalize(other_prototypes, dim=2)                             # (B, K+1, C)
    log_probability = (torch.einsum("bkc,bcn->bkn", p, f) / temperature).log_softmax(1)
    weights = classes.flatten(2)                                         # (B, K+1, N)
    per_class = -(weights * log_probability).sum(2) / (weights.sum(2) + eps)
    return per_class.mean()


def prototype_loss(fixed_features: torch.Tensor, moving_features: torch.Tensor, fixed_masks: torch.Tensor,
                   moving_masks: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """L_contrast + L_align on one encoder level's features (masks at full resolution are
    average-pooled to the features' grid); zero where no structure is in both images."""
    keep = present(fixed_masks, moving_masks)
    if not bool(keep.any()):
        return fixed_features.new_zeros(())
    factor = fixed_masks.shape[-1] // fixed_features.shape[-1]
    pool = (lambda m: F.avg_pool3d(m, factor)) if factor > 1 else (lambda m: m)   # noqa: E731
    fixed_classes = _with_background(pool(fixed_masks[:, keep]))
    moving_classes = _with_background(pool(moving_masks[:, keep]))
    fixed_prototypes = prototypes(fixed_features, fixed_classes)
    moving_prototypes = prototypes(moving_features, moving_classes)
    contrast = 0.5 * (_contrast(fixed_features, fixed_classes, moving_prototypes, temperature) +
                      _contrast(moving_features, moving_classes, fixed_prototypes, temperature))
    align = (1.0 - F.cosine_similarity(fixed_prototypes[:, 1:], moving_prototypes[:, 1:], dim=2)).sum(1).mean()
    return contrast + align


def contour_points(mask: torch.Tensor, count: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Up to ``count`` voxels (x, y, z) of the contour of a (D, H, W) soft mask (> 0.5; voxels
    inside with a 6-neighbour outside), drawn without replacement."""
    inside = (mask > 0.5).float()[None, None]
    eroded = -F.max_pool3d(-inside, 3, stride=1, padding=1)
    points = torch.nonzero((inside - eroded)[0, 0] > 0).flip(1).float()
    if points.shape[0] > count:
        points = points[torch.randperm(points.shape[0], generator=generator)[:count]]
    return points


def displacement_at(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, 3) displacements (voxels) of a (1, 3, D, H, W) field at (N, 3) voxel points (x, y, z)."""
    d, h, w = field.shape[-3:]
    scale = points.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)])
    where = (points * scale - 1.0).view(1, -1, 1, 1, 3)
    return F.grid_sample(field, where, align_corners=True)[0, :, :, 0, 0].T


def contour_loss(fixed_masks: torch.Tensor, moving_masks: torch.Tensor, field: torch.Tensor, count: int = 256,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Symmetric Chamfer (squared voxels) between the fixed contours mapped by ``field`` (the
    fixed -> moving displacement) and the moving contours, averaged over the structures present."""
    losses = []
    for k in torch.nonzero(present(fixed_masks, moving_masks)).flatten().tolist():
        fixed_points = contour_points(fixed_masks[0, k], count, generator)
        moving_points = contour_points(moving_masks[0, k], count, generator)
        if fixed_points.shape[0] == 0 or moving_points.shape[0] == 0:
            continue
        mapped = fixed_points + displacement_at(field, fixed_points)
        distance = torch.cdist(mapped, moving_points).pow(2)
        losses.append(distance.min(1).values.mean() + distance.min(0).values.mean())
    return torch.stack(losses).mean() if losses else field.new_zeros(())
