"""The stages of a registration, one function each; ``pipeline.register`` calls them in order.

load (:func:`load_stage`) -> affine (:func:`affine_stage`) -> working grid
(:func:`plan_working_grid`) -> encode (:func:`encode_stage`) -> prompts (:func:`choose_prompts`,
:func:`prompt_stage`) -> optimise (:func:`optimise_stage`) -> compose (:func:`compose_stage`) ->
evaluate (:func:`evaluate_stage`, through :mod:`~SAMRegistrationLib.evaluation`) -> write
(:func:`write_stage`) -> report (:func:`build_report`) -> publish (:func:`publish`). Compose,
evaluate, write and publish report progress as the ``write`` stage, as they always have.

Stages hand each other small dataclasses (:class:`LoadedInputs`, :class:`Alignment`,
:class:`Features`, :class:`Prompting`, :class:`Composed`) rather than a dozen loose variables. Each stage reports
its own progress under its stage name (every report is a cancellation point); timing and the
output ledger stay with the caller. Nothing here names a method or an encoder: both come from
the settings through the plug-in registries.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import psutil
import SimpleITK as sitk
import torch

from .affine import affine_prealign, identity_affine
from .errors import InputError, ResourceError
from .evaluation import Evaluation, GroundTruth, evaluate
from .fields import displacement_image, displacement_transform, total_displacement
from .grid import Grid
from .io_atomic import write_image_atomic, write_json_atomic
from .output_guard import COMPLETE_MARKER
from .ownership import OutputLedger
from .plugins import encoder_plugin
from .problem import Problem
from .progress import Reporter
from .report_schema import Inputs, Metrics, Report, Resolved, Timings
from .input_checks import check_label_map, check_labels_present, check_overlap, check_points_inside
from .volume import check_values, foreground_mask, normalise_intensity, read_volume

if TYPE_CHECKING:
    from .pipeline import RegistrationInputs
    from .settings import Settings


# --------------------------------------------------------------------------- what stages pass on
@dataclass
class LoadedInputs:
    """The checked inputs: images as read, normalised to [0, 1], and the optional ground truth."""
    fixed: sitk.Image
    moving: sitk.Image
    fixed01: sitk.Image
    moving01: sitk.Image
    fixed_modality: str                          # "ct" or "mr"
    moving_modality: str
    fixed_seg: Optional[sitk.Image] = None
    moving_seg: Optional[sitk.Image] = None
    fixed_points: Optional[np.ndarray] = None    # (N, 3) LPS mm
    moving_points: Optional[np.ndarray] = None


@dataclass
class Alignment:
    """The affine pre-alignment (the identity when the stage is off) and what it chose."""
    transform: sitk.Transform
    info: dict
    ran: bool

    @property
    def scored(self) -> Optional[sitk.Transform]:
        """The transform the ``affine`` metrics are taken through; None when the stage was off."""
        return self.transform if self.ran else None


class Features:
    """The encoder's features of both images on the working grid, handed over once."""

    def __init__(self, fixed: Optional[torch.Tensor], moving: Optional[torch.Tensor], info: dict) -> None:
        self._pair: Optional[list[Optional[torch.Tensor]]] = [fixed, moving]
        self.info = info

    def take(self) -> list[torch.Tensor]:
        """[fixed, moving]; afterwards this object holds no reference (the caller frees them)."""
        if self._pair is None:
            raise RuntimeError("the features were taken already")
        pair, self._pair = self._pair, None
        return pair


@dataclass
class Prompting:
    """The point prompts the run uses (given and sampled), and the regions found from them."""
    points: Optional[dict] = None                # {"fixed": [...], "moving": [...]}, LPS mm
    sampled: Optional[list] = None               # automatically sampled clicks (moving image)
    regions: Optional[dict] = None               # {"fixed": (labels, infos), "moving": (...)}


