"""The ``assisted`` model's configuration, torch-free (``samreg train assisted`` builds its options
from it and ``samreg methods`` lists them without importing torch). Saved with the weights."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from ...params import Parameters


class AssistedConfig(Parameters):
    """Architecture, losses and training masks of an ``assisted`` model."""
    model_config = ConfigDict(strict=True)

    mask_channels: int = Field(4, ge=1, le=16, description="mask input channels: structure i of a pair goes to "
                               "channel i mod this (training assigns structures to channels at random, so a "
                               "channel means 'the same structure in both images', not an organ)")
    width: int = Field(8, ge=1, le=128, description="channels of the finest encoder level (doubling per level, "
                                                    "at most 4x)")
    levels: int = Field(4, ge=2, le=6, description="pyramid levels (full resolution, 1/2, 1/4, ...)")
    attention_radius: int = Field(1, ge=0, le=3, description="cross- and fusion-attention over each voxel's "
                                  "(2r+1)^3 neighbourhood, at every level but the finest (0: convolutions only)")
    heads: int = Field(2, ge=1, le=8, description="attention heads")
    correlation_radius: int = Field(1, ge=0, le=3, description="each level also sees the cosine correlation of "
                                    "fixed and warped moving image features within this many voxels")
    spacing: float = Field(2.5, gt=0.0, le=10.0, description="the network's grid spacing, mm")
    ncc_window: int = Field(9, ge=3, le=21, description="local NCC window, voxels")
    ncc_weight: float = Field(1.0, ge=0.0, description="w1, local NCC (paper: 1)")
    diffusion_weight: float = Field(4.0, ge=0.0, description="w2, diffusion of the field (paper: 4)")
    dice_weight: float = Field(1.0, ge=0.0, description="w3, Dice of the warped masks (paper: 1)")
    prototype_weight: float = Field(0.1, ge=0.0, description="w4, prototype contrast + alignment (paper: 1; at 1 "
                                    "the network did not leave the identity in 300 CPU steps)")
    contour_weight: float = Field(0.01, ge=0.0, description="w5, contour Chamfer in squared network voxels (paper: "
                                  "0.1, in units it does not state)")
    prototype_level: int = Field(1, ge=0, le=5, description="encoder level whose features the prototype loss "
                                 "shapes (0: full resolution)")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="prototype contrast: cosine / this (paper: 1)")
    contour_points: int = Field(256, ge=8, le=4096, description="contour points per structure and image")
    mask_error_voxels: float = Field(1.5, ge=0.0, le=8.0, description="training masks: largest smooth "
                                     "boundary shift of a label's mask, training-grid voxels (0: the labels)")
    mask_keep: float = Field(0.8, ge=0.0, le=1.0, description="training masks: chance that a labelled structure "
                              "is given as a mask")
    mask_none: float = Field(0.2, ge=0.0, le=1.0, description="training masks: chance that a pair is given no "
                              "mask at all (masks are optional at inference)")
