"""PromptReg: prompt-derived corresponding regions drive a dense field (seeds 002 and 000).

``convexadam`` on the same features, with region terms added to its Adam stage, which then
optimises

* the feature SSD of ``convexadam`` (so anatomy outside the regions still registers),
* a soft Dice per region pair, averaged over regions (each region counts the same, however
  small; the public PromptReg code pools all regions into one Dice, so large ones dominate),
* seed 000's contour-aware Chamfer loss (Eq. 7, squared distances, both directions): sampled
  fixed-region contour points, carried into the moving image, against the moving contour's
  distance map, and moving contour points carried back (first-order inverse) against the
  fixed contour's distance map, all differentiable through ``grid_sample``,
* for structures clicked in both images, the squared distance between the fixed click carried
  by the field and the moving click (landmark pairs, ``LANDMARK_WEIGHT``),
* diffusion regularisation; folds are repaired as in ``convexadam``.

Region pairs that the convex stage's field contradicts (Dice < ``MIN_PAIR_AGREEMENT``) are
left out. Regions come as ``regions=(fixed, moving)``: (K, D, H, W) float one-hot masks on the
working grid, the moving ones already resampled through the affine pre-alignment; landmarks
as ``landmarks=(fixed, moving)``: (N, 3) working-grid voxel positions (x, y, z).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_erosion, distance_transform_edt

from ..errors import InputError
from ..field_ops import identity_grid, voxel_to_normalised
from ..registry import register_method
from .convexadam import ConvexAdamResult, convex_adam

DICE_WEIGHT = 0.3        # per-region soft Dice (mean over regions) against the feature SSD (total variance 1)
# Per squared working voxel of contour distance (Chamfer, both directions). Off by default:
# on acdc067 (one click per structure), in an earlier form of this method (a second Adam run
# after convexadam), Dice was 0.882 without it, 0.867 at 0.001 and 0.856 at 0.005; it fits
# contours exactly and so follows a region's segmentation errors (the moving RV region has
# Dice 0.70). Set ``extra["promptreg_contour_weight"]`` to use it.
CONTOUR_WEIGHT = 0.0
CONTOUR_POINTS = 2000    # sampled contour points per region and step
# Per squared working voxel of click-pair distance (mean over pairs): a 2-voxel miss costs
# about as much as 0.04 of region Dice. Not tuned on data: no benchmark case has clicks in
# both images.
LANDMARK_WEIGHT = 0.01
# A region pair that the feature registration contradicts (Dice below this after the convex stage)
# is more likely a wrong pair or a wrong segmentation than a mis-registration, and is left out
# (brain: a hippocampus click "found" in the cortex would otherwise pull the hippocampus away).
MIN_PAIR_AGREEMENT = 0.5


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


def region_loss(fixed_regions: torch.Tensor, moving_regions: torch.Tensor, settings, seed: int = 0):
    """The region terms as a function of the (1, 3, D, H, W) field on the regions' grid."""
    dice_weight = float(settings.extra.get("promptreg_dice_weight", DICE_WEIGHT))
    contour_weight = float(settings.extra.get("promptreg_contour_weight", CONTOUR_WEIGHT))
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
            # Eq. 7 of seed 000, both directions, squared distances in voxels: fixed contour
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


@register_method("promptreg", needs_prompts=True)
def run(fixed: torch.Tensor, moving: torch.Tensor, settings, reporter=None, mask: torch.Tensor | None = None,
        regions: tuple[torch.Tensor, torch.Tensor] | None = None,
        landmarks: tuple[torch.Tensor, torch.Tensor] | None = None) -> ConvexAdamResult:
    if regions is None and landmarks is None:
        raise InputError("the promptreg method needs point prompts (--moving-prompts and/or --fixed-prompts) "
                         "or --auto-prompts K")
    landmark_weight = float(settings.extra.get("promptreg_landmark_weight", LANDMARK_WEIGHT))

    def factory(init: torch.Tensor, factor: int):
        """Regions onto the Adam grid (padded like the features, then pooled), pairs checked
        against the convex stage's field, and the loss of the pairs that agree, plus the
        click-pair landmarks. With nothing usable (every pair left out by the pair checks) the
        features alone register the images, which is reported, rather than failing late."""
        shape = [n * factor for n in init.shape[-3:]]
        terms, info = [], {"regions": 0, "regions_used": 0}
        if landmarks is not None and landmark_weight > 0:
            terms.append(landmark_loss(landmarks[0], landmarks[1], factor, landmark_weight))
            info["landmark_pairs"] = int(landmarks[0].shape[0])

        def on_adam_grid(r: torch.Tensor) -> torch.Tensor:
            pads = []
            for n, target in zip(reversed(r.shape[-3:]), reversed(shape)):
                pads += [0, target - n]
            padded = F.pad(r[None].float(), pads)
            return (F.avg_pool3d(padded, factor) if factor > 1 else padded)[0]

        if regions is not None and regions[0].shape[0] > 0:
            fixed_regions, moving_regions = on_adam_grid(regions[0]), on_adam_grid(regions[1])
            agreement = pair_agreement(init, fixed_regions, moving_regions)
            keep = agreement >= MIN_PAIR_AGREEMENT
            info.update({"regions": int(regions[0].shape[0]), "regions_used": int(keep.sum()),
                         "region_agreement": [round(float(a), 3) for a in agreement]})
            if bool(keep.any()):
                terms.append(region_loss(fixed_regions[keep], moving_regions[keep], settings))
        if not terms:
            info["note"] = "no usable region pair: convexadam's result"
            return None, info
        return (lambda field: sum(term(field) for term in terms)), info

    return convex_adam(fixed, moving, settings, reporter, mask, extra_loss_factory=factory)