# --------------------------------------------------------------------------- load
def load_stage(inputs: "RegistrationInputs", settings: "Settings", reporter: Reporter) -> LoadedInputs:
    """Read and check the images, the prompts, the label maps and the landmarks; normalise intensities."""
    from .landmarks import check_pairs, read_points
    from .prompt_files import check_prompts

    reporter("load", 0.0, "reading images")
    fixed = read_volume(inputs.fixed, "fixed image")
    check_values(fixed, "fixed image", inputs.fixed)
    moving = read_volume(inputs.moving, "moving image")
    check_values(moving, "moving image", inputs.moving)
    check_overlap(fixed, moving, inputs.fixed, inputs.moving)
    if inputs.prompts:
        check_prompts(inputs.prompts, fixed, moving)
    fixed_seg, moving_seg = _read_segmentations(inputs, fixed)
    fixed_points = moving_points = None
    if inputs.fixed_landmarks or inputs.moving_landmarks:
        if not (inputs.fixed_landmarks and inputs.moving_landmarks):
            raise InputError("TRE needs both --fixed-landmarks and --moving-landmarks")
        fixed_points = read_points(inputs.fixed_landmarks, fixed)
        moving_points = read_points(inputs.moving_landmarks, moving)
        check_pairs(fixed_points, moving_points)
        check_points_inside(np.asarray(fixed_points, float), fixed, "fixed landmarks", inputs.fixed_landmarks)
        check_points_inside(np.asarray(moving_points, float), moving, "moving landmarks", inputs.moving_landmarks)
    fixed01, fixed_modality = normalise_intensity(fixed, settings.fixed_modality)
    moving01, moving_modality = normalise_intensity(moving, settings.moving_modality)
    reporter("load", 1.0, f"fixed {fixed_modality.upper()} {fixed.GetSize()}, "
                          f"moving {moving_modality.upper()} {moving.GetSize()}")
    return LoadedInputs(fixed, moving, fixed01, moving01, fixed_modality, moving_modality,
                        fixed_seg, moving_seg, fixed_points, moving_points)


def _read_segmentations(inputs: "RegistrationInputs",
                        fixed: sitk.Image) -> tuple[Optional[sitk.Image], Optional[sitk.Image]]:
    """Both label maps or neither; the fixed one on the fixed image's grid (Dice is counted
    there), the moving one on any grid (it is resampled in physical space); whole labels >= 0."""
    if not (inputs.fixed_seg or inputs.moving_seg):
        return None, None
    if not (inputs.fixed_seg and inputs.moving_seg):
        raise InputError("scoring needs both --fixed-seg and --moving-seg")
    fixed_seg = read_volume(inputs.fixed_seg, "fixed segmentation", sitk.sitkFloat64)
    moving_seg = read_volume(inputs.moving_seg, "moving segmentation", sitk.sitkFloat64)
    fixed_seg = check_label_map(fixed_seg, "fixed segmentation", inputs.fixed_seg, fixed, "fixed image")
    moving_seg = check_label_map(moving_seg, "moving segmentation", inputs.moving_seg)
    check_labels_present(inputs.labels, fixed_seg, moving_seg, inputs.fixed_seg, inputs.moving_seg)
    return fixed_seg, moving_seg


# --------------------------------------------------------------------------- affine
def affine_stage(loaded: LoadedInputs, settings: "Settings", reporter: Reporter) -> Alignment:
    """The affine pre-alignment of the normalised images, or the identity when it is off."""
    if settings.affine:
        transform, info = affine_prealign(loaded.fixed01, loaded.moving01, lambda f, m: reporter("affine", f, m))
        return Alignment(transform, info, ran=True)
    reporter("affine", 1.0, "affine pre-alignment disabled")
    return Alignment(identity_affine(), {"chosen": "disabled"}, ran=False)


