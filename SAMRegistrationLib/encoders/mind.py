"""``mind``: MIND-SSC self-similarity features (Heinrich et al.), contrast-independent, no model."""
from __future__ import annotations

from typing import Optional

from pydantic import ConfigDict, Field

from ..params import Parameters
from ..plugins import EncoderPlugin


class MindParams(Parameters):
    """MIND-SSC: a patch's distances to its six-neighbourhood pairs, normalised."""
    model_config = ConfigDict(strict=True)

    mind_radius: int = Field(1, ge=1, le=3, description="MIND-SSC patch radius, voxels of its grid")
    mind_dilation: int = Field(2, ge=1, le=4, description="MIND-SSC neighbour distance, voxels of its grid")
    mind_oversample: Optional[int] = Field(
        None, ge=1, le=4, description="MIND-SSC on a grid this many times finer than the working grid "
                                      "(none: 2 while that grid stays within 16 M voxels, else 1)")


def build(settings):
    from ..features.mind import MindEncoder
    return MindEncoder(settings)


PLUGIN = EncoderPlugin(name="mind", summary="MIND-SSC self-similarity (12 channels; any contrast, no model)",
                       Params=MindParams, build=build, channels=lambda params: 12)
