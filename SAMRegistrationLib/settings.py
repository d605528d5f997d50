"""Everything that determines a registration result, with defaults chosen from measurements."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import InputError


@dataclass
class Settings:
    # what to run
    encoder: str = "auto"                # LiteMedSAM fused with MIND-SSC, MIND alone across contrasts (README)
    method: str = "convexadam"
    device: str = "auto"                 # auto | cpu | cuda
    checkpoint: Optional[str] = None     # SAM ViT checkpoints (litemedsam ships its own)
    affine: bool = True                  # built-in affine pre-alignment
    # working grid and intensities
    spacing: Optional[float] = None      # working-grid spacing in mm; None = finest within a voxel budget
    fixed_modality: str = "auto"         # auto | ct | mr
    moving_modality: str = "auto"
    # features
    slice_axis: str = "auto"             # auto | x | y | z (world axis of the fixed frame)
    slice_step: Optional[int] = None     # encode every k-th slice (None: about every 4 mm, <= 48 slices)
    pca_dims: int = 12
    mind_weight: float = 3.0             # weight of MIND channels in fused encoders (lung 1.35 vs 1.37 mm at 2)
    fusion_dims: int = 16                # joint PCA of fused channels (0: keep all)
    cache_dir: Optional[str] = None      # feature cache; None = ~/.cache/samreg/features
    use_cache: bool = True
    # convexadam optimiser (units: working-grid voxels unless stated)
    grid_sp: int = 3                     # convex-stage grid, in working voxels
    disp_hw: int = 4                     # convex search half-width, in convex-grid voxels
    grid_sp_adam: Optional[int] = None   # Adam field grid in working voxels; None = nearest 2 mm (>= 2 above a budget)
    lambda_reg: float = 0.3              # diffusion regularisation weight (at 1.5 mm; scaled on finer grids)
    iterations: int = 50
    learning_rate: float = 1.0
    ic_iterations: int = 15
    repair_folds: bool = True            # locally smooth away any det J <= 0 after optimising
    threads: Optional[int] = None        # torch threads; None = all cores
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Settings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**values)
