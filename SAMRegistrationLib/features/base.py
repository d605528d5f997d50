"""Interfaces of encoders.

A *slice encoder* is a 2D foundation-model image encoder: it maps a batch of intensity
slices in [0, 1] to dense embeddings. The volume machinery in ``slicewise.py`` decides
which slices to encode, where they lie in physical space and how to interpolate between
them; slice encoders know nothing about geometry.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SliceEncoder(Protocol):
    name: str
    canvas: int          # square input side the model was trained at (256 LiteMedSAM, 1024 SAM)
    stride: int          # output pixels per embedding cell (4 LiteMedSAM, 16 SAM ViT)
    channels: int        # embedding channels (256)
    size_multiple: int   # accepted input height/width must be multiples of this
    flexible_size: bool  # True if inputs other than canvas x canvas are accepted
    device: torch.device

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) float32 in [0, 1] -> (B, channels, H // stride, W // stride) float32 on CPU."""
        ...
