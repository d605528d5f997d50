"""What a registration method is given and what it returns.

A :class:`Problem` carries everything a method may use, so that a method's ``run(problem,
params)`` needs nothing else: the working grid (the fixed image's frame at the working
spacing, cropped to its anatomy), both images normalised to [0, 1] and the affine
pre-alignment, the encoder's features of both images on the working grid (the moving ones
already through the affine; computed on first use), the anatomy mask, the device, the
progress reporter, the resolved modalities, and the regions and click pairs from point prompts
when there are any.

A method returns a :class:`MethodResult`: a
:class:`~SAMRegistrationLib.displacement.DisplacementField` on the working grid (world mm;
the fixed->moving mapping before the affine, which the pipeline composes) and a dict of what
it chose and did, recorded in ``report.json`` under ``resolved.method``.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:                       # torch-free at import: plug-in modules import this
    import SimpleITK as sitk
    import torch

    from .displacement import DisplacementField
    from .settings import Settings
    from .grid import Grid
    from .progress import Reporter


@dataclass
class Problem:
    grid: "Grid"                                   # working grid
    fixed_image: "sitk.Image"                      # intensities normalised to [0, 1]
    moving_image: "sitk.Image"
    affine: "sitk.Transform"                       # fixed -> moving pre-alignment
    mask: "torch.Tensor"                           # (D, H, W) bool: anatomy in either image
    device: "torch.device"
    reporter: "Reporter"
    encode: Callable[[], tuple["torch.Tensor", "torch.Tensor"]]   # -> (C, D, H, W) fixed, moving features
    regions: Optional[tuple["torch.Tensor", "torch.Tensor"]] = None   # (K, D, H, W) soft masks, fixed / moving
    landmarks: Optional[tuple["torch.Tensor", "torch.Tensor"]] = None  # (N, 3) working voxels, fixed / moving
    modalities: tuple[str, str] = ("mr", "mr")     # resolved intensity normalisation, fixed / moving: "ct" or "mr"
    settings: Optional["Settings"] = None          # the run's settings (cache folder, device), for methods that encode
    _features: Optional[tuple["torch.Tensor", "torch.Tensor"]] = dataclass_field(default=None, repr=False)
    _agreement: Optional[float] = dataclass_field(default=None, repr=False)

    @property
    def spacing(self) -> float:
        """The working grid's (isotropic) spacing, mm."""
        return float(min(self.grid.spacing))

    def features(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(fixed, moving) features on the working grid and the device; encoded on first use."""
        if self._features is None:
            fixed, moving = self.encode()
            if fixed is None or moving is None:
                raise RuntimeError("this method declares own_features: the pipeline encoded nothing for it")
            self._features = (fixed.to(self.device), moving.to(self.device))
        return self._features

    def intensities(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(fixed, moving) normalised intensities on the working grid and the device, (1, D, H, W)
        each, the moving one through the affine (as its features are)."""
        from .resample import image_on_grid
        fixed = image_on_grid(self.fixed_image, self.grid)[0]
        moving = image_on_grid(self.moving_image, self.grid, self.affine)[0]
        return fixed.to(self.device), moving.to(self.device)

    def same_contrast(self) -> bool:
        """Whether the two images show anatomy with the same contrast: their smoothed intensities
        correlate at least as much as encoder ``auto`` requires (an undecided case counts as the same)."""
        import math
        from .features.auto import SAME_CONTRAST_MIN, contrast_agreement
        if self._agreement is None:
            self._agreement = contrast_agreement(self.fixed_image, self.moving_image, self.affine, self.grid)
        return math.isnan(self._agreement) or self._agreement >= SAME_CONTRAST_MIN

    def release_features(self) -> None:
        """Drop the features (memory) once the method is done with them."""
        self._features = None


@dataclass
class MethodResult:
    field: "DisplacementField"                     # on the working grid, world mm, before the affine
    info: dict[str, Any] = dataclass_field(default_factory=dict)
