"""A dense displacement field in physical space: the one type methods and outputs share.

A :class:`DisplacementField` is a fixed->moving mapping phi(x) = x + u(x) sampled on a
:class:`~SAMRegistrationLib.grid.Grid`: the point x of the fixed image corresponds to the
point phi(x) of the moving image (ITK's convention for a displacement field transform, the
one ``displacement.nrrd`` is written in). ``u`` is held as a (1, 3, D, H, W) tensor of world
(LPS) millimetres with channels (x, y, z); outside its grid it continues with its border
value. Methods that work in voxels of a grid convert once, through :meth:`from_voxels` and
:meth:`to_voxels`; nothing else converts coordinates by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from .grid import Grid
from .resample import sample_tensor, transform_points


@dataclass(frozen=True)
class DisplacementField:
    grid: Grid
    data: torch.Tensor          # (1, 3, D, H, W) world mm, (x, y, z)

    def __post_init__(self) -> None:
        if tuple(self.data.shape) != (1, 3, *self.grid.shape):
            raise ValueError(f"displacement of shape {tuple(self.data.shape)} does not match "
                             f"its grid (1, 3, {', '.join(map(str, self.grid.shape))})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def zeros(cls, grid: Grid, dtype: torch.dtype = torch.float32,
              device: Union[str, torch.device] = "cpu") -> "DisplacementField":
        return cls(grid, torch.zeros((1, 3, *grid.shape), dtype=dtype, device=device))

    @classmethod
    def from_voxels(cls, grid: Grid, voxels: torch.Tensor) -> "DisplacementField":
        """From a (1, 3, D, H, W) field in voxel units of ``grid`` (index offsets (i, j, k))."""
        matrix = torch.as_tensor(grid.matrix, dtype=voxels.dtype, device=voxels.device)
        return cls(grid, torch.einsum("rc,bc...->br...", matrix, voxels))

    @classmethod
    def from_image(cls, image: sitk.Image) -> "DisplacementField":
        """From an ITK displacement field image (3-component vectors in world mm)."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 3:
            raise ValueError("a displacement field image must be 3D with 3-component vectors")
        array = sitk.GetArrayFromImage(image).astype(np.float32)       # (z, y, x, 3)
        return cls(Grid.from_image(image), torch.from_numpy(array).permute(3, 0, 1, 2)[None].contiguous())

    @classmethod
    def read(cls, path: Union[str, Path]) -> "DisplacementField":
        return cls.from_image(sitk.ReadImage(str(path)))

    # ------------------------------------------------------------------ conversion
    def to_voxels(self) -> torch.Tensor:
        """The field in voxel units of its grid, (1, 3, D, H, W)."""
        inverse = torch.as_tensor(np.linalg.inv(self.grid.matrix), dtype=self.data.dtype, device=self.data.device)
        return torch.einsum("rc,bc...->br...", inverse, self.data)

    def to_image(self) -> sitk.Image:
        """ITK displacement field image on the grid (float32 vectors, LPS mm)."""
        array = self.data[0].permute(1, 2, 3, 0).detach().cpu().numpy().astype(np.float32)
        return self.grid.image_from_array(np.ascontiguousarray(array), is_vector=True)

    def to_transform(self) -> sitk.DisplacementFieldTransform:
        """The ITK transform a reader of :meth:`to_image`'s file gets."""
        return sitk.DisplacementFieldTransform(sitk.Cast(self.to_image(), sitk.sitkVectorFloat64))

    def write(self, path: Union[str, Path]) -> None:
        """Write atomically (the format follows the extension: .nrrd, .nii.gz, .mha)."""
        from .io_atomic import write_image_atomic
        write_image_atomic(self.to_image(), Path(path))

    # ------------------------------------------------------------------ evaluation
    def at(self, points: torch.Tensor) -> torch.Tensor:
        """u at world ``points`` (..., 3), trilinear, border-continued; (..., 3)."""
        values = sample_tensor(self.data, self.grid, points.to(self.data.device))
        return values[0].movedim(0, -1).to(points.dtype)

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        """phi(points) = points + u(points): fixed-image points to moving-image points."""
        return points + self.at(points)

    def resample(self, grid: Grid) -> "DisplacementField":
        """The same mapping sampled on another grid."""
        points = grid.world_points(torch.float64, self.data.device)
        return DisplacementField(grid, self.at(points).to(self.data.dtype).permute(3, 0, 1, 2)[None].contiguous())

    # ------------------------------------------------------------------ algebra
    def compose(self, inner: "DisplacementField") -> "DisplacementField":
        """phi_self(phi_inner(x)), on ``inner``'s grid: first ``inner``, then this field
        (w(x) = u_inner(x) + u_self(x + u_inner(x)))."""
        points = inner.grid.world_points(torch.float64, inner.data.device)
        first = inner.data[0].permute(1, 2, 3, 0).to(torch.float64)
        total = first + self.at(points + first).to(torch.float64)
        return DisplacementField(inner.grid, total.to(inner.data.dtype).permute(3, 0, 1, 2)[None].contiguous())

    def with_affine(self, affine: Optional[sitk.Transform]) -> "DisplacementField":
        """A(phi(x)) - x: this field followed by an affine transform (identity when None)."""
        points = self.grid.world_points(torch.float64, self.data.device)
        moved = transform_points(points + self.data[0].permute(1, 2, 3, 0).to(torch.float64), affine)
        return DisplacementField(self.grid, (moved - points).to(self.data.dtype).permute(3, 0, 1, 2)[None].contiguous())

    def inverse(self, iterations: int = 60, tolerance_mm: float = 1e-3,
                damping: float = 0.5) -> tuple["DisplacementField", float]:
        """The inverse mapping on the same grid by damped fixed-point iteration towards
        v(y) = -u(y + v(y)), and its inverse-consistency error: the largest |phi(phi^-1(y)) - y|
        in mm. Undamped (``damping`` 1) the iteration oscillates where the field compresses
        strongly: on a registered lung CT it left a 99th-percentile error of 11.5 mm after 30 or
        100 iterations, where a step of 0.5 reached 0.0001 mm in 60."""
        points = self.grid.world_points(torch.float64, self.data.device)
        v = -self.data[0].permute(1, 2, 3, 0).to(torch.float64)
        for _ in range(iterations):
            step = -self.at(points + v).to(torch.float64) - v
            v = v + damping * step
            if float(step.norm(dim=-1).max()) < tolerance_mm:
                break
        field = DisplacementField(self.grid, v.to(self.data.dtype).permute(3, 0, 1, 2)[None].contiguous())
        return field, self.compose(field).max_norm()

    # ------------------------------------------------------------------ regularity
    def jacobian_determinant(self) -> torch.Tensor:
        """det(d phi / d x) in world coordinates, (D, H, W) float64.

        Index-space central differences (one-sided at borders) G = du/di, then du/dx = G M^-1
        with M = direction diag(spacing); so anisotropic and oblique grids are handled."""
        u = self.data[0].to(torch.float64)                                 # (3, D, H, W)
        grads = []
        for dim in (3, 2, 1):                                              # d/di, d/dj, d/dk
            n = u.shape[dim]
            if n < 2:
                grads.append(torch.zeros_like(u))
                continue
            grads.append(torch.gradient(u, dim=dim)[0])
        index_grad = torch.stack(grads, dim=-1).permute(1, 2, 3, 0, 4)     # (D, H, W, 3 comp, 3 index)
        inverse = torch.as_tensor(np.linalg.inv(self.grid.matrix), dtype=torch.float64, device=u.device)
        jacobian = index_grad @ inverse + torch.eye(3, dtype=torch.float64, device=u.device)
        return torch.linalg.det(jacobian)

    def fold_percent(self) -> float:
        """Share of voxels where the mapping folds (det J <= 0), in percent."""
        return float(100.0 * (self.jacobian_determinant() <= 0).double().mean())

    def max_norm(self) -> float:
        """The largest displacement length, mm."""
        return float(self.data.norm(dim=1).max())

    # ------------------------------------------------------------------ images
    def warp_image(self, moving: sitk.Image, interpolator: int = sitk.sitkLinear,
                   default: Optional[float] = None, pixel_type: Optional[int] = None) -> sitk.Image:
        """``moving`` resampled at phi(x) for every voxel x of the grid (ITK's resampler, so
        exactly what applying the written field gives). Label maps: ``sitk.sitkNearestNeighbor``."""
        if default is None:
            default = float(sitk.GetArrayViewFromImage(moving).min())
        pixel = moving.GetPixelID() if pixel_type is None else pixel_type
        return sitk.Resample(moving, self.grid.reference_image(), self.to_transform(), interpolator, default, pixel)
