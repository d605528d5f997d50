"""The SAMIR model as it is trained, saved and shipped: its configuration, the frozen projection
of the encoder's channels (buffers, so they travel in the state dict) and the network.

Inputs are the frozen features on the network's grid, optionally with the image's intensity
as one more channel; :func:`predict` pads them to the pyramid's multiple and returns the
finest field on the unpadded grid.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ENCODER_CHANNELS, SamirConfig
from .frozen import FrozenProjection
from .network import SamirNet


class SamirModel(nn.Module):
    def __init__(self, config: SamirConfig, projection: Optional[FrozenProjection] = None) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("projection_mean", torch.zeros(ENCODER_CHANNELS))
        self.register_buffer("projection_basis", torch.zeros(ENCODER_CHANNELS, config.dims))
        self.register_buffer("projection_scale", torch.ones((), dtype=torch.float64))
        if projection is not None:
            self.set_projection(projection)
        self.net = SamirNet(config.in_channels, config.head_channels, config.width, config.levels, config.steps,
                            config.correlation_radius)

    def set_projection(self, projection: FrozenProjection) -> None:
        if projection.basis.shape != self.projection_basis.shape:
            raise ValueError(f"projection of shape {tuple(projection.basis.shape)} for a model of "
                             f"{tuple(self.projection_basis.shape)}")
        self.projection_mean.copy_(projection.mean)
        self.projection_basis.copy_(projection.basis)
        self.projection_scale.fill_(projection.scale)

    def projection(self) -> FrozenProjection:
        return FrozenProjection(self.projection_mean, self.projection_basis, float(self.projection_scale))

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> list[torch.Tensor]:
        return self.net(fixed, moving)


def pad_for_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Zero-pad the last three sides up to a multiple of 2^(levels-1) (at the far end)."""
    multiple = 2 ** (levels - 1)
    pads = []
    for n in reversed(x.shape[-3:]):
        pads += [0, (-n) % multiple]
    return F.pad(x, pads) if any(pads) else x


def predict(model: SamirModel, fixed: torch.Tensor, moving: torch.Tensor) -> list[torch.Tensor]:
    """Per-level fields (finest first) for (1, C, D, H, W) inputs of any size; the finest is
    cropped back to the inputs' grid, the coarser ones to the matching fraction."""
    shape = fixed.shape[-3:]
    fields = model(pad_for_levels(fixed, model.config.levels), pad_for_levels(moving, model.config.levels))
    out = []
    for level, field in enumerate(fields):
        size = [-(-n // 2 ** level) for n in shape]
        out.append(field[..., :size[0], :size[1], :size[2]])
    return out
