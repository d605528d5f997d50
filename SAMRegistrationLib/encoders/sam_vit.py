"""The SAM and MedSAM ViT image encoders; each needs its checkpoint file (``--checkpoint`` or the
checkpoint folder), which is verified and never downloaded."""
from __future__ import annotations

from functools import partial

from .slicewise import slicewise_plugin


def load_model(name: str, settings):
    from ..features.sam_vit import load_sam_encoder
    return load_sam_encoder(name, settings)


def _plugin(name: str, title: str):
    return slicewise_plugin(name=name, summary=f"{title} image encoder, slice by slice (checkpoint needed)",
                            load_model=partial(load_model, name), needs_checkpoint=True)


# each name spelt out as name="...": the GUI reads them from this file before pydantic is installed
PLUGINS = (_plugin(name="sam-vit-b", title="SAM ViT-B"), _plugin(name="sam-vit-l", title="SAM ViT-L"),
           _plugin(name="sam-vit-h", title="SAM ViT-H"), _plugin(name="medsam-vit-b", title="MedSAM ViT-B"))
