"""SAMIR's training objective on one batch of pairs (Eq. 4-5 of the paper):

    L = l0 L_image + l1 L_HFC + l2 L_Dice + l3 L_diffusion

with L_image the local NCC of the warped moving image where the two images share a contrast and
the MIND-SSC difference where they do not (SynthMorph-style pairs draw each image's intensities
anew), L_HFC on the frozen channels of the inputs, L_Dice only where both label maps are given.
Inputs are padded to the pyramid's multiple first, so every level's fields and pooled features
line up.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...field_ops import warp
from .losses import diffusion_loss, dice_loss, hfc_loss, local_ncc_loss, mind_ssd_loss
from .model import SamirConfig, SamirModel, pad_for_levels


def one_hot(labels: torch.Tensor, values: list[int]) -> torch.Tensor:
    """(B, 1, D, H, W) integer labels -> (B, len(values), D, H, W) float masks (background left out)."""
    return torch.cat([(labels == v).float() for v in values], 1)


def objective(model: SamirModel, fixed_in: torch.Tensor, moving_in: torch.Tensor, fixed_image: torch.Tensor,
              moving_image: torch.Tensor, same_contrast: bool = True, fixed_labels: Optional[torch.Tensor] = None,
              moving_labels: Optional[torch.Tensor] = None, label_values: Optional[list[int]] = None,
              config: Optional[SamirConfig] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of the model on a batch, and its parts (floats, for the logs). ``config``
    defaults to the model's own (pass it when ``model`` is a DistributedDataParallel wrapper)."""
    config = config or model.config
    levels = config.levels
    pad = lambda x: pad_for_levels(x, levels)       # noqa: E731
    fixed_in, moving_in, fixed_image, moving_image = map(pad, (fixed_in, moving_in, fixed_image, moving_image))
    fields = model(fixed_in, moving_in)
    finest = fields[0]
    if same_contrast:
        image = local_ncc_loss(fixed_image, warp(moving_image, finest), config.ncc_window)
    else:
        image = mind_ssd_loss(fixed_image, moving_image, finest)
    hfc = hfc_loss(fixed_in[:, :config.dims], moving_in[:, :config.dims], fields)
    smooth = diffusion_loss(fields)
    total = config.ncc_weight * image + config.hfc_weight * hfc + config.diffusion_weight * smooth
    parts = {"image": float(image.detach()), "hfc": float(hfc.detach()), "diffusion": float(smooth.detach())}
    if fixed_labels is not None and moving_labels is not None and config.dice_weight > 0:
        values = label_values or sorted(int(v) for v in torch.unique(fixed_labels) if int(v) != 0)
        if values:
            dice = dice_loss(one_hot(pad(fixed_labels), values), one_hot(pad(moving_labels), values), finest)
            total = total + config.dice_weight * dice
            parts["dice"] = float(dice.detach())
    parts["total"] = float(total.detach())
    return total, parts
