"""``litemedsam+mind``: LiteMedSAM and MIND-SSC features concatenated at set weights, then
reduced by a joint PCA."""
from __future__ import annotations

from pydantic import Field

from ..plugins import EncoderPlugin
from .mind import MindParams
from .litemedsam import LiteMedSAMParams


class FusedParams(MindParams, LiteMedSAMParams):
    """A foundation encoder fused with MIND-SSC (the parameters of both, and of the fusion)."""

    mind_weight: float = Field(3.0, ge=0.0, le=100.0,
                               description="weight of the MIND channels in fused encoders (lung 1.35 vs 1.37 mm at 2)")
    fusion_dims: int = Field(16, ge=0, le=512, description="joint PCA of fused channels (0: keep all)")


def channels(params: FusedParams) -> int:
    """Feature channels: the fusion's PCA, or the foundation PCA plus MIND's 12 without one."""
    return params.fusion_dims or params.pca_dims + 12


def build(settings):
    from ..features.fusion import make_litemedsam_mind
    return make_litemedsam_mind(settings)


PLUGIN = EncoderPlugin(name="litemedsam+mind", summary="LiteMedSAM fused with MIND-SSC (same-contrast pairs)",
                       Params=FusedParams, build=build, channels=channels)
