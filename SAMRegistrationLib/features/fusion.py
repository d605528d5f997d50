"""Fusion of a foundation-model encoder with MIND-SSC: concatenated, each part at the same
total variance, MIND weighted by ``settings.encoder_params.mind_weight`` (fine local structure from MIND,
semantic correspondence from the foundation model), then optionally reduced by a joint PCA
to ``settings.encoder_params.fusion_dims`` channels, since the optimiser's cost grows with them."""
from __future__ import annotations

import math

import torch

from ..encoders import build_encoder
from .slicewise import FEATURE_VARIANCE


class FusionEncoder:
    def __init__(self, parts: list[str], settings) -> None:
        self.name = "+".join(parts)
        self.parts = [build_encoder(p, settings) for p in parts]
        self.weights = [1.0 if p != "mind" else float(settings.encoder_params.mind_weight) for p in parts]
        self.fusion_dims = settings.encoder_params.fusion_dims

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
        fixed, moving = torch.cat(fixed_parts), torch.cat(moving_parts)
        del fixed_parts, moving_parts
        dims = int(self.fusion_dims)
        if 0 < dims < fixed.shape[0]:
            fixed, moving = joint_pca_volumes(fixed, moving, dims)
            info["fusion_dims"] = dims
        return fixed, moving, info


def joint_pca_volumes(fixed: torch.Tensor, moving: torch.Tensor, dims: int,
                      chunk: int = 1 << 18) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (C, D, H, W) volumes onto the top ``dims`` principal axes of all their voxels.

    The covariance is accumulated chunk by chunk in float64, so memory stays at the size of
    the volumes themselves.
    """
    channels = fixed.shape[0]
    total = torch.zeros(channels, dtype=torch.float64)
    outer = torch.zeros(channels, channels, dtype=torch.float64)
    count = 0
    for volume in (fixed, moving):
        flat = volume.reshape(channels, -1)
        for start in range(0, flat.shape[1], chunk):
            part = flat[:, start:start + chunk].double()
            total += part.sum(1)
            outer += part @ part.T
            count += part.shape[1]
    mean = total / count
    values, vectors = torch.linalg.eigh(outer / count - torch.outer(mean, mean))
    basis = vectors[:, torch.argsort(values, descending=True)[:dims]].float()
    shift = (basis.T @ mean.float())[:, None]

    def project(volume: torch.Tensor) -> torch.Tensor:
        return (basis.T @ volume.reshape(channels, -1) - shift).reshape(dims, *volume.shape[1:])

    return project(fixed), project(moving)


def make_litemedsam_mind(settings) -> FusionEncoder:
    return FusionEncoder(["litemedsam", "mind"], settings)
