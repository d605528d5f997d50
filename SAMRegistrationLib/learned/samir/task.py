"""SAMIR as a training task for ``samreg train`` (:mod:`SAMRegistrationLib.training.task`).

Before training, :meth:`SamirTask.prepare` encodes every training image of the dataset with
LiteMedSAM (slice stacks from the full-resolution volume, cached on disk as for registration)
and fits the frozen projection on them; the feature provider then gives each training-grid
volume its frozen features on that grid. The loss is :func:`.training.objective` (NCC, or
MIND-SSC for SynthMorph pairs, whose two images draw their intensities independently); the
validation scores Dice of the warped label maps, folding and, where landmarks exist, TRE.
"""
from __future__ import annotations

import hashlib
import math
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from ...field_ops import jacobian_det
from ...metrics import dice_per_label, fold_percent
from ...grid import Grid
from .frozen import FrozenProjection, fit_projection, frozen_on_grid, litemedsam_encoder
from .model import SamirConfig, SamirModel, predict
from .training import objective


class LiteMedSAMFrozen:
    """Feature provider: a training-grid volume's frozen features on that grid, (dims, D, H, W)."""

    def __init__(self, projection: FrozenProjection, canvas: int) -> None:
        self.projection, self.canvas = projection, canvas
        self.encoder = litemedsam_encoder(canvas)
        digest = hashlib.sha256(projection.basis.numpy().tobytes() + projection.mean.numpy().tobytes()).hexdigest()
        self.identity = f"litemedsam-frozen:canvas={canvas}:{self.encoder.identity()}:projection={digest[:16]}"

    def __call__(self, image: sitk.Image) -> torch.Tensor:
        stack, _ = self.encoder.stack(image, lambda *a, **k: None, (0.0, 1.0))
        return frozen_on_grid(stack, self.projection, Grid.from_image(image))


class SamirTask:
    name = "samir"
    best_metric = ("dice", "max")

    def __init__(self, config: SamirConfig) -> None:
        self.config = config
        self.projection: Optional[FrozenProjection] = None
        self.feature_provider: Optional[LiteMedSAMFrozen] = None

    def prepare(self, dataset, sampling) -> None:
        """Fit the frozen projection on the LiteMedSAM stacks of every training image."""
        from ...errors import InputError
        if sampling.grid_spacing is not None and abs(sampling.grid_spacing - self.config.spacing) > 1e-6:
            raise InputError(f"samir: the training grid's spacing ({sampling.grid_spacing:g} mm, --grid-spacing) "
                             f"must equal the model's ({self.config.spacing:g} mm, --spacing)")
        from ...volume import normalise_intensity, read_volume
        encoder = litemedsam_encoder(self.config.canvas)
        spec = dataset.spec
        paths = [v.image for v in spec.volumes] + [p for pair in spec.pairs for p in (pair.fixed, pair.moving)]
        if not paths:
            raise ValueError("samir needs images to fit its frozen projection (volumes or pairs in the dataset)")
        stacks = []
        for path in paths:
            image01, _ = normalise_intensity(read_volume(dataset.resolve(path)))
            stacks.append(encoder.stack(image01, lambda *a, **k: None, (0.0, 1.0))[0])
        self.projection = fit_projection(stacks, self.config.dims)
        self.feature_provider = LiteMedSAMFrozen(self.projection, self.config.canvas)

    def build_model(self) -> torch.nn.Module:
        if self.projection is None:
            raise RuntimeError("SamirTask.prepare must run before build_model")
        return SamirModel(self.config, self.projection)

    def _inputs(self, pair) -> tuple[torch.Tensor, torch.Tensor]:
        fixed, moving = pair.fixed_features.float(), pair.moving_features.float()
        if self.config.intensity:
            fixed, moving = torch.cat([fixed, pair.fixed], 1), torch.cat([moving, pair.moving], 1)
        return fixed, moving

    def loss(self, model: torch.nn.Module, pair) -> tuple[torch.Tensor, dict[str, float]]:
        fixed_in, moving_in = self._inputs(pair)
        return objective(model, fixed_in, moving_in, pair.fixed, pair.moving, "synthmorph" not in pair.source,
                         pair.fixed_label, pair.moving_label, list(pair.labels) if pair.labels else None,
                         config=self.config)

    def validate(self, model: torch.nn.Module, pair) -> dict[str, float]:
        from ...training.synthesis import warp_nearest
        fixed_in, moving_in = self._inputs(pair)
        field = predict(model, fixed_in, moving_in)[0]
        metrics: dict[str, float] = {}
        if pair.fixed_label is not None and pair.moving_label is not None:
            warped = warp_nearest(pair.moving_label, field.detach())[0, 0].numpy()
            fixed_label = pair.fixed_label[0, 0].numpy()
            values = pair.labels or [int(v) for v in np.unique(fixed_label) if v != 0]
            scores = [v for v in dice_per_label(fixed_label, warped, values).values() if not math.isnan(v)]
            metrics["dice"] = sum(scores) / len(scores) if scores else float("nan")
        if pair.fixed_points is not None and pair.moving_points is not None:
            metrics["tre_mm"] = _tre(field, pair.fixed_points, pair.moving_points, pair.spacing)
        metrics["fold_percent"] = fold_percent(jacobian_det(field.detach()).numpy())
        return metrics


def _tre(field: torch.Tensor, fixed_points: torch.Tensor, moving_points: torch.Tensor, spacing) -> float:
    """Mean distance (mm) between the moving points and the fixed points mapped by ``field``
    (points in voxel indices (x, y, z) of the field's grid)."""
    import torch.nn.functional as F
    d, h, w = field.shape[-3:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)])
    where = (fixed_points.float() * scale - 1.0).view(1, -1, 1, 1, 3)
    displacement = F.grid_sample(field.float(), where, align_corners=True)[0, :, :, 0, 0].T     # (N, 3)
    error = (fixed_points.float() + displacement - moving_points.float()) * torch.tensor(spacing, dtype=torch.float32)
    return float(error.norm(dim=1).mean())
