"""Masks for ``assisted``: how structures become its mask channels, and the masks it trains on.

At inference a pair's structures (prompted regions, or the labels of a segmentation) arrive as
(N, D, H, W) soft masks per image, structure i of the fixed image corresponding to structure i
of the moving one; :func:`to_channels` puts structure i in channel i mod ``mask_channels``.

In training the masks come from the label maps, degraded towards a foundation model's typical
error (:func:`degrade`): each label's boundary moves by a smooth random shift of up to
``mask_error_voxels`` (its signed distance is estimated from a Gaussian-blurred mask, the shift
added, the result thresholded), independently in the two images, as two segmentations would err.
Structures are given with chance ``mask_keep`` each (a click-decoded pair misses some: on the
cardiac cases the myocardium), a pair with none with chance ``mask_none``, and structures go to
channels in a random order, so that a channel means "this structure in both images".
"""
from __future__ import annotations

import hashlib
from typing import Optional

import torch

from ...training.synthesis import gaussian_blur, smooth_noise


def to_channels(structures: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, D, H, W) structure masks -> (1, channels, D, H, W), structure i in channel i mod channels
    (the largest value where several share one); zeros for N = 0."""
    out = structures.new_zeros((1, channels, *structures.shape[-3:]))
    for i in range(structures.shape[0]):
        out[0, i % channels] = torch.maximum(out[0, i % channels], structures[i].float())
    return out


def degrade(mask: torch.Tensor, error_voxels: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A (D, H, W) binary mask with its boundary moved by a smooth random shift in
    [-error_voxels, error_voxels] (in and out in different places); float 0/1."""
    if error_voxels <= 0:
        return mask.float()
    sigma = max(1.0, float(error_voxels))
    blurred = gaussian_blur(mask.float()[None, None], sigma).clamp(1e-4, 1 - 1e-4)
    distance = sigma * torch.special.ndtri(blurred)      # a straight boundary blurs to Phi(distance / sigma)
    shift = smooth_noise(mask.shape, 1, generator, spacing_voxels=8.0) * error_voxels
    return ((distance + shift) > 0).float()[0, 0]


def labels_in_both(fixed_label: torch.Tensor, moving_label: torch.Tensor) -> list[int]:
    fixed_values = set(int(v) for v in torch.unique(fixed_label)) - {0}
    return sorted(fixed_values & (set(int(v) for v in torch.unique(moving_label)) - {0}))


def masks_from_labels(fixed_label: torch.Tensor, moving_label: torch.Tensor, values: list[int],
                      error_voxels: float, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D, H, W) degraded masks of ``values`` in each (1, 1, D, H, W) label map."""
    if not values:
        empty = fixed_label.new_zeros((0, *fixed_label.shape[-3:]), dtype=torch.float32)
        return empty, empty.clone()
    fixed = torch.stack([degrade(fixed_label[0, 0] == v, error_voxels, generator) for v in values])
    moving = torch.stack([degrade(moving_label[0, 0] == v, error_voxels, generator) for v in values])
    return fixed, moving


def training_masks(fixed_label: Optional[torch.Tensor], moving_label: Optional[torch.Tensor], config,
                   generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """A training pair's mask channels (1, K, D, H, W) each, and the label value in each channel
    (0: empty), drawn as the module says."""
    channels = config.mask_channels
    if fixed_label is None or moving_label is None:
        return None, None, [0] * channels
    values = labels_in_both(fixed_label, moving_label)
    if values and float(torch.rand((), generator=generator)) >= config.mask_none:
        order = torch.randperm(len(values), generator=generator).tolist()
        kept = [values[i] for i in order if float(torch.rand((), generator=generator)) < config.mask_keep]
    else:
        kept = []
    kept = kept[:channels]
    slots = torch.randperm(channels, generator=generator).tolist()[:len(kept)]
    fixed, moving = masks_from_labels(fixed_label, moving_label, kept, config.mask_error_voxels, generator)
    shape = (1, channels, *fixed_label.shape[-3:])
    fixed_masks, moving_masks = torch.zeros(shape), torch.zeros(shape)
    owner = [0] * channels
    for i, slot in enumerate(slots):
        fixed_masks[0, slot], moving_masks[0, slot], owner[slot] = fixed[i], moving[i], kept[i]
    return fixed_masks, moving_masks, owner


def validation_masks(fixed_label: torch.Tensor, moving_label: torch.Tensor, config,
                     source: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """A validation pair's masks: every label in both images (the first ``mask_channels``, in
    order), degraded with a generator seeded by ``source``, so every validation sees the same."""
    seed = int.from_bytes(hashlib.sha256(f"assisted-validation/{source}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
    values = labels_in_both(fixed_label, moving_label)[:config.mask_channels]
    fixed, moving = masks_from_labels(fixed_label, moving_label, values, config.mask_error_voxels, generator)
    owner = values + [0] * (config.mask_channels - len(values))
    return to_channels(fixed, config.mask_channels), to_channels(moving, config.mask_channels), owner


def mask_dice(masks: torch.Tensor, label: torch.Tensor, owner: list[int]) -> float:
    """Mean Dice of the (1, K, D, H, W) masks against the labels they stand for (``owner``)."""
    scores = []
    for channel, value in enumerate(owner):
        if value:
            truth, given = (label[0, 0] == value).float(), (masks[0, channel] > 0.5).float()
            scores.append(float(2 * (truth * given).sum() / (truth.sum() + given.sum()).clamp_min(1)))
    return sum(scores) / len(scores) if scores else float("nan")
