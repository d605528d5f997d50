"""The ``assisted`` model as it is trained, saved and shipped: its configuration and the network.
:func:`predict` pads the inputs to the pyramid's multiple and crops the fields back."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..samir.model import pad_for_levels
from .config import AssistedConfig
from .network import AssistedNet


class AssistedModel(nn.Module):
    def __init__(self, config: AssistedConfig) -> None:
        super().__init__()
        self.config = config
        self.net = AssistedNet(config.mask_channels, config.width, config.levels, config.heads,
                               config.attention_radius, config.correlation_radius)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, fixed_masks: torch.Tensor,
                moving_masks: torch.Tensor):
        return self.net(fixed, moving, fixed_masks, moving_masks)


def predict(model: AssistedModel, fixed: torch.Tensor, moving: torch.Tensor, fixed_masks: torch.Tensor,
            moving_masks: torch.Tensor) -> list[torch.Tensor]:
    """Per-level fields (finest first) for (1, C, D, H, W) inputs of any size, cropped back to
    the inputs' grid (the coarser ones to the matching fraction)."""
    levels = model.config.levels
    shape = fixed.shape[-3:]
    fields, _, _ = model(*(pad_for_levels(x, levels) for x in (fixed, moving, fixed_masks, moving_masks)))
    out = []
    for level, field in enumerate(fields):
        size = [-(-n // 2 ** level) for n in shape]
        out.append(field[..., :size[0], :size[1], :size[2]])
    return out
