"""Trilinear feature sampling with an analytic gradient, for the Adam stage's data term.

``F.grid_sample`` in 3D has no vectorised CPU kernel and its backward pass costs twice its
forward one; the SSD data term needs only the gradient with respect to the sample points,
which the eight corner values already give. Gathering those corners from a channels-last
table, chunk by chunk so that every intermediate stays in cache, gives value and gradient
together at a fraction of the cost (measured: docs/benchmark.md, where the time goes).

Coordinates are voxel indices (x, y, z) of the sampled volume; points outside are clamped to
the border with zero gradient there, like ``grid_sample(padding_mode="border",
align_corners=True)``.
"""
from __future__ import annotations

import torch

CHUNK = 1 << 13     # points per chunk: 8 K points x 16 channels x 4 B = 0.5 MB per intermediate (in cache)


def channels_last_table(volume: torch.Tensor) -> torch.Tensor:
    """(C, D, H, W) or (1, C, D, H, W) -> contiguous (D * H * W, C) rows of a voxel's channels."""
    if volume.dim() == 5:
        volume = volume[0]
    return volume.reshape(volume.shape[0], -1).t().contiguous()


def _lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a + t (b - a), b - a)."""
    slope = b - a
    return torch.addcmul(a, t, slope), slope


def ssd_value_and_gradient(table: torch.Tensor, shape: tuple[int, int, int], points: torch.Tensor,
                           targets: torch.Tensor, chunk: int = CHUNK) -> tuple[float, torch.Tensor]:
    """sum over points and channels of (moving(p) - target)^2, and its gradient w.r.t. each point.

    ``table``: (D * H * W, C) from :func:`channels_last_table`; ``shape``: (D, H, W);
    ``points``: (N, 3) voxel coordinates (x, y, z); ``targets``: (N, C). Returns the sum and an
    (N, 3) gradient in the same (x, y, z) voxel units.
    """
    d, h, w = shape
    upper = torch.tensor([w - 1, h - 1, d - 1], dtype=points.dtype, device=points.device)
    last_cell = (upper - 1).clamp_min(0)
    strides = torch.tensor([1, w, w * h], dtype=torch.long, device=points.device)
    # corner offsets in the flat table, (x, y, z) bits: index = x + w * y + w * h * z
    step = [int(stride) if n > 1 else 0 for stride, n in zip(strides, (w, h, d))]   # 0 along a size-1 axis
    gradient = torch.empty_like(points)
    total = 0.0
    for start in range(0, points.shape[0], chunk):
        p = points[start:start + chunk]
        inside = ((p >= 0) & (p <= upper)).to(p.dtype)          # border clamping kills the gradient
        p = torch.minimum(p.clamp_min(0), upper)
        cell = torch.minimum(p.floor(), last_cell)
        frac = p - cell
        base = (cell.long() * strides).sum(1)
        fx, fy, fz = frac[:, 0:1], frac[:, 1:2], frac[:, 2:3]

        def corner(x: int, y: int, z: int) -> torch.Tensor:
            return table.index_select(0, base + x * step[0] + y * step[1] + z * step[2])

        # along x, for each (y, z) edge of the cell
        ax00, sx00 = _lerp(corner(0, 0, 0), corner(1, 0, 0), fx)
        ax10, sx10 = _lerp(corner(0, 1, 0), corner(1, 1, 0), fx)
        ax01, sx01 = _lerp(corner(0, 0, 1), corner(1, 0, 1), fx)
        ax11, sx11 = _lerp(corner(0, 1, 1), corner(1, 1, 1), fx)
        # along y, then z
        ay0, sy0 = _lerp(ax00, ax10, fy)
        ay1, sy1 = _lerp(ax01, ax11, fy)
        value, dz = _lerp(ay0, ay1, fz)
        dy, _ = _lerp(sy0, sy1, fz)
        dx = _lerp(_lerp(sx00, sx10, fy)[0], _lerp(sx01, sx11, fy)[0], fz)[0]
        residual = value.sub_(targets[start:start + chunk])
        total += float(residual.pow(2).sum())
        residual.mul_(2.0)
        grad = torch.stack([(residual * dx).sum(1), (residual * dy).sum(1), (residual * dz).sum(1)], 1)
        gradient[start:start + chunk] = grad * inside
    return total, gradient
