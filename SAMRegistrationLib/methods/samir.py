"""Method ``samir``: a trained network on frozen LiteMedSAM features (after "SAMIR, your 3D
Segment Anything Model for medical image registration"), optionally refined on the pair.

The network (:mod:`SAMRegistrationLib.learned.samir`) runs on its own grid: the working grid's
frame at the spacing the model was trained at. Its frozen features come from LiteMedSAM's
slice-wise stacks of each image resampled onto that grid (through the affine for the moving
image), exactly as in training, whatever ``--encoder`` says: the model was trained on them.
Instance optimisation then refines the network's field on the pair (``iterations``; 0 gives
the network alone) on a grid of ``refine_spacing``, with the frozen features and intensities
and diffusion regularisation, and folds are repaired as in ``convexadam``.

``model`` names a ``model.pt`` written by ``samreg train samir``; by default the model shipped
in the package (:data:`SHIPPED_MODEL`, SHA-256 checked; see docs/methods.md for its training).
"""
from __future__ import annotations

from pathlib import Path
from pydantic import Field

from ..learned.samir.config import SamirConfig
from ..learned.params import LearnedParams, model_file
from ..plugins import MethodPlugin

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "learned" / "samir" / "shipped" / "samir-shared.pt"
SHIPPED_SHA256 = "012b107a45c1d8c7cb89c32414cfad0a4517825ecb4164ec1fe6d9ffd9c744cf"


class SamirParams(LearnedParams):
    """Inference settings of ``samir`` (the architecture travels with the model file)."""

    frozen_weight: float = Field(0.5, ge=0.0, le=100.0, description="with refine_mind: weight of the frozen "
                                 "features and intensity against MIND-SSC in the refinement")


def _train(config):
    from ..learned.samir.task import SamirTask
    return SamirTask(config)


def preflight(params: SamirParams) -> None:
    """A missing, damaged or foreign model file stops the run before any work."""
    from ..learned.samir.inference import load_model
    load_model(*model_file(params, SHIPPED_MODEL, SHIPPED_SHA256))


def run(problem, params: SamirParams):
    from ..learned.samir.inference import register_pair
    return register_pair(problem, params, *model_file(params, SHIPPED_MODEL, SHIPPED_SHA256))


PLUGIN = MethodPlugin(
    name="samir",
    summary="SAMIR: a trained network on frozen LiteMedSAM features, refined on the pair by instance optimisation",
    Params=SamirParams,
    run=run,
    needs_weights=True,
    train=_train,
    TrainParams=SamirConfig,
    preflight=preflight,
    own_features="litemedsam",
)