# --------------------------------------------------------------------------- working grid
def working_grid(fixed01: sitk.Image, spacing: float, margin_mm: float = 8.0) -> Grid:
    """The fixed frame at ``spacing``, cropped to the fixed foreground plus a margin."""
    grid = Grid.from_image(fixed01)
    mask = foreground_mask(fixed01)
    if mask.any():
        zyx = np.argwhere(mask)
        lo = zyx.min(0)[::-1]
        hi = zyx.max(0)[::-1] + 1
        pad = np.ceil(margin_mm / np.asarray(grid.spacing)).astype(int)
        lo = np.maximum(0, lo - pad)
        hi = np.minimum(np.asarray(grid.size), hi + pad)
        grid = grid.cropped(lo, hi)
    return grid.with_spacing(spacing)


WORKING_VOXEL_BUDGET = 1.8e6   # grids finer than the reference spacing stay within this many voxels
LARGE_VOXEL_BUDGET = 3.5e6     # the reference spacing itself is afforded up to this many voxels
REFERENCE_SPACING_MM = 1.5     # the spacing the defaults were measured at


def default_spacing(fixed01: sitk.Image) -> float:
    """The working spacing: the reference 1.5 mm unless the fixed foreground's grid would exceed
    ``LARGE_VOXEL_BUDGET`` voxels (then the spacing that meets it); finer, down to the fixed
    image's own voxels, while the grid stays within ``WORKING_VOXEL_BUDGET``; never finer than
    the fixed voxels.

    Measured (default encoder, MIND weight 2): lung TRE 1.37 mm at 1.5 mm vs 1.44 at the 1.82 mm
    a 1.8 M budget gave it (MIND alone: 1.36 vs 1.41), acdc067 Dice 0.866 vs 0.859 at 1.79 mm;
    brain 0.731 at 1.5 mm vs 0.727 at 2 mm; spine 0.88 at its native 1 mm vs 0.83 at 1.5 mm.
    """
    extent = np.asarray(working_grid(fixed01, 1.0).size, dtype=float)   # mm at 1 mm spacing

    def within(voxels: float) -> float:
        return float(np.cbrt(np.prod(extent) / voxels))

    spacing = min(within(WORKING_VOXEL_BUDGET), max(REFERENCE_SPACING_MM, within(LARGE_VOXEL_BUDGET)))
    return round(max(min(fixed01.GetSpacing()), spacing), 2)


def working_memory_bytes(grid: Grid, channels: int) -> int:
    """The working grid's buffers: two feature volumes, their pooled copies, Adam buffers and
    gradients, plus the output field."""
    return int(grid.num_voxels * 4 * (channels * 6 + 40))


def encoder_channels(settings: "Settings") -> int:
    plugin = encoder_plugin(settings.encoder)
    return plugin.channels(settings.encoder_params) if plugin.channels else 32


def check_memory(grid: Grid, channels: int) -> None:
    """ResourceError when the working grid's buffers would not fit in the memory available."""
    need = working_memory_bytes(grid, channels)
    available = psutil.virtual_memory().available
    if need > 0.8 * available:
        raise ResourceError(f"not enough memory: the working grid {grid.size} needs about {need / 2**30:.1f} GB "
                            f"and {available / 2**30:.1f} GB is available; use a coarser --spacing")


def plan_working_grid(loaded: LoadedInputs, settings: "Settings") -> tuple[float, Grid]:
    """(working spacing in mm, working grid): the setting or :func:`default_spacing`; memory checked."""
    spacing = float(settings.spacing) if settings.spacing else default_spacing(loaded.fixed01)
    if spacing <= 0:
        raise InputError(f"--spacing must be positive, got {spacing}")
    grid = working_grid(loaded.fixed01, spacing)
    check_memory(grid, encoder_channels(settings))
    return spacing, grid


