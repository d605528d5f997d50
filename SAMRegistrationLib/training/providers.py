"""Feature providers for training (see :class:`~.feature_cache.FeatureProvider`)."""
from __future__ import annotations

import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..features.mind import mind_ssc
from .feature_cache import image_tensor
from .synthesis import gaussian_blur


class MindFeatures:
    """MIND-SSC descriptors (12 channels, no weights), average-pooled by ``pool``."""

    def __init__(self, radius: int = 1, dilation: int = 2, pool: int = 1) -> None:
        self.radius, self.dilation, self.pool = int(radius), int(dilation), int(pool)
        self.identity = f"mind-ssc:radius={self.radius}:dilation={self.dilation}:pool={self.pool}"

    def __call__(self, image: sitk.Image) -> torch.Tensor:
        return mind_ssc(image_tensor(image), self.radius, self.dilation, pool=self.pool)[0]


class ScaleSpaceFeatures:
    """Gaussian scale space of the image: the image blurred at each of ``sigmas`` (voxels) and the
    differences of neighbouring scales (band-pass channels), average-pooled by ``pool``. Smooth
    and nearly equivariant under smooth deformations: the baseline a learned encoder's
    warp fidelity can be compared with."""

    def __init__(self, sigmas: tuple[float, ...] = (1.0, 2.0, 4.0), pool: int = 1) -> None:
        self.sigmas, self.pool = tuple(float(s) for s in sigmas), int(pool)
        self.identity = f"scale-space:sigmas={','.join(f'{s:g}' for s in self.sigmas)}:pool={self.pool}"

    @torch.no_grad()
    def __call__(self, image: sitk.Image) -> torch.Tensor:
        volume = image_tensor(image)
        blurred = [gaussian_blur(volume, sigma) for sigma in self.sigmas]
        bands = [fine - coarse for fine, coarse in zip(blurred, blurred[1:])]
        features = torch.cat(blurred + bands, dim=1)
        if self.pool > 1:
            features = F.avg_pool3d(features, self.pool, stride=self.pool)
        return features[0]
