"""SAMIR's frozen features: LiteMedSAM embeddings of each slice (the slice-wise stacks of
:mod:`...features.slicewise`, cached on disk), reduced by a *fixed* linear projection fitted
once on the training volumes and stored with the model, then sampled on the working grid.

The paper feeds the 256-channel SAM features to a trainable 3D head. Holding 256 channels per
voxel of a working grid costs ~1 KB per voxel (2 GB for a brain at 1.5 mm), so the channels are
first projected onto the training set's principal axes (``dims``, 24 by default) and scaled to
unit total variance; the projection is linear, so doing it on the embedding lattice before the
trilinear sampling gives the same features as after, at a fraction of the cost. The head then
learns on these, and the HFC loss compares them (frozen, so the loss cannot be gamed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...features.slicewise import FeatureStack, joint_pca, project
from ...grid import Grid
from ...resample import sample_tensor, transform_points


@dataclass
class FrozenProjection:
    mean: torch.Tensor          # (256,)
    basis: torch.Tensor         # (256, dims)
    scale: float                # makes the projected training tokens' total variance 1

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    def state(self) -> dict:
        return {"mean": self.mean, "basis": self.basis, "scale": torch.tensor(self.scale, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict) -> "FrozenProjection":
        return cls(state["mean"].float(), state["basis"].float(), float(state["scale"]))


def fit_projection(stacks: list[FeatureStack], dims: int) -> FrozenProjection:
    """Principal axes of the foreground tokens of every stack, and the scale to unit variance."""
    mean, basis = joint_pca(stacks, dims)
    variance, count = 0.0, 0
    for stack in stacks:
        tokens = project(stack, mean, basis)[0].flatten(1)[:, stack.valid.flatten()]
        variance += float(tokens.var(1).sum()) * tokens.shape[1]
        count += tokens.shape[1]
    return FrozenProjection(mean, basis, (count / max(variance, 1e-12)) ** 0.5)


def frozen_on_grid(stack: FeatureStack, projection: FrozenProjection, grid: Grid, affine=None) -> torch.Tensor:
    """(dims, D, H, W) features of ``stack`` at the voxels of ``grid`` (through ``affine``, the
    fixed -> moving transform, for a moving image); zero where the stack holds no anatomy."""
    points = grid.world_points()
    if affine is not None:
        points = transform_points(points.to(torch.float64), affine).to(torch.float32)
    projected = project(stack, projection.mean, projection.basis) * projection.scale
    features = sample_tensor(projected, stack.grid, points)[0]
    valid = sample_tensor(stack.valid[None, None].float(), stack.grid, points)[0]
    return features * valid


def litemedsam_encoder(canvas: int, run_settings=None):
    """The slice-wise LiteMedSAM encoder of the frozen features, its stacks cached as for
    registration (in ``run_settings``' cache folder, on its device, where a run's settings are given)."""
    from ...encoders.litemedsam import PLUGIN as litemedsam
    from ...features.slicewise import SliceWiseEncoder
    from ...settings import Settings
    shared = {} if run_settings is None else {k: getattr(run_settings, k) for k in ("cache_dir", "device")}
    settings = Settings(encoder="litemedsam", encoder_params={"canvas": canvas}, **shared)
    return SliceWiseEncoder("litemedsam", settings, litemedsam.slice_model)
