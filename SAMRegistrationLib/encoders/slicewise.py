"""Parameters shared by the slice-wise foundation-model encoders (``litemedsam``, the SAM ViTs):
each volume is encoded slice by slice, the embeddings reduced by a joint PCA."""
from __future__ import annotations

from typing import Callable, Literal, Optional

from pydantic import ConfigDict, Field

from ..params import Parameters
from ..plugins import EncoderPlugin


class SliceParams(Parameters):
    """Slice-wise encoding of a volume with a 2D foundation model."""
    model_config = ConfigDict(strict=True)

    slice_axis: Literal["auto", "x", "y", "z"] = Field(
        "auto", description="slice direction for 2D encoders (auto: the coarsest axis; if isotropic the one "
                            "with fewest slices)")
    slice_step: Optional[int] = Field(
        None, ge=1, le=64, description="encode every k-th slice and interpolate between "
                                       "(none: slices about 4 mm apart, at most 48 per volume)")
    pca_dims: int = Field(12, ge=1, le=256, description="joint PCA dimensions of foundation features")


def slicewise_plugin(name: str, summary: str, load_model: Callable, needs_checkpoint: bool = False,
                     Params: type[SliceParams] = SliceParams) -> EncoderPlugin:
    """An encoder that runs the 2D model ``load_model(settings)`` over each volume's slices."""
    def build(settings):
        from ..features.slicewise import SliceWiseEncoder
        return SliceWiseEncoder(name, settings, load_model)
    return EncoderPlugin(name=name, summary=summary, Params=Params, build=build,
                         needs_checkpoint=needs_checkpoint, slice_model=load_model,
                         channels=lambda params: params.pca_dims)
