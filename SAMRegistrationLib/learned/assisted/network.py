"""The ``assisted`` network (Xu et al., IPMI 2025, seed 000): images and foundation-model masks
of both images in, a displacement field out, coarse to fine.

Fields are (B, 3, D, H, W) displacements in voxels of the level's grid, channels (x, y, z),
sampled with ``align_corners=True`` as everywhere in the engine (:mod:`...field_ops`).
Decisions the paper leaves open (docs/methods.md, "assisted"):

- two CNN encoders, one for images (1 channel) and one for masks (``mask_channels``), each
  shared by the fixed and the moving image; ``width`` channels at full resolution, doubling per
  level up to 4x; two 3^3 convolutions (LeakyReLU 0.2) per level, average pooling between;
- at each level, coarse to fine, the moving image and mask features are warped by the coarser
  field; then, except at the finest level, *cross-attention* (queries from the moving
  features, keys and values from the fixed ones, separately for images and masks) and a
  bi-directional *fusion attention* between the crossed image and mask features (the two
  directions averaged), as in the paper; the attention is over each voxel's (2r+1)^3
  neighbourhood rather than Swin windows, so it needs neither windows nor shifts and is the
  same at every position of an input of any size;
- each level's head sees [fixed, warped moving image features, fixed, warped moving mask
  features, the image features' local cosine correlation, the fused attention output] and
  predicts a residual displacement (three 3^3 convolutions, the last initialised to zero);
- refinement is additive, as the paper's "superposition": phi_l = up(phi_{l+1}) + delta_l,
  with no scaling and squaring.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...field_ops import warp
from ..samir.network import local_correlation, upsample_field


class Conv3d(nn.Conv3d):
    """nn.Conv3d that takes oneDNN's kernel on the CPU for any size. PyTorch picks its slower
    im2col kernel for a batch of one when channels x depth x height is at most 20480, which the
    finest levels' few channels are (oneDNN: about 1.4x faster forward and backward there, the
    same results to 1e-6); elsewhere, or without oneDNN, the usual path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and self.padding_mode == "zeros"
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride,
                                                     self.dilation, self.groups)
        return super().forward(x)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2))


def level_widths(width: int, levels: int) -> list[int]:
    return [width * min(2 ** level, 4) for level in range(levels)]


