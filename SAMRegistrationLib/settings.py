"""Everything that determines a registration result, with defaults chosen from measurements.

:class:`Settings` holds what every run shares (encoder and method names, device, working
spacing, affine stage, modality, cache, threads) and, nested, the chosen encoder's parameter
class (``encoder_params``, e.g. ``FusedParams``; see ``SAMRegistrationLib/encoders/``), the point-prompt parameters (:class:`PromptParams`) and the chosen
method's own parameter class (``method_params``, e.g. ``ConvexAdamParams``; see
``SAMRegistrationLib/methods/``). Every value is typed and checked where it is declared;
an unknown key or a bad value is one clear :class:`InputError` line, whether it came from
the command line, a worker job file or the Slicer panel.

As a dict (job files, ``report.json``)::

    {"encoder": "auto", "method": "pyramid", "spacing": null,
     "encoder_params": {"pca_dims": 12, ...}, "prompt_params": {"views": ["flip-cols"], ...},
     "method_params": {"lambda_reg": 0.3, "iterations": 50, ...}}

No torch here: the CLI help and the Slicer panel read these classes before torch is loaded.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

from pydantic import ConfigDict, Field, field_validator, model_validator

from .params import Parameters

#: point-prompt views the correspondences may be averaged over (``encoders.slicewise.VIEWS``
#: less the identity; a test keeps the two equal)
PROMPT_VIEWS = ("flip-cols", "flip-rows", "rot180", "zoom-out")


class PromptParams(Parameters):
    """Turning point prompts into corresponding regions (``SAMRegistrationLib/prompting``)."""
    model_config = ConfigDict(strict=True)

    views: list[Literal["flip-cols", "flip-rows", "rot180", "zoom-out"]] = Field(
        default_factory=lambda: ["flip-cols"],
        description="extra views the correspondences are averaged over ([] for none); measured: acdc067 "
                    "0.897 -> 0.903, brain 0.698 -> 0.730 with flip-cols")
    min_edge: float = Field(1.25, ge=0.0, description="a region's boundary gradient over its surroundings' "
                                                      "at least this (0 turns the check off)")
    min_contrast: float = Field(1.0, ge=0.0, description="a region's inside/outside contrast over its "
                                                         "spread at least this (0 turns the check off)")
    mutual_check: bool = Field(True, description="keep a found region only if searching back finds the clicked one")
    slice_step: Optional[int] = Field(
        None, ge=1, le=64, description="encode every k-th slice for the prompt decoder (none: the encoder's "
                                       "slice step where it encodes slices, else automatic)")
    auxiliary: bool = Field(False, description="PromptReg's auxiliary prompts where the regions disagree "
                                               "(acdc067 -0.005, brain 0: off)")

    @field_validator("views", mode="before")
    @classmethod
    def _one_view_may_be_bare(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Settings(Parameters):
    """One registration's settings (see the module docstring); ``method_params`` is validated
    against the chosen method's parameter class."""
    model_config = ConfigDict(strict=True, frozen=True, validate_assignment=False)

    encoder: str = Field("auto", description="feature encoder (samreg encoders lists them)")
    method: str = Field("pyramid", description="registration method (samreg methods lists them)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto, cpu, or cuda (falls back to the "
                                                                      "CPU with a warning)")
    checkpoint: Optional[str] = Field(None, description="SAM / MedSAM ViT checkpoint file (LiteMedSAM ships its own)")
    affine: bool = Field(True, description="built-in rigid + affine pre-alignment")
    spacing: Optional[float] = Field(None, gt=0.0, le=20.0, description="working-grid spacing in mm (none: "
                                                                       "chosen from the fixed image)")
    fixed_modality: Literal["auto", "ct", "mr"] = Field("auto", description="intensity normalisation of the fixed image")
    moving_modality: Literal["auto", "ct", "mr"] = Field("auto", description="intensity normalisation of the "
                                                                             "moving image")
    cache_dir: Optional[str] = Field(None, description="feature cache folder (none: ~/.cache/samreg/features)")
    use_cache: bool = Field(True, description="reuse cached foundation-model features")
    threads: Optional[int] = Field(None, ge=1, le=1024, description="torch threads (none: all cores)")
    encoder_params: Any = Field(None, description="the encoder's parameters (its own class)")
    prompt_params: PromptParams = Field(default_factory=PromptParams)
    method_params: Any = Field(None, description="the method's parameters (its own class)")

    @model_validator(mode="after")
    def _resolve_plugin_params(self) -> "Settings":
        from .plugins import encoder_plugin, method_plugin
        sections = {"encoder_params": encoder_plugin(self.encoder).Params,
                    "method_params": method_plugin(self.method).Params}
        for key, params_class in sections.items():
            object.__setattr__(self, key, params_class.parse(_plain(getattr(self, key)), where=key))
        return self

    # the names every caller used before the settings were nested
    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]] = None) -> "Settings":
        return cls.parse(values)

    def replaced(self, **changes: Any) -> "Settings":
        """A validated copy with ``changes``; the encoder's and method's parameters keep only the
        values that were set, so a copy with another encoder or method takes that one's defaults."""
        values = {**self.model_dump(exclude={"encoder_params", "method_params"}),
                  "encoder_params": self.encoder_params, "method_params": self.method_params, **changes}
        return type(self).parse(values)

    def with_method_params(self, **changes: Any) -> "Settings":
        """A copy whose method parameters have ``changes``."""
        return self.replaced(method_params={**self.method_params.model_dump(), **changes})


def _plain(value: Any) -> Any:
    """A parameter object given for another encoder or method is re-read as the values that
    were set on it (so switching keeps what was chosen, and a chosen value the new class lacks
    is refused clearly, while defaults of the old class are not carried over)."""
    if isinstance(value, Parameters):
        return value.model_dump(include=set(value.model_fields_set))
    return value


#: the nested parameter sections of :class:`Settings`, in the order a form shows them
PARAMETER_SECTIONS = ("encoder_params", "prompt_params", "method_params")


def parameter_sections(encoder: str, method: str) -> dict[str, "type[Parameters]"]:
    """The parameter class of each nested section for a run with ``encoder`` and ``method``:
    what a form (the Slicer panel's advanced section) or the CLI help offers for that choice.
    Unknown names are one InputError line."""
    from .plugins import encoder_plugin, method_plugin
    return {"encoder_params": encoder_plugin(encoder).Params, "prompt_params": PromptParams,
            "method_params": method_plugin(method).Params}
