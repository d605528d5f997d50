"""``assisted`` as a training task for ``samreg train`` (:mod:`SAMRegistrationLib.training.task`).

The objective is the paper's (Eq. 11): w1 L_NCC + w2 L_diffusion + w3 L_Dice + w4 L_prototype
+ w5 L_contour, with MIND-SSC in place of NCC for SynthMorph pairs (their two images draw their
intensities independently). The masks come from the pair's label maps, degraded
(:func:`.masks.training_masks`); the mask terms are on those masks, never on the labels, as in
the paper. Validation scores Dice of the warped *labels* with the validation masks, and without
any mask, the given masks' own Dice against the labels, and folding.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ...field_ops import jacobian_det, warp
from ...metrics import dice_per_label, fold_percent
from ..samir.losses import diffusion_loss, dice_loss, local_ncc_loss, mind_ssd_loss
from ..samir.model import pad_for_levels
from .config import AssistedConfig
from .losses import contour_loss, present, prototype_loss
from .masks import mask_dice, training_masks, validation_masks
from .model import AssistedModel, predict


def objective(model: AssistedModel, fixed: torch.Tensor, moving: torch.Tensor, fixed_masks: torch.Tensor,
              moving_masks: torch.Tensor, same_contrast: bool = True,
              config: Optional[AssistedConfig] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of one pair and its parts (the same keys whatever the pair holds).
    ``config`` defaults to the model's (pass it when ``model`` is a DDP wrapper)."""
    config = config or model.config
    fixed, moving, fixed_masks, moving_masks = (pad_for_levels(x, config.levels)
                                                for x in (fixed, moving, fixed_masks, moving_masks))
    fields, fixed_features, moving_features = model(fixed, moving, fixed_masks, moving_masks)
    finest = fields[0]
    image = local_ncc_loss(fixed, warp(moving, finest), config.ncc_window) if same_contrast else \
        mind_ssd_loss(fixed, moving, finest)
    smooth = diffusion_loss([finest])
    zero = finest.new_zeros(())
    dice = prototype = contour = zero
    keep = present(fixed_masks, moving_masks)
    if bool(keep.any()):
        if config.dice_weight > 0:
            dice = dice_loss(fixed_masks[:, keep], moving_masks[:, keep], finest)
        if config.prototype_weight > 0:
            level = min(config.prototype_level, config.levels - 1)
            prototype = prototype_loss(fixed_features[level], moving_features[level], fixed_masks, moving_masks,
                                       config.temperature)
        if config.contour_weight > 0:
            contour = contour_loss(fixed_masks, moving_masks, finest, config.contour_points)
    total = (config.ncc_weight * image + config.diffusion_weight * smooth + config.dice_weight * dice +
             config.prototype_weight * prototype + config.contour_weight * contour)
    parts = {name: float(value.detach()) for name, value in
             (("image", image), ("diffusion", smooth), ("dice", dice), ("prototype", prototype),
              ("contour", contour), ("total", total))}
    return total, parts


class AssistedTask:
    name = "assisted"
    best_metric = ("dice", "max")
    feature_provider = None

    def __init__(self, config: AssistedConfig) -> None:
        self.config = config

    def build_model(self) -> torch.nn.Module:
        return AssistedModel(self.config)

    def _no_masks(self, pair) -> torch.Tensor:
        return pair.fixed.new_zeros((pair.fixed.shape[0], self.config.mask_channels, *pair.fixed.shape[-3:]))

    def loss(self, model: torch.nn.Module, pair) -> tuple[torch.Tensor, dict[str, float]]:
        fixed_masks, moving_masks, _ = training_masks(pair.fixed_label, pair.moving_label, self.config)
        if fixed_masks is None:
            fixed_masks = moving_masks = self._no_masks(pair)
        return objective(model, pair.fixed, pair.moving, fixed_masks.to(pair.fixed.device),
                         moving_masks.to(pair.fixed.device), "synthmorph" not in pair.source, self.config)

    def validate(self, model: torch.nn.Module, pair) -> dict[str, float]:
        from ...training.synthesis import warp_nearest
        metrics: dict[str, float] = {}
        if pair.fixed_label is None or pair.moving_label is None:
            field = predict(model, pair.fixed, pair.moving, self._no_masks(pair), self._no_masks(pair))[0]
            metrics["fold_percent"] = fold_percent(jacobian_det(field.detach()).numpy())
            return metrics
        fixed_masks, moving_masks, owner = validation_masks(pair.fixed_label, pair.moving_label, self.config,
                                                            pair.source)
        fixed_label = pair.fixed_label[0, 0].numpy()
        values = pair.labels or [int(v) for v in np.unique(fixed_label) if v != 0]

        def label_dice(field: torch.Tensor) -> float:
            warped = warp_nearest(pair.moving_label, field.detach())[0, 0].numpy()
            scores = [v for v in dice_per_label(fixed_label, warped, values).values() if not math.isnan(v)]
            return sum(scores) / len(scores) if scores else float("nan")

        field = predict(model, pair.fixed, pair.moving, fixed_masks, moving_masks)[0]
        metrics["dice"] = label_dice(field)
        metrics["dice_no_masks"] = label_dice(predict(model, pair.fixed, pair.moving, self._no_masks(pair),
                                                      self._no_masks(pair))[0])
        metrics["mask_dice"] = mask_dice(fixed_masks, pair.fixed_label, owner)
        metrics["fold_percent"] = fold_percent(jacobian_det(field.detach()).numpy())
        return metrics
