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
from typing import Optional

from pydantic import ConfigDict, Field

from ..learned.samir.config import SamirConfig
from ..params import Parameters
from ..plugins import MethodPlugin

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "learned" / "samir" / "shipped" / "samir-shared.pt"
SHIPPED_SHA256 = "012b107a45c1d8c7cb89c32414cfad0a4517825ecb4164ec1fe6d9ffd9c744cf"


class SamirParams(Parameters):
    """Inference settings of ``samir`` (the architecture travels with the model file)."""
    model_config = ConfigDict(strict=True)

    model: Optional[str] = Field(None, description="model.pt from 'samreg train samir' (none: the shipped model)")
    model_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$", description="expected SHA-256 of "
                                        "the model file (none: the shipped model's own, or model.sha256 beside "
                                        "a model given)")
    iterations: int = Field(60, ge=0, le=100000, description="instance-optimisation iterations on the pair "
                                                             "(0: the network's field alone)")
    refine_spacing: float = Field(2.0, gt=0.0, le=10.0, description="grid spacing of the instance "
                                                                   "optimisation, mm (never finer than the working grid)")
    refine_mind: bool = Field(True, description="refine on MIND-SSC descriptors too, beside the frozen features "
                                                "and intensities")
    frozen_weight: float = Field(0.5, ge=0.0, le=100.0, description="with refine_mind: weight of the frozen "
                                 "features and intensity against MIND-SSC in the refinement")
    lambda_reg: float = Field(0.3, ge=0.0, le=100.0, description="diffusion regularisation of the refinement")
    learning_rate: float = Field(1.0, gt=0.0, le=100.0, description="Adam learning rate of the refinement")
    repair_folds: bool = Field(True, description="locally smooth away any det J <= 0 after refining")


def _train(config):
    from ..learned.samir.task import SamirTask
    return SamirTask(config)


def model_file(params: SamirParams) -> tuple[Path, Optional[str]]:
    """The model file to use and the SHA-256 it must have (None: its model.sha256)."""
    if params.model:
        return Path(params.model).expanduser(), params.model_sha256
    return SHIPPED_MODEL, params.model_sha256 or SHIPPED_SHA256


def preflight(params: SamirParams) -> None:
    """A missing, damaged or foreign model file stops the run before any work."""
    from ..learned.samir.inference import load_model
    load_model(*model_file(params))


def run(problem, params: SamirParams):
    from ..learned.samir.inference import register_pair
    return register_pair(problem, params, *model_file(params))


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
