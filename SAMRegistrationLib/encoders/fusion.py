"""Fusion of a foundation-model encoder with MIND-SSC: concatenated, each part at the same
total variance, MIND weighted by ``settings.mind_weight`` (fine local structure from MIND,
semantic correspondence from the foundation model)."""
from __future__ import annotations

import math

import torch

from ..registry import get_volume_encoder, register_volume_encoder
from .slicewise import FEATURE_VARIANCE


class FusionEncoder:
    def __init__(self, parts: list[str], settings) -> None:
        self.name = "+".join(parts)
        self.parts = [get_volume_encoder(p)(settings) for p in parts]
        self.weights = [1.0 if p != "mind" else float(settings.mind_weight) for p in parts]

    def features(self, fixed01, moving01, affine, grid, reporter):
        fixed_parts, moving_parts, info = [], [], {}
        for part, weight in zip(self.parts, self.weights):
            f, m, part_info = part.features(fixed01, moving01, affine, grid, reporter)
            # each part to the common variance, then weighted; total variance stays FEATURE_VARIANCE
            variance = float(torch.cat([f.flatten(1), m.flatten(1)], 1).var(1).sum().clamp_min(1e-12))
            factor = math.sqrt(FEATURE_VARIANCE / variance * weight / sum(self.weights))
            fixed_parts.append(f * factor)
            moving_parts.append(m * factor)
            info[part.name] = {**part_info, "weight": weight}
        return torch.cat(fixed_parts), torch.cat(moving_parts), info


@register_volume_encoder("litemedsam+mind")
def make_litemedsam_mind(settings) -> FusionEncoder:
    return FusionEncoder(["litemedsam", "mind"], settings)
