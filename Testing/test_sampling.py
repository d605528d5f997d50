"""The Adam stage's trilinear sampler against grid_sample with autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from SAMRegistrationLib.trilinear import channels_last_table, ssd_value_and_gradient


@pytest.mark.parametrize("shape", [(6, 7, 8), (1, 7, 8), (5, 1, 4)])
def test_value_and_gradient_match_grid_sample(shape):
    torch.manual_seed(0)
    d, h, w = shape
    channels, count = 3, 4000
    moving = torch.randn(1, channels, d, h, w)
    size = torch.tensor([w, h, d], dtype=torch.float32)
    points = torch.rand(count, 3) * (size + 2.0) - 1.5          # some beyond the border
    targets = torch.randn(count, channels)

    p = points.clone().requires_grad_(True)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)])
    grid = (p * scale - 1.0).view(1, 1, 1, -1, 3)
    sampled = F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=True)
    loss = ((sampled.view(channels, -1).t() - targets) ** 2).sum()
    loss.backward()

    value, gradient = ssd_value_and_gradient(channels_last_table(moving), shape, points, targets, chunk=999)
    assert value == pytest.approx(float(loss.detach()), rel=1e-5)
    # the gradient jumps across cell faces: compare away from them
    frac = points - points.floor()
    away = ((frac > 1e-3) & (frac < 1 - 1e-3)).all(1)
    assert away.sum() > 0.9 * count
    assert torch.allclose(gradient[away], p.grad[away], atol=1e-4)
    outside = ((points < 0) | (points > size - 1)).any(1)
    assert outside.any()
