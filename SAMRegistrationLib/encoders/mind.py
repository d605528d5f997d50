"""MIND-SSC: modality-independent self-similarity context descriptors (Heinrich et al. 2013).

Twelve channels, one per pair of six-neighbourhood offsets at distance ``dilation`` that are
sqrt(2) * dilation apart. Each channel is the patch-averaged squared difference of the image
shifted by the two offsets, turned into a similarity by exp(-D / V), with V a local variance
estimate (mean over channels). No weights.
"""
from __future__ import annotations

import itertools

import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..grid import Grid
from ..registry import register_volume_encoder
from ..resample import image_on_grid

_SIX = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]


def _ssc_pairs() -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    pairs = []
    for a, b in itertools.combinations(_SIX, 2):
        if sum((x - y) ** 2 for x, y in zip(a, b)) == 2:   # neighbours, not opposite
            pairs.append((a, b))
    return pairs                                               # 12 pairs


def _shifted(padded: torch.Tensor, offset: tuple[int, int, int], pad: int, shape) -> torch.Tensor:
    dz, dy, dx = offset
    d, h, w = shape
    return padded[..., pad + dz:pad + dz + d, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return x
    x = F.pad(x, [radius] * 6, mode="replicate")
    return F.avg_pool3d(x, 2 * radius + 1, stride=1)


@torch.no_grad()
def mind_ssc(volume: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """(1, 1, D, H, W) -> (1, 12, D, H, W) MIND-SSC descriptors in (0, 1]."""
    shape = volume.shape[-3:]
    padded = F.pad(volume, [dilation] * 6, mode="replicate")
    channels = []
    for a, b in _ssc_pairs():
        diff = _shifted(padded, tuple(dilation * v for v in a), dilation, shape) - \
            _shifted(padded, tuple(dilation * v for v in b), dilation, shape)
        channels.append(_box(diff * diff, radius))
    ssd = torch.cat(channels, dim=1)
    ssd = ssd - ssd.min(dim=1, keepdim=True).values
    variance = ssd.mean(dim=1, keepdim=True)
    mean_var = variance.mean().clamp_min(1e-12)   # a constant volume has no variance at all
    variance = variance.clamp(mean_var * 1e-3, mean_var * 1e3)
    return torch.exp(-ssd / variance)


class MindEncoder:
    """MIND-SSC computed at half the working spacing and average-pooled onto the working grid."""

    name = "mind"

    def __init__(self, settings) -> None:
        self.radius = int(settings.extra.get("mind_radius", 1))
        self.dilation = int(settings.extra.get("mind_dilation", 2))
        self.oversample = int(settings.extra.get("mind_oversample", 2))

    def _on_grid(self, image: sitk.Image, grid: Grid, transform) -> torch.Tensor:
        fine = grid.with_spacing(tuple(s / self.oversample for s in grid.spacing)) if self.oversample > 1 else grid
        volume = image_on_grid(image, fine, transform)
        feats = mind_ssc(volume, self.radius, self.dilation)
        if self.oversample > 1:
            feats = F.avg_pool3d(feats, self.oversample, stride=self.oversample)
            feats = _fit(feats, grid.shape)
        return feats[0]

    def features(self, fixed01, moving01, affine, grid: Grid, reporter) -> tuple[torch.Tensor, torch.Tensor, dict]:
        reporter("encode", 0.0, "MIND-SSC fixed")
        fixed = self._on_grid(fixed01, grid, None)
        reporter("encode", 0.5, "MIND-SSC moving")
        moving = self._on_grid(moving01, grid, affine)
        reporter("encode", 1.0, "MIND-SSC done")
        return fixed, moving, {"channels": 12, "radius": self.radius, "dilation": self.dilation}


def _fit(x: torch.Tensor, shape) -> torch.Tensor:
    """Crop or replicate-pad the last three axes to ``shape``."""
    pads = []
    for have, want in zip(reversed(x.shape[-3:]), reversed(shape)):
        pads += [0, max(0, want - have)]
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
    return x[..., :shape[0], :shape[1], :shape[2]]


@register_volume_encoder("mind")
def make_mind(settings) -> MindEncoder:
    return MindEncoder(settings)