# --------------------------------------------------------------------------- encode
def encode_stage(settings: "Settings", loaded: LoadedInputs, alignment: Alignment, grid: Grid,
                 reporter: Reporter) -> Features:
    """The chosen encoder's features of both images on the working grid (moving through the affine)."""
    encoder = encoder_plugin(settings.encoder).build(settings)
    try:
        fixed_feats, moving_feats, info = encoder.features(loaded.fixed01, loaded.moving01, alignment.transform,
                                                           grid, reporter)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ResourceError(f"not enough memory while encoding ({exc.__class__.__name__}); "
                            "use a coarser --spacing or a larger --slice-step") from None
    return Features(fixed_feats, moving_feats, info)


def own_features(method: Any) -> Features:
    """No features for a method that works on its own inputs (``MethodPlugin.own_features``)."""
    return Features(None, None, {"encoder": method.own_features, "by_method": method.name,
                                 "note": "the method computes its own inputs, those its model was trained on "
                                         "(see resolved.method); --encoder is not used"})


# --------------------------------------------------------------------------- prompts
def choose_prompts(inputs: "RegistrationInputs", loaded: LoadedInputs, method: Any) -> Prompting:
    """The prompts given plus ``inputs.auto_prompts`` sampled ones (added to the moving side);
    InputError when the method needs prompts and there are none."""
    points, sampled = inputs.prompts, None
    if inputs.auto_prompts:
        from .prompting.auto import sample_prompts
        sampled = sample_prompts(loaded.moving01, int(inputs.auto_prompts))
        points = {"fixed": list((points or {}).get("fixed") or []),
                  "moving": list((points or {}).get("moving") or []) + sampled}
    if not points and method.needs_prompts:
        raise InputError(f"the {method.name} method needs point prompts (--moving-prompts and/or --fixed-prompts) "
                         "or --auto-prompts K")
    return Prompting(points=points or None, sampled=sampled)


def prompt_stage(prompting: Prompting, loaded: LoadedInputs, alignment: Alignment, settings: "Settings",
                 reporter: Reporter) -> None:
    """Segment the prompted structures in both images and pair them (fills ``prompting.regions``)."""
    from .prompting.pairs import paired_regions
    prompting.regions = paired_regions({"fixed": loaded.fixed01, "moving": loaded.moving01}, prompting.points,
                                       alignment.transform, settings, reporter)


def regions_on_grid(regions: dict, grid: Grid, affine: sitk.Transform) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired region label images -> (K, D, H, W) soft masks on the working grid, the moving
    ones through the affine; only structures found in both images are kept."""
    from .resample import image_on_grid
    fixed_labels, fixed_infos = regions["fixed"]
    moving_labels, _ = regions["moving"]
    fixed_masks, moving_masks = [], []
    for number in range(1, len(fixed_infos) + 1):
        f = image_on_grid(sitk.Cast(fixed_labels == number, sitk.sitkFloat32), grid)[0, 0]
        m = image_on_grid(sitk.Cast(moving_labels == number, sitk.sitkFloat32), grid, affine)[0, 0]
        if f.sum() > 0 and m.sum() > 0:
            fixed_masks.append(f)
            moving_masks.append(m)
    if not fixed_masks:
        empty = torch.zeros((0, *grid.shape))
        return empty, empty
    return torch.stack(fixed_masks), torch.stack(moving_masks)


def click_landmarks(prompts: Optional[dict], grid: Grid, affine: sitk.Transform) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Structures clicked in both images -> ((N, 3) fixed, (N, 3) moving) working-grid voxel
    positions (x, y, z); the moving click is taken through the affine's inverse, since the
    moving features live on the working grid through the affine."""
    from .prompts import click_pairs
    pairs = click_pairs(prompts)
    if not pairs:
        return None
    inverse = affine.GetInverse()
    fixed = grid.world_to_index(np.array([f for _, f, _ in pairs]))
    moving = grid.world_to_index(np.array([inverse.TransformPoint(tuple(float(c) for c in m)) for _, _, m in pairs]))
    return torch.tensor(fixed, dtype=torch.float32), torch.tensor(moving, dtype=torch.float32)


