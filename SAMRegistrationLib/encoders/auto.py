"""``auto`` (the default): ``litemedsam+mind`` where the two images share a contrast, ``mind``
where they do not (decided from their intensity correlation after the affine)."""
from __future__ import annotations

from ..plugins import EncoderPlugin
from .fused import FusedParams, channels


def build(settings):
    from ..features.auto import AutoEncoder
    return AutoEncoder(settings)


PLUGIN = EncoderPlugin(name="auto", summary="litemedsam+mind for same-contrast pairs, mind otherwise (default)",
                       Params=FusedParams, build=build, channels=channels)
