"""The trainer's settings, declared once: ``samreg train`` makes one option per field.

Torch-free (the CLI's parser is built from it). :class:`SamplingConfig` is what the pair
sampler reads (training grid, synthetic deformations and intensity changes, which sources are
drawn how often); :class:`TrainConfig` adds the optimisation and the run's cadence.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from ..params import Parameters

#: TrainConfig fields that may change between a run and its resumption: they change neither
#: the sample sequence nor the arithmetic of a step (validation leaves every RNG as it was)
RESUMABLE_CHANGES = frozenset({"steps", "device", "threads", "val_every", "checkpoint_every",
                               "keep_checkpoints", "feature_cache"})


class SamplingConfig(Parameters):
    """How training pairs are made (see :class:`~.pairs.PairSampler`)."""

    grid_size: list[int] = Field([96, 96, 96], description="training grid in voxels, x,y,z: every volume is "
                                 "resampled once onto a grid this size, centred on it, in its own axes")
    grid_spacing: Optional[float] = Field(None, gt=0.0, le=100.0, description="training grid spacing in mm, "
                                          "isotropic (none: the smallest that holds the whole volume)")
    deform_voxels: float = Field(4.0, ge=0.0, le=64.0, description="largest velocity of a synthetic "
                                 "deformation, in training-grid voxels (each draw takes 0..this)")
    deform_smoothness: float = Field(12.0, ge=2.0, le=256.0, description="control-point spacing of the "
                                     "random velocity field, in training-grid voxels")
    integration_steps: int = Field(7, ge=0, le=16, description="scaling-and-squaring steps")
    gamma: float = Field(0.3, ge=0.0, le=2.0, description="random gamma exp(g), g drawn in -this..this")
    bias: float = Field(0.3, ge=0.0, le=2.0, description="smooth multiplicative bias exp(b), |b| up to this")
    noise: float = Field(0.03, ge=0.0, le=0.5, description="Gaussian noise, std drawn in 0..this")
    blur: float = Field(1.0, ge=0.0, le=8.0, description="SynthMorph images: Gaussian blur, sigma drawn in "
                        "0..this voxels")
    pair_weight: float = Field(1.0, ge=0.0, le=1000.0, description="how often real pairs are drawn, "
                               "relative to the other kinds present")
    volume_weight: float = Field(1.0, ge=0.0, le=1000.0, description="how often synthetic pairs from "
                                 "single volumes are drawn")
    label_map_weight: float = Field(1.0, ge=0.0, le=1000.0, description="how often SynthMorph pairs from "
                                    "label maps are drawn")
    augment_pairs: bool = Field(False, description="apply the intensity changes to real pairs too")
    deformed_copies: int = Field(0, ge=0, le=64, description="synthetic pairs from single volumes: both "
                                 "images drawn from this many deformed copies of each volume (and the volume "
                                 "itself), each made and encoded once; 0: a new deformation at every draw")
    reencode_features: bool = Field(False, description="synthetic pairs: encode the warped moving image "
                                    "instead of warping the fixed image's cached features")
    feature_cache: Optional[str] = Field(None, description="folder of the training feature cache (none: "
                                         "$SAMREG_CACHE/training-features or ~/.cache/samreg/training-features)")

    @field_validator("grid_size")
    @classmethod
    def _three_sizes(cls, value: list[int]) -> list[int]:
        if len(value) != 3 or any(v < 4 or v > 1024 for v in value):
            raise ValueError("needs three sizes x,y,z, each 4..1024")
        return value


class TrainConfig(SamplingConfig):
    """Optimisation and cadence of a training run."""

    steps: int = Field(1000, ge=1, le=100_000_000, description="optimiser steps in all")
    batch: int = Field(1, ge=1, le=4096, description="pairs per step and process (gradients accumulated; "
                       "with DDP a step sees processes x batch pairs)")
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Adam weight decay")
    clip_grad_norm: Optional[float] = Field(None, gt=0.0, le=1e6, description="scale the gradients down to this "
                                            "total norm before each step, against divergence (none: no clipping)")
    val_every: int = Field(100, ge=1, le=100_000_000, description="validate every N steps (and at the end)")
    checkpoint_every: int = Field(500, ge=1, le=100_000_000, description="checkpoint every N steps "
                                  "(and at the end)")
    keep_checkpoints: Optional[int] = Field(None, ge=1, le=100_000, description="keep only the newest N "
                                            "step-*.pt (none: keep all)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the model's initialisation and of every "
                      "sample")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="compute device (cuda without a GPU: "
                                                   "the CPU)")
    threads: Optional[int] = Field(None, ge=1, le=1024, description="torch CPU threads per process (none: "
                                   "the cores divided among the local processes)")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig.parse({k: getattr(self, k) for k in SamplingConfig.model_fields})
