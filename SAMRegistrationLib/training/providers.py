"""Feature providers for training (see :class:`~.feature_cache.FeatureProvider`)."""
from __future__ import annotations

import SimpleITK as sitk
import torch

from ..features.mind import mind_ssc
from .feature_cache import image_tensor


class MindFeatures:
    """MIND-SSC descriptors (12 channels, no weights), average-pooled by ``pool``."""

    def __init__(self, radius: int = 1, dilation: int = 2, pool: int = 1) -> None:
        self.radius, self.dilation, self.pool = int(radius), int(dilation), int(pool)
        self.identity = f"mind-ssc:radius={self.radius}:dilation={self.dilation}:pool={self.pool}"

    def __call__(self, image: sitk.Image) -> torch.Tensor:
        return mind_ssc(image_tensor(image), self.radius, self.dilation, pool=self.pool)[0]
