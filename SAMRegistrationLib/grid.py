"""Sampling grids in physical space.

A :class:`Grid` owns size, spacing, origin and direction of a regular 3D lattice and
converts between the three coordinate systems method code needs:

* index  -- continuous voxel index (i, j, k), ITK order (x fastest);
* world  -- ITK physical coordinates, LPS millimetres;
* normalised -- torch ``grid_sample`` coordinates in [-1, 1] with ``align_corners=True``.

Tensors follow torch's (D, H, W) = (k, j, i) layout, so a SimpleITK array (z, y, x) is a
tensor without transposition. Vectors (points, displacements) are always (x, y, z) ordered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch


@dataclass(frozen=True)
class Grid:
    size: Tuple[int, int, int]             # (nx, ny, nz)
    spacing: Tuple[float, float, float]    # mm
    origin: Tuple[float, float, float]     # world position of voxel (0, 0, 0), LPS mm
    direction: Tuple[float, ...]           # 3x3 row-major, columns are the index axes in world

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_image(cls, image: sitk.Image) -> "Grid":
        if image.GetDimension() != 3:
            raise ValueError("Grid needs a 3D image")
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    def with_spacing(self, spacing: float | Sequence[float]) -> "Grid":
        """Same frame and physical extent (voxel edges to voxel edges), new spacing."""
        new = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
        old = np.asarray(self.spacing)
        extent = old * np.asarray(self.size)
        size = np.maximum(1, np.round(extent / new)).astype(int)
        # keep the centre of the lattice where it was
        centre_index_old = (np.asarray(self.size) - 1) / 2.0
        centre_world = self.index_to_world(centre_index_old)
        origin = centre_world - self.direction_matrix @ (new * (size - 1) / 2.0)
        return Grid(tuple(int(s) for s in size), tuple(float(s) for s in new),
                    tuple(float(o) for o in origin), self.direction)

    def cropped(self, lo: Sequence[int], hi: Sequence[int]) -> "Grid":
        """Sub-grid of index range [lo, hi) per axis (x, y, z)."""
        lo_a, hi_a = np.asarray(lo, int), np.asarray(hi, int)
        origin = self.index_to_world(lo_a.astype(float))
        return Grid(tuple(int(v) for v in hi_a - lo_a), self.spacing, tuple(float(o) for o in origin), self.direction)

    def downsampled(self, factor: int) -> "Grid":
        """Grid of ``avg_pool3d(kernel=factor, stride=factor)`` cells (floor of size / factor)."""
        size = np.maximum(1, np.asarray(self.size) // factor)
        spacing = np.asarray(self.spacing) * factor
        # the centre of cell 0 is the mean of voxels 0..factor-1
        origin = self.index_to_world(np.full(3, (factor - 1) / 2.0))
        return Grid(tuple(int(s) for s in size), tuple(float(s) for s in spacing),
                    tuple(float(o) for o in origin), self.direction)

    def pyramid(self, factors: Sequence[int]) -> list["Grid"]:
        """Levels for multi-level methods, in the order given (e.g. ``(4, 2, 1)``, coarse to
        fine): :meth:`downsampled` by each factor, and this grid itself for 1."""
        levels = []
        for factor in factors:
            if int(factor) != factor or factor < 1:
                raise ValueError(f"pyramid factors are whole numbers >= 1, got {factor!r}")
            levels.append(self if factor == 1 else self.downsampled(int(factor)))
        return levels

    # ----------------------------------------------------------------- properties
    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def matrix(self) -> np.ndarray:
        """index -> world linear part: direction @ diag(spacing)."""
        return self.direction_matrix * np.asarray(self.spacing)[None, :]

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Tensor shape (D, H, W) = (nz, ny, nx)."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    # ----------------------------------------------------------------- conversions (numpy)
    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=float)
        return index @ self.matrix.T + np.asarray(self.origin)

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=float)
        return (points - np.asarray(self.origin)) @ np.linalg.inv(self.matrix).T

    def world_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box of the voxel centres' corner points."""
        corners = np.array([[i, j, k] for i in (0, self.size[0] - 1) for j in (0, self.size[1] - 1)
                            for k in (0, self.size[2] - 1)], dtype=float)
        world = self.index_to_world(corners)
        return world.min(0), world.max(0)

    # ----------------------------------------------------------------- conversions (torch)
    def index_to_normalised_scale(self) -> np.ndarray:
        """Per-axis factor turning an index offset into a normalised offset (align_corners=True)."""
        n = np.asarray(self.size, dtype=float)
        return np.where(n > 1, 2.0 / np.maximum(n - 1, 1), 0.0)

    def world_to_normalised(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) world points -> (..., 3) normalised (x, y, z) for ``grid_sample``."""
        inv = torch.as_tensor(np.linalg.inv(self.matrix), dtype=points.dtype, device=points.device)
        origin = torch.as_tensor(self.origin, dtype=points.dtype, device=points.device)
        index = (points - origin) @ inv.T
        scale = torch.as_tensor(self.index_to_normalised_scale(), dtype=points.dtype, device=points.device)
        return index * scale - (scale > 0).to(points.dtype)

    def world_points(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
        """World coordinates of every voxel centre, shape (D, H, W, 3)."""
        axes = [torch.arange(n, dtype=torch.float64, device=device) for n in self.size]
        k, j, i = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        index = torch.stack([i, j, k], dim=-1)
        matrix = torch.as_tensor(self.matrix, dtype=torch.float64, device=device)
        origin = torch.as_tensor(self.origin, dtype=torch.float64, device=device)
        return (index @ matrix.T + origin).to(dtype)

    # ----------------------------------------------------------------- SimpleITK
    def reference_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        image = sitk.Image(list(self.size), pixel_type)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array: np.ndarray, is_vector: bool = False) -> sitk.Image:
        image = sitk.GetImageFromArray(array, isVector=is_vector)
        return self.apply_to(image)
