"""SAMIR's model configuration, torch-free (``samreg train samir`` builds its options from it
and ``samreg methods`` lists them without importing torch)."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from ...params import Parameters

ENCODER_CHANNELS = 256      # LiteMedSAM's embedding


class SamirConfig(Parameters):
    """Architecture, features and losses of a SAMIR model (saved with its weights)."""
    model_config = ConfigDict(strict=True)

    dims: int = Field(24, ge=1, le=ENCODER_CHANNELS, description="frozen channels: principal axes of the "
                                                                 "encoder's embeddings kept")
    intensity: bool = Field(True, description="the image's intensity as one more input channel")
    head_channels: int = Field(16, ge=1, le=256, description="channels of the 3D head's output")
    width: int = Field(32, ge=1, le=256, description="channels inside each level's block")
    levels: int = Field(4, ge=1, le=6, description="pyramid levels (full resolution, 1/2, 1/4, ...)")
    correlation_radius: int = Field(1, ge=0, le=3, description="each level also sees the cosine correlation "
                                    "of fixed and warped moving features within this many voxels (0: none)")
    steps: int = Field(7, ge=0, le=12, description="scaling-and-squaring steps")
    spacing: float = Field(2.0, gt=0.0, le=10.0, description="the network's grid spacing, mm")
    canvas: int = Field(224, ge=64, le=512, multiple_of=32, description="LiteMedSAM canvas of the frozen features")
    ncc_window: int = Field(9, ge=3, le=21, description="local NCC window, voxels")
    ncc_weight: float = Field(1.0, ge=0.0, description="lambda_0 (paper: 1)")
    hfc_weight: float = Field(1.0, ge=0.0, description="lambda_1 (paper: 1)")
    dice_weight: float = Field(1.0, ge=0.0, description="lambda_2, where labels exist (paper: 1)")
    diffusion_weight: float = Field(1.0, ge=0.0, description="lambda_3 (paper: 1)")

    @property
    def in_channels(self) -> int:
        return self.dims + (1 if self.intensity else 0)