class Encoder(nn.Module):
    """(B, C, D, H, W) -> per-level features, finest first."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for cout in widths:
            blocks.append(nn.Sequential(_conv(cin, cout), _conv(cout, cout)))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level, block in enumerate(self.blocks):
            x = block(F.avg_pool3d(x, 2) if level else x)
            out.append(x)
        return out


def _neighbours(x: torch.Tensor, radius: int):
    """Each of the (2r+1)^3 shifted copies of ``x`` (zero outside), in (z, y, x) raster order."""
    padded = F.pad(x, [radius] * 6)
    d, h, w = x.shape[-3:]
    size = 2 * radius + 1
    for k in range(size):
        for j in range(size):
            for i in range(size):
                yield padded[..., k:k + d, j:j + h, i:i + w]


class ChannelNorm(nn.Module):
    """Layer normalisation of each voxel's channels (a transformer's token norm): local, so the
    attention blocks treat every position alike."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class NeighbourhoodAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v over each voxel's (2r+1)^3 neighbourhood, q from ``query``,
    k and v from ``context``; pre-normalised, with a residual and a pointwise MLP after it."""

    def __init__(self, channels: int, heads: int, radius: int) -> None:
        super().__init__()
        self.heads, self.radius = heads, radius
        self.head_dim = max(channels // heads, 1)
        inner = self.head_dim * heads
        self.norm_query, self.norm_context = ChannelNorm(channels), ChannelNorm(channels)
        self.query = nn.Conv3d(channels, inner, 1)
        self.key = nn.Conv3d(channels, inner, 1)
        self.value = nn.Conv3d(channels, inner, 1)
        self.project = nn.Conv3d(inner, channels, 1)
        self.mlp = nn.Sequential(ChannelNorm(channels), nn.Conv3d(channels, 2 * channels, 1), nn.GELU(),
                                 nn.Conv3d(2 * channels, channels, 1))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, d, h, w = query.shape
        split = (b, self.heads, self.head_dim, d, h, w)
        q = self.query(self.norm_query(query)).view(split) / math.sqrt(self.head_dim)
        context = self.norm_context(context)
        k, v = self.key(context), self.value(context)
        logits = torch.stack([(q * shifted.view(split)).sum(2) for shifted in _neighbours(k, self.radius)], 2)
        weights = logits.softmax(2)                                   # (B, heads, n, D, H, W)
        out = sum(weights[:, :, n, None] * shifted.view(split)
                  for n, shifted in enumerate(_neighbours(v, self.radius)))
        x = query + self.project(out.reshape(b, -1, d, h, w))
        return x + self.mlp(x)


class LevelDecoder(nn.Module):
    """One level: attention (optional), then a residual displacement from the level's features."""

    def __init__(self, channels: int, heads: int, attention_radius: int, correlation_radius: int) -> None:
        super().__init__()
        self.correlation_radius = correlation_radius
        self.attend = attention_radius > 0
        if self.attend:
            self.cross_image = NeighbourhoodAttention(channels, heads, attention_radius)
            self.cross_mask = NeighbourhoodAttention(channels, heads, attention_radius)
            self.image_to_mask = NeighbourhoodAttention(channels, heads, attention_radius)
            self.mask_to_image = NeighbourhoodAttention(channels, heads, attention_radius)
        extra = (2 * correlation_radius + 1) ** 3 if correlation_radius > 0 else 0
        cin = 4 * channels + extra + (channels if self.attend else 0)
        self.head = nn.Sequential(_conv(cin, channels), _conv(channels, channels))
        self.out = Conv3d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, fixed_image, moving_image, fixed_mask, moving_mask) -> torch.Tensor:
        parts = [fixed_image, moving_image, fixed_mask, moving_mask]
        if self.correlation_radius > 0:
            parts.append(local_correlation(fixed_image, moving_image, self.correlation_radius))
        if self.attend:
            crossed_image = self.cross_image(moving_image, fixed_image)
            crossed_mask = self.cross_mask(moving_mask, fixed_mask)
            parts.append(0.5 * (self.image_to_mask(crossed_image, crossed_mask) +
                                self.mask_to_image(crossed_mask, crossed_image)))
        return self.out(self.head(torch.cat(parts, 1)))


class AssistedNet(nn.Module):
    """(fixed image, moving image, fixed masks, moving masks) -> (per-level fields finest first,
    fixed image features, moving image features). Sides must be multiples of 2^(levels-1)."""

    def __init__(self, mask_channels: int, width: int = 8, levels: int = 4, heads: int = 2,
                 attention_radius: int = 1, correlation_radius: int = 1) -> None:
        super().__init__()
        widths = level_widths(width, levels)
        self.image_encoder = Encoder(1, widths)
        self.mask_encoder = Encoder(mask_channels, widths)
        self.decoders = nn.ModuleList([
            LevelDecoder(c, heads, attention_radius if level > 0 else 0, correlation_radius)
            for level, c in enumerate(widths)])

    def forward(self, fixed, moving, fixed_masks, moving_masks):
        fixed_features, moving_features = self.image_encoder(fixed), self.image_encoder(moving)
        fixed_mask_features, moving_mask_features = self.mask_encoder(fixed_masks), self.mask_encoder(moving_masks)
        fields: list[torch.Tensor] = []
        field = None
        for level in reversed(range(len(self.decoders))):          # coarse to fine
            moving_image, moving_mask = moving_features[level], moving_mask_features[level]
            if field is not None:
                field = upsample_field(field, moving_image.shape[-3:])
                moving_image, moving_mask = warp(moving_image, field), warp(moving_mask, field)
            delta = self.decoders[level](fixed_features[level], moving_image, fixed_mask_features[level], moving_mask)
            field = delta if field is None else field + delta
            fields.append(field)
        return fields[::-1], fixed_features, moving_features
