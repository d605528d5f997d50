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


def _ssd(volume: torch.Tensor, radius: int, dilation: int) -> torch.Tensor:
    """(1, 1, D, H, W) -> (1, 12, D, H, W) patch SSDs, minus their per-voxel minimum."""
    shape = volume.shape[-3:]
    padded = F.pad(volume, [dilation] * 6, mode="replicate")
    ssd = torch.empty(1, 12, *shape, dtype=volume.dtype, device=volume.device)
    for channel, (a, b) in enumerate(_ssc_pairs()):
        diff = _shifted(padded, tuple(dilation * v for v in a), dilation, shape) - \
            _shifted(padded, tuple(dilation * v for v in b), dilation, shape)
        ssd[:, channel:channel + 1] = _box(diff * diff, radius)
    return ssd - ssd.min(dim=1, keepdim=True).values


def _slabs(volume: torch.Tensor, halo: int, slab: int):
    """Yield (z0, z1, sub-volume with ``halo`` slices of context, replicate-padded at the ends)."""
    depth = volume.shape[2]
    for z0 in range(0, depth, slab):
        z1 = min(depth, z0 + slab)
        lo, hi = max(0, z0 - halo), min(depth, z1 + halo)
        sub = volume[:, :, lo:hi]
        front, back = halo - (z0 - lo), halo - (hi - z1)
        if front or back:
            sub = F.pad(sub, [0, 0, 0, 0, front, back], mode="replicate")
        yield z0, z1, sub


@torch.no_grad()
def mind_ssc(volume: torch.Tensor, radius: int = 1, dilation: int = 2, pool: int = 1,
             slab: int = 24) -> torch.Tensor:
    """(1, 1, D, H, W) -> (1, 12, D // pool, H // pool, W // pool) MIND-SSC descriptors in (0, 1].

    Computed in z-slabs with enough context that the result equals a whole-volume computation
    (the variance normalisation uses the global mean, from a first pass), and average-pooled by
    ``pool`` slab by slab, so memory stays proportional to a slab.
    """
    halo = dilation + radius
    slab = max(pool, slab // pool * pool)
    total, count = 0.0, 0
    for z0, z1, sub in _slabs(volume, halo, slab):
        variance = _ssd(sub, radius, dilation)[:, :, halo:halo + z1 - z0].mean(dim=1)
        total += float(variance.sum(dtype=torch.float64))
        count += variance.numel()
    mean_var = max(total / max(count, 1), 1e-12)   # a constant volume has no variance at all
    pieces = []
    for z0, z1, sub in _slabs(volume, halo, slab):
        ssd = _ssd(sub, radius, dilation)[:, :, halo:halo + z1 - z0]
        variance = ssd.mean(dim=1, keepdim=True).clamp(mean_var * 1e-3, mean_var * 1e3)
        mind = torch.exp(-ssd / variance)
        if pool > 1:
            if mind.shape[2] < pool:
                break
            mind = F.avg_pool3d(mind, pool, stride=pool)
        pieces.append(mind)
    return torch.cat(pieces, dim=2)


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
        feats = mind_ssc(volume, self.radius, self.dilation, pool=self.oversample)
        del volume
        return _fit(feats, grid.shape)[0]

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