# --------------------------------------------------------------------------- optimise
def anatomy_mask(fixed01: sitk.Image, moving01: sitk.Image, grid: Grid, affine: sitk.Transform,
                 dilate_voxels: int = 2) -> torch.Tensor:
    """(D, H, W) bool: voxels of the working grid with anatomy in the fixed or (affinely mapped)
    moving image, dilated; the data term is only evaluated there."""
    from .resample import image_on_grid
    from .volume import FOREGROUND_THRESHOLD
    inside = (image_on_grid(fixed01, grid) > FOREGROUND_THRESHOLD) | \
        (image_on_grid(moving01, grid, affine) > FOREGROUND_THRESHOLD)
    k = 2 * dilate_voxels + 1
    return torch.nn.functional.max_pool3d(inside.float(), k, stride=1, padding=dilate_voxels)[0, 0] > 0


def optimise_stage(method: Any, settings: "Settings", loaded: LoadedInputs, alignment: Alignment, grid: Grid,
                   features: Features, prompting: Prompting, device: torch.device,
                   reporter: Reporter) -> tuple[torch.Tensor, dict]:
    """Run the method on the working grid -> ((1, 3, D, H, W) field in working voxels on the
    CPU, the method's report). The features are released when it is done."""
    reporter("optimise", 0.0, f"{method.name} on {tuple(grid.size)} working grid")
    affine = alignment.transform
    try:
        mask = anatomy_mask(loaded.fixed01, loaded.moving01, grid, affine).to(device)
        encoded = features.take()
        problem = Problem(grid=grid, fixed_image=loaded.fixed01, moving_image=loaded.moving01, affine=affine,
                          mask=mask, device=device, reporter=reporter, encode=lambda: (encoded[0], encoded[1]),
                          regions=regions_on_grid(prompting.regions, grid, affine) if prompting.regions else None,
                          landmarks=click_landmarks(prompting.points, grid, affine),
                          modalities=(loaded.fixed_modality, loaded.moving_modality), settings=settings)
        result = method.run(problem, settings.method_params)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ResourceError(f"not enough memory while optimising ({exc.__class__.__name__}); "
                            "use a coarser --spacing") from None
    field = result.field.to_voxels().cpu()
    problem.release_features()
    encoded.clear()
    reporter("optimise", 1.0, "optimisation done")
    return field, result.info


# --------------------------------------------------------------------------- compose, evaluate, write
@dataclass
class Composed:
    """The whole fixed->moving mapping on the fixed grid and the moving image through it."""
    fixed_grid: Grid
    field: sitk.Image                            # ITK displacement field, LPS mm (displacement.nrrd)
    transform: sitk.Transform                    # the same as a transform
    warped: sitk.Image                           # the moving image on the fixed grid
    background: float                            # the moving image's minimum, outside it


def compose_stage(loaded: LoadedInputs, alignment: Alignment, grid: Grid, field: torch.Tensor,
                  reporter: Reporter) -> Composed:
    """Compose the method's field with the affine on the fixed grid, and warp the moving image."""
    reporter("write", 0.0, "composing the displacement field")
    fixed_grid = Grid.from_image(loaded.fixed)
    disp_img = displacement_image(total_displacement(fixed_grid, grid, field, alignment.transform), fixed_grid)
    transform = displacement_transform(disp_img)
    reporter("write", 0.3, "warping")
    background = float(sitk.GetArrayViewFromImage(loaded.moving).min())
    warped = sitk.Resample(loaded.moving, loaded.fixed, transform, sitk.sitkLinear, background, sitk.sitkFloat32)
    return Composed(fixed_grid, disp_img, transform, warped, background)


def evaluate_stage(composed: Composed, inputs: "RegistrationInputs", loaded: LoadedInputs, alignment: Alignment,
                   prompting: Prompting, reporter: Reporter) -> Evaluation:
    """Score the mapping against whatever ground truth the run has (:func:`evaluation.evaluate`)."""
    reporter("write", 0.5, "Jacobian and metrics")
    truth = GroundTruth(loaded.fixed_seg, loaded.moving_seg, inputs.labels, loaded.fixed_points,
                        loaded.moving_points, prompting.regions or {})
    return evaluate(composed.field, truth, alignment.scored, composed.transform)


