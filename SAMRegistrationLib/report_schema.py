"""The layout of ``report.json``, as typed classes, and the one reader of its key metrics.

Every registration writes ``report.json`` (``SAMRegistrationLib/pipeline.py``); :class:`Report`
is its layout, block by block: what the run was given (:class:`Inputs`), the validated
settings, what it chose (:class:`Resolved`), seconds per stage (:class:`Timings`) and the
scores (:class:`Metrics`: the final values at the top level, the same before registration
under ``initial`` and after the affine stage alone under ``affine``). The pipeline builds its
report through these classes, so a report that does not fit them is never written.

Blocks whose content belongs to a plug-in (``settings``, ``resolved.encoder``,
``resolved.method``, the region entries) are free-form objects here and documented in
``docs/report.md``; every other block refuses unknown keys. Keys that do not apply to a run
(no label maps, no landmarks, no prompts, no affine stage) are absent, not ``null``; a metric
that could not be computed is ``null``.

The JSON Schema generated from these classes is committed at ``docs/report.schema.json``;
regenerate it after changing a class with ``python -m SAMRegistrationLib.report_schema``
(a test compares the two).

:func:`key_metrics` reads the few numbers the command line, the worker's ``done`` event and
the Slicer module show, each from one fixed place (:data:`KEY_METRIC_PATHS`).

pydantic is imported here; torch and numpy are not.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

#: the report's schema, generated from :class:`Report` (see :func:`json_schema`)
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "report.schema.json"

#: the metrics summarised by the CLI, the worker's ``done`` event and the Slicer module
KEY_METRICS = ("dice_mean", "tre_mean_mm", "fold_percent")

#: where each key metric lives in a report: ``<name>`` after registration, ``<name>_initial`` before
KEY_METRIC_PATHS: dict[str, tuple[str, ...]] = {
    **{name: ("metrics", name) for name in KEY_METRICS},
    **{f"{name}_initial": ("metrics", "initial", name) for name in KEY_METRICS},
}

B = TypeVar("B", bound="_Block")


class _Block(BaseModel):
    """A block of the report: unknown keys refused; absent keys stay absent when written."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        """The block as plain Python values, with only the keys that were set (the file's layout)."""
        return self.model_dump(mode="python", exclude_unset=True)

    @classmethod
    def from_dict(cls: type[B], values: Mapping[str, Any]) -> B:
        """Validate a parsed block (pydantic's ValidationError when it does not fit)."""
        return cls.model_validate(dict(values))


Number = Optional[float]
FreeForm = dict[str, Any]


# ----------------------------------------------------------------------------- inputs
class PromptPoint(_Block):
    """One point prompt, as the engine received it (``SAMRegistrationLib/prompts.py``)."""
    position: list[float] = Field(description="x, y, z in LPS mm, in the frame of that image's file",
                                  min_length=3, max_length=3)
    positive: bool = Field(True, description="true: on the structure; false: not on it")
    label: Optional[str] = Field(None, description="the structure's name; points sharing it belong together")


class Inputs(_Block):
    """What the run was given (the pipeline's ``RegistrationInputs``, paths as strings)."""
    fixed: str = Field(description="the fixed image file")
    moving: str = Field(description="the moving image file")
    output_dir: str = Field(description="the output folder")
    fixed_seg: Optional[str] = Field(description="the fixed label map used for scoring")
    moving_seg: Optional[str] = Field(description="the moving label map used for scoring")
    labels: Optional[list[int]] = Field(description="the labels asked for (null: all labels present were scored)")
    fixed_landmarks: Optional[str] = Field(description="the fixed landmark file used for TRE")
    moving_landmarks: Optional[str] = Field(description="the moving landmark file used for TRE")
    prompts: Optional[dict[Literal["fixed", "moving"], list[PromptPoint]]] = Field(
        description="the point prompts, LPS mm, by image")
    auto_prompts: Optional[int] = Field(description="K, when prompts were sampled automatically", ge=1)


# ----------------------------------------------------------------------------- resolved
class WorkingGrid(_Block):
    """The grid the method ran on: the fixed frame at the working spacing, cropped to its anatomy."""
    size: list[int] = Field(description="voxels along x, y, z", min_length=3, max_length=3)
    spacing: list[float] = Field(description="mm along x, y, z", min_length=3, max_length=3)


class AffineInfo(_Block):
    """The affine pre-alignment: the candidate chosen and, when the stage ran, its transform."""
    chosen: str = Field(description='"identity", "affine from identity", "affine from moments", a rigid '
                                    'fallback such as "rigid from moments", or "disabled"')
    metric: Optional[dict[str, float]] = Field(None, description="each candidate's Mattes mutual information "
                                                                  "as ITK reports it (lower is better)")
    matrix: Optional[list[float]] = Field(None, description="9 numbers, row-major", min_length=9, max_length=9)
    translation: Optional[list[float]] = Field(None, description="LPS mm", min_length=3, max_length=3)
    center: Optional[list[float]] = Field(None, description="LPS mm", min_length=3, max_length=3)


class Resolved(_Block):
    """What the run chose or found."""
    fixed_modality: Literal["ct", "mr"] = Field(description="how the fixed intensities were normalised")
    moving_modality: Literal["ct", "mr"] = Field(description="how the moving intensities were normalised")
    working_grid: WorkingGrid
    affine: AffineInfo
    encoder: FreeForm = Field(description="what the encoder did; depends on the encoder (docs/report.md)")
    regions: dict[Literal["fixed", "moving"], list[FreeForm]] = Field(
        description="with point prompts: one entry per structure and image (docs/report.md); {} without")
    auto_prompts: Optional[list[PromptPoint]] = Field(description="the automatically sampled clicks")
    method: FreeForm = Field(description="what the method chose and did; depends on the method (docs/report.md)")


# ----------------------------------------------------------------------------- timings
class Timings(_Block):
    """Seconds, rounded to milliseconds: the whole call and each stage that ran."""
    total_s: float = Field(description="the whole call")
    load_s: float = Field(description="reading and checking the inputs, intensity normalisation")
    affine_s: float = Field(description="the affine pre-alignment")
    encode_s: float = Field(description="the features of both images on the working grid")
    prompts_s: Optional[float] = Field(None, description="point prompts to regions (only with prompts)")
    optimise_s: float = Field(description="the registration method")
    write_s: float = Field(description="composing, warping, evaluation, the output files and the QC figure")

    @property
    def registration_s(self) -> float:
        """The benchmark's registration time: affine + encode + optimise."""
        return self.affine_s + self.encode_s + self.optimise_s


# ----------------------------------------------------------------------------- metrics
class StageMetrics(_Block):
    """Scores of one mapping: before registration (``initial``), after the affine stage alone
    (``affine``), or the final one (the top level of ``metrics``). Absent without the inputs
    they need; ``null`` where a value could not be computed."""
    sdlogj: Number = Field(None, description="standard deviation of the log Jacobian determinant")
    fold_percent: Number = Field(None, description="% of fixed-grid voxels with det J <= 0")
    dice: Optional[dict[str, Number]] = Field(None, description="Dice per label (with label maps)")
    dice_mean: Number = Field(None, description="mean Dice over the labels with a value (with label maps)")
    hd95: Optional[dict[str, Number]] = Field(None, description="95th-percentile Hausdorff distance per label, mm")
    hd95_mean_mm: Number = Field(None, description="mean HD95, mm")
    tre_mean_mm: Number = Field(None, description="mean target registration error, mm (with landmarks)")
    tre_sd_mm: Number = Field(None, description="its standard deviation, mm")
    tre_median_mm: Number = Field(None, description="its median, mm (final and initial only)")


class RegionQuality(_Block):
    """A prompt region against the label map of its image."""
    region: str = Field(description="the structure's label")
    label: Optional[int] = Field(description="the label it overlaps most (null: none)")
    dice: float = Field(description="their Dice")


class RegionPair(_Block):
    """A used prompt-region pair: did the registration bring the regions together? (no ground truth needed)"""
    region: str = Field(description="the structure's label")
    dice_affine: Number = Field(description="Dice of the fixed region with the moving one after the affine stage")
    dice: Number = Field(description="the same after the registration")


class Metrics(StageMetrics):
    """Accuracy and regularity of the final mapping, with the same scores before registration
    (``initial``) and after the affine stage (``affine``)."""
    sdlogj: Number = Field(description="standard deviation of the log Jacobian determinant of the whole "
                                       "mapping on the fixed grid")
    fold_percent: Number = Field(description="% of fixed-grid voxels with det J <= 0")
    regions: Optional[dict[Literal["fixed", "moving"], list[RegionQuality]]] = Field(
        None, description="with prompts and a label map of that image")
    region_pairs: Optional[list[RegionPair]] = Field(None, description="with prompts: every pair used")
    initial: StageMetrics = Field(description="before registration (identity: sdlogj and fold_percent 0)")
    affine: Optional[StageMetrics] = Field(None, description="after the affine stage alone (with label maps or "
                                                             "landmarks, when the affine stage ran)")


# ----------------------------------------------------------------------------- the report
class Report(_Block):
    """``report.json``: what was asked, what was chosen, how long it took and how good the result is."""
    model_config = ConfigDict(title="SAMRegistration report.json")

    version: str = Field(description="the engine version (samregistration package)")
    inputs: Inputs
    settings: FreeForm = Field(description="the validated settings with every default filled in; spacing is "
                                           "the working spacing used (docs/worker-protocol.md#settings)")
    resolved: Resolved
    device: str = Field(description="the torch device used: cpu, or cuda / cuda:N")
    timings: Timings
    peak_rss_mb: float = Field(description="the process's peak resident memory, MB")
    metrics: Metrics

    def key_metrics(self) -> dict[str, float]:
        """See :func:`key_metrics`."""
        return key_metrics(self)

    @classmethod
    def read(cls, path: Union[str, Path]) -> "Report":
        """Read and validate a ``report.json``."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``report.json``, generated from :class:`Report`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Report.model_json_schema()}


def schema_text() -> str:
    """:func:`json_schema` as the committed file holds it."""
    return json.dumps(json_schema(), indent=2) + "\n"


def key_metrics(report: Union[Mapping[str, Any], Report, None]) -> dict[str, float]:
    """``dice_mean``, ``tre_mean_mm``, ``fold_percent`` and their ``<name>_initial`` values of a
    report, each read from its place in the schema (:data:`KEY_METRIC_PATHS`); metrics the run
    did not compute (absent, ``null``, not a finite number) are left out. Sorted by name."""
    if isinstance(report, Report):
        report = report.to_dict()
    found: dict[str, float] = {}
    for name, path in KEY_METRIC_PATHS.items():
        value: Any = report or {}
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[name] = float(value)
    return dict(sorted(found.items()))


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m SAMRegistrationLib.report_schema [PATH]``: write the schema (default: docs/report.schema.json)."""
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0]) if argv else SCHEMA_FILE
    target.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
