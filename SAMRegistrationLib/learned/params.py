"""Parameters shared by the learned methods (torch-free: plug-in modules import them), and how a
method finds its model file: the one given, or the one shipped in the package."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import ConfigDict, Field

from ..params import Parameters


class LearnedParams(Parameters):
    """The model file and the instance optimisation that refines the network's field on the pair
    (:mod:`.refinement`)."""
    model_config = ConfigDict(strict=True)

    model: Optional[str] = Field(None, description="model.pt from 'samreg train METHOD' (none: the method's "
                                                   "shipped model)")
    model_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$", description="expected SHA-256 of "
                                        "the model file (none: the shipped model's own, or model.sha256 beside "
                                        "a model given)")
    iterations: int = Field(60, ge=0, le=100000, description="instance-optimisation iterations on the pair "
                                                             "(0: the network's field alone)")
    refine_spacing: float = Field(2.0, gt=0.0, le=10.0, description="grid spacing of the instance "
                                                                   "optimisation, mm (never finer than the working grid)")
    refine_mind: bool = Field(True, description="refine on MIND-SSC descriptors too, beside the network's inputs")
    lambda_reg: float = Field(0.3, ge=0.0, le=100.0, description="diffusion regularisation of the refinement")
    learning_rate: float = Field(1.0, gt=0.0, le=100.0, description="Adam learning rate of the refinement")
    repair_folds: bool = Field(True, description="locally smooth away any det J <= 0 after refining")


def model_file(params: LearnedParams, shipped: Path, shipped_sha256: str) -> tuple[Path, Optional[str]]:
    """The model file to use and the SHA-256 it must have (None: its model.sha256)."""
    if params.model:
        return Path(params.model).expanduser(), params.model_sha256
    return shipped, params.model_sha256 or shipped_sha256