def write_stage(staging: Path, inputs: "RegistrationInputs", loaded: LoadedInputs, composed: Composed,
                scores: Evaluation, prompting: Prompting, reporter: Reporter) -> None:
    """Write every output but the report into ``staging``."""
    from .qc import write_qc_png
    write_image_atomic(composed.warped, staging / "warped.nii.gz")
    write_image_atomic(composed.field, staging / "displacement.nrrd")
    write_image_atomic(composed.fixed_grid.image_from_array(scores.jacobian.astype(np.float32)),
                       staging / "jacobian.nii.gz")
    if scores.warped_seg is not None:
        write_image_atomic(scores.warped_seg, staging / "warped_seg.nii.gz")
    for side, (label_image, _) in (prompting.regions or {}).items():
        write_image_atomic(label_image, staging / f"{side}_regions.nii.gz")
    reporter("write", 0.8, "QC figure")
    before = sitk.Resample(loaded.moving, loaded.fixed, sitk.Transform(), sitk.sitkLinear, composed.background,
                           sitk.sitkFloat32)
    write_qc_png(loaded.fixed, before, composed.warped, staging / "qc.png",
                 title=f"{Path(inputs.moving).name} -> {Path(inputs.fixed).name}")


# --------------------------------------------------------------------------- report and publish
def build_report(inputs: "RegistrationInputs", settings: "Settings", loaded: LoadedInputs, alignment: Alignment,
                 spacing: float, grid: Grid, encoder_info: dict, prompting: Prompting, method_info: dict,
                 device: torch.device, timings: dict, peak_rss_mb: float, metrics: Metrics) -> Report:
    """The typed report of a finished run (``report.json``; :mod:`~SAMRegistrationLib.report_schema`)."""
    from . import __version__
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(inputs).items()}
    given["labels"] = list(inputs.labels) if inputs.labels else None
    regions = prompting.regions or {}
    resolved = Resolved(fixed_modality=loaded.fixed_modality, moving_modality=loaded.moving_modality,
                        working_grid={"size": list(grid.size), "spacing": list(grid.spacing)},
                        affine=alignment.info, encoder=encoder_info,
                        regions={side: infos for side, (_, infos) in regions.items()},
                        auto_prompts=prompting.sampled, method=method_info)
    return Report(version=__version__, inputs=Inputs(**given), settings={**settings.to_dict(), "spacing": spacing},
                  resolved=resolved, device=str(device), timings=Timings(**timings),
                  peak_rss_mb=round(peak_rss_mb, 1), metrics=metrics)


#: environment variable of the fault-injection tests: SIGKILL the run after this many moves
FAULT_KILL_AFTER_MOVES = "SAMREG_FAULT_KILL_AFTER_MOVES"


def publish(report: dict, staging: Path, output_dir: Path, ledger: OutputLedger, reporter: Reporter) -> None:
    """Write ``report.json`` into ``staging``, then move every staged output into ``output_dir``
    (a cancellation before the move leaves nothing in place)."""
    write_json_atomic(report, staging / "report.json")
    reporter.check_cancelled()
    (staging / COMPLETE_MARKER).touch()     # from here on, a killed run is finished by the next one
    kill_after = int(os.environ.get(FAULT_KILL_AFTER_MOVES, "-1"))
    for moved, item in enumerate(sorted(p for p in staging.iterdir() if p.name != COMPLETE_MARKER)):
        if moved == kill_after:             # fault injection (tests only): die between two moves
            os.kill(os.getpid(), signal.SIGKILL)
        ledger.replace(item, output_dir / item.name)
    ledger.remove_staging(staging)
    reporter("write", 1.0, f"outputs in {output_dir}")
