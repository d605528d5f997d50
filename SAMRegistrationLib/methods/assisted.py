"""Method ``assisted``: a trained network that sees both images and a segmentation foundation
model's masks of each (after Xu et al., "Medical Image Registration Meets Vision Foundation
Model: Prototype Learning and Contour Awareness", IPMI 2025), optionally refined on the pair.

The masks are optional: the prompts' regions (LiteMedSAM's decoder from clicks or
``--auto-prompts``), segmentations the user already has (``fixed_mask``, ``moving_mask``), or
none (:mod:`SAMRegistrationLib.learned.assisted.inference` says which ``masks`` picks). Instance
optimisation then refines the field as in ``samir`` (``iterations``; 0: the network alone).

``model`` names a ``model.pt`` written by ``samreg train assisted``; by default the cardiac model
shipped in the package (:data:`SHIPPED_MODEL`, SHA-256 checked; docs/training.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from ..learned.assisted.config import AssistedConfig
from ..learned.params import LearnedParams, model_file
from ..plugins import MethodPlugin

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "learned" / "assisted" / "shipped" / "assisted-cardiac.pt"
SHIPPED_SHA256 = "df83eba472e725d0af630ff49636185433bc92cf14b8bab8cf04d2adf70aced5"


class AssistedParams(LearnedParams):
    """Inference settings of ``assisted`` (the architecture travels with the model file)."""

    masks: Literal["auto", "prompts", "files", "none"] = Field(
        "auto", description="where the masks come from: the prompts' regions, the fixed_mask/moving_mask label "
                            "maps, none, or auto (prompts, else files, else none)")
    fixed_mask: Optional[str] = Field(None, description="label map of the fixed image whose labels are masks "
                                                         "(with moving_mask)")
    moving_mask: Optional[str] = Field(None, description="label map of the moving image, same label numbers as "
                                                          "fixed_mask")
    mask_labels: Optional[list[int]] = Field(None, description="the labels of the mask files to use (none: every "
                                                               "label in both)")
    input_weight: float = Field(0.5, ge=0.0, le=100.0, description="with refine_mind: weight of the intensities "
                                "and masks against MIND-SSC in the refinement")


def _train(config):
    from ..learned.assisted.task import AssistedTask
    return AssistedTask(config)


def preflight(params: AssistedParams) -> None:
    """A missing, damaged or foreign model file, or a mask file that is missing, stops the run before any work."""
    from ..errors import InputError
    from ..learned.assisted.inference import load_model
    for name in ("fixed_mask", "moving_mask"):
        value = getattr(params, name)
        if value and not Path(value).expanduser().is_file():
            raise InputError(f"assisted: {name} not found: {value}")
    if params.masks == "files" and not (params.fixed_mask and params.moving_mask):
        raise InputError("assisted: masks=files needs both fixed_mask and moving_mask (label maps)")
    if bool(params.fixed_mask) != bool(params.moving_mask):
        raise InputError("assisted: give both fixed_mask and moving_mask, or neither")
    load_model(*model_file(params, SHIPPED_MODEL, SHIPPED_SHA256))


def run(problem, params: AssistedParams):
    from ..learned.assisted.inference import register_pair
    return register_pair(problem, params, *model_file(params, SHIPPED_MODEL, SHIPPED_SHA256))


PLUGIN = MethodPlugin(
    name="assisted",
    summary="SAM-assisted: a trained network on both images and their masks (prompts, a segmentation or none), "
            "refined on the pair",
    Params=AssistedParams,
    run=run,
    needs_weights=True,
    train=_train,
    TrainParams=AssistedConfig,
    preflight=preflight,
    own_features="litemedsam",
)
