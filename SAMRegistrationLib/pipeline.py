"""The registration pipeline: load -> affine -> encode -> optimise -> write.

Every stage reports progress (and is a cancellation point). Outputs are written into a
hidden staging folder inside the output folder and moved into place only when all of them
exist. Each folder, staging tree and file the run puts there is recorded in an
:class:`~SAMRegistrationLib.ownership.OutputLedger`, and a failed or cancelled job removes
exactly those, never anything someone else wrote meanwhile.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import psutil
import SimpleITK as sitk
import torch

from . import __version__
from .affine import affine_prealign, affine_to_matrix, identity_affine
from .device import resolve_device
from .errors import InputError, ResourceError
from .fields import displacement_image, displacement_transform, total_displacement
from .grid import Grid
from .io_atomic import write_image_atomic, write_json_atomic
from .ownership import OutputLedger
from .progress import ProgressFn, Reporter
from .plugins import encoder_plugin, method_plugin
from .problem import Problem
from .settings import Settings
from .volume import check_values, foreground_mask, normalise_intensity, physical_overlap, read_volume

log = logging.getLogger(__name__)

STAGES = ("load", "affine", "encode", "optimise", "write")
OUTPUT_FILES = ("warped.nii.gz", "displacement.nrrd", "jacobian.nii.gz", "qc.png", "report.json")


@dataclass
class RegistrationInputs:
    fixed: Path
    moving: Path
    output_dir: Path
    fixed_seg: Optional[Path] = None
    moving_seg: Optional[Path] = None
    labels: Optional[Sequence[int]] = None
    fixed_landmarks: Optional[Path] = None
    moving_landmarks: Optional[Path] = None
    prompts: Optional[dict] = None      # point prompts in LPS mm (see prompts.py); recorded in the report
    auto_prompts: Optional[int] = None  # K automatically sampled prompts (>= 1); recorded in the report


# --------------------------------------------------------------------------- small helpers
class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"{name}_s"] = round(self.times.get(f"{name}_s", 0.0) + time.perf_counter() - t0, 3)

    def report(self) -> dict:
        return {"total_s": round(time.perf_counter() - self.start, 3), **self.times}


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux's VmHWM belongs to the process image, whereas ``ru_maxrss`` survives ``exec`` and so
    reports the parent's peak for a worker started from a large process (Slicer, the benchmark).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource     # Unix only: imported here so the module loads on Windows
    except ImportError:
        # Windows: psutil reports the peak working set there; rss elsewhere as a last resort
        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss)) / 2**20
    # ru_maxrss is in KB on Linux, in bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024.0)


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


def check_memory(grid: Grid, channels: int) -> None:
    # two feature volumes, their pooled copies, Adam buffers and gradients, plus the output field
    need = grid.num_voxels * 4 * (channels * 6 + 40)
    available = psutil.virtual_memory().available
    if need > 0.8 * available:
        raise ResourceError(f"not enough memory: the working grid {grid.size} needs about {need / 2**30:.1f} GB "
                            f"and {available / 2**30:.1f} GB is available; use a coarser --spacing")


def _labels_in(*images: sitk.Image) -> list[int]:
    values: set[int] = set()
    for image in images:
        values |= set(int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)))
    values.discard(0)
    return sorted(values)


# --------------------------------------------------------------------------- main entry
def register(inputs: RegistrationInputs, settings: Settings,
             progress: Optional[ProgressFn] = None,
             cancel: Optional[threading.Event] = None,
             ledger: Optional[OutputLedger] = None) -> dict:
    """Register ``inputs.moving`` to ``inputs.fixed`` and write all outputs to ``inputs.output_dir``.

    Returns the report (also written as ``report.json``). Raises :class:`SamregError`
    subclasses for user errors and :class:`Cancelled` when ``cancel`` is set. The folders
    and files the run creates are recorded in ``ledger`` (a private one when None); on any
    failure the ledger is discarded, so only what this run wrote is removed.
    """
    from .landmarks import check_pairs, read_points
    from .metrics import (fold_percent, jacobian_determinant, region_pair_dice, resample_segmentation, sdlogj,
                          segmentation_metrics, tre, tre_initial)
    from .prompt_files import check_prompts
    from .qc import write_qc_png

    reporter = Reporter(progress, cancel)
    timer = _Timer()
    device = resolve_device(settings.device)
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    encoder_plugin_ = encoder_plugin(settings.encoder)
    method = method_plugin(settings.method)

    # ------------------------------------------------------------------ load
    with timer.stage("load"):
        reporter("load", 0.0, "reading images")
        fixed = read_volume(inputs.fixed, "fixed image")
        check_values(fixed, "fixed image", inputs.fixed)
        moving = read_volume(inputs.moving, "moving image")
        check_values(moving, "moving image", inputs.moving)
        if physical_overlap(fixed, moving) <= 0.0:
            raise InputError(f"the fixed and moving images do not overlap in physical space "
                             f"(fixed {inputs.fixed}, moving {inputs.moving}); check their origins and directions")
        if inputs.prompts:
            check_prompts(inputs.prompts, fixed, moving)
        fixed_seg = moving_seg = None
        if inputs.fixed_seg or inputs.moving_seg:
            if not (inputs.fixed_seg and inputs.moving_seg):
                raise InputError("scoring needs both --fixed-seg and --moving-seg")
            fixed_seg = read_volume(inputs.fixed_seg, "fixed segmentation", sitk.sitkInt32)
            moving_seg = read_volume(inputs.moving_seg, "moving segmentation", sitk.sitkInt32)
            if fixed_seg.GetSize() != fixed.GetSize():
                raise InputError(f"fixed segmentation {inputs.fixed_seg} has size {fixed_seg.GetSize()}, "
                                 f"but the fixed image has {fixed.GetSize()}")
            if np.allclose(fixed_seg.GetSpacing(), fixed.GetSpacing(), atol=1e-3):
                fixed_seg.CopyInformation(fixed)   # tolerate header rounding between image and labels
        fixed_pts = moving_pts = None
        if inputs.fixed_landmarks or inputs.moving_landmarks:
            if not (inputs.fixed_landmarks and inputs.moving_landmarks):
                raise InputError("TRE needs both --fixed-landmarks and --moving-landmarks")
            fixed_pts = read_points(inputs.fixed_landmarks, fixed)
            moving_pts = read_points(inputs.moving_landmarks, moving)
            check_pairs(fixed_pts, moving_pts)
        fixed01, fixed_modality = normalise_intensity(fixed, settings.fixed_modality)
        moving01, moving_modality = normalise_intensity(moving, settings.moving_modality)
        reporter("load", 1.0, f"fixed {fixed_modality.upper()} {fixed.GetSize()}, moving {moving_modality.upper()} {moving.GetSize()}")

    # ------------------------------------------------------------------ affine
    with timer.stage("affine"):
        if settings.affine:
            affine, affine_report = affine_prealign(fixed01, moving01,
                                                    lambda f, m: reporter("affine", f, m))
        else:
            affine, affine_report = identity_affine(), {"chosen": "disabled"}
            reporter("affine", 1.0, "affine pre-alignment disabled")

    spacing = float(settings.spacing) if settings.spacing else default_spacing(fixed01)
    if spacing <= 0:
        raise InputError(f"--spacing must be positive, got {spacing}")
    grid = working_grid(fixed01, spacing)
    check_memory(grid, encoder_plugin_.channels(settings.encoder_params) if encoder_plugin_.channels else 32)

    # ------------------------------------------------------------------ encode
    with timer.stage("encode"):
        encoder = encoder_plugin_.build(settings)
        try:
            fixed_feats, moving_feats, encoder_info = encoder.features(fixed01, moving01, affine, grid, reporter)
        except (MemoryError, torch.OutOfMemoryError) as exc:
            raise ResourceError(f"not enough memory while encoding ({exc.__class__.__name__}); "
                                "use a coarser --spacing or a larger --slice-step") from None

    # ------------------------------------------------------------------ prompts -> regions
    regions: dict[str, tuple[sitk.Image, list]] = {}
    prompts, sampled = inputs.prompts, None
    if inputs.auto_prompts:
        from .prompting.auto import sample_prompts
        sampled = sample_prompts(moving01, int(inputs.auto_prompts))
        prompts = {"fixed": list((prompts or {}).get("fixed") or []),
                   "moving": list((prompts or {}).get("moving") or []) + sampled}
    if prompts:
        from .prompting.pairs import paired_regions
        with timer.stage("prompts"):
            regions = paired_regions({"fixed": fixed01, "moving": moving01}, prompts, affine, settings, reporter)
    elif method.needs_prompts:
        raise InputError(f"the {method.name} method needs point prompts (--moving-prompts and/or --fixed-prompts) "
                         "or --auto-prompts K")

    # ------------------------------------------------------------------ optimise
    with timer.stage("optimise"):
        reporter("optimise", 0.0, f"{method.name} on {tuple(grid.size)} working grid")
        try:
            mask = anatomy_mask(fixed01, moving01, grid, affine).to(device)
            encoded = [fixed_feats, moving_feats]
            del fixed_feats, moving_feats
            problem = Problem(grid=grid, fixed_image=fixed01, moving_image=moving01, affine=affine, mask=mask,
                              device=device, reporter=reporter, encode=lambda: (encoded[0], encoded[1]),
                              regions=regions_on_grid(regions, grid, affine) if regions else None,
                              landmarks=click_landmarks(prompts, grid, affine))
            result = method.run(problem, settings.method_params)
        except (MemoryError, torch.OutOfMemoryError) as exc:
            raise ResourceError(f"not enough memory while optimising ({exc.__class__.__name__}); "
                                "use a coarser --spacing") from None
        field = result.field.to_voxels().cpu()
        problem.release_features()
        encoded.clear()
        reporter("optimise", 1.0, "optimisation done")

    # ------------------------------------------------------------------ write
    ledger = ledger if ledger is not None else OutputLedger()
    output_dir = Path(inputs.output_dir)
    try:
        ledger.make_dirs(output_dir)
        staging = ledger.make_staging(output_dir)
        with timer.stage("write"):
            reporter("write", 0.0, "composing the displacement field")
            fixed_grid = Grid.from_image(fixed)
            disp = total_displacement(fixed_grid, grid, field, affine)
            disp_img = displacement_image(disp, fixed_grid)
            transform = displacement_transform(disp_img)
            reporter("write", 0.3, "warping")
            background = float(sitk.GetArrayViewFromImage(moving).min())
            warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, background, sitk.sitkFloat32)
            write_image_atomic(warped, staging / "warped.nii.gz")
            write_image_atomic(disp_img, staging / "displacement.nrrd")
            reporter("write", 0.5, "Jacobian and metrics")
            jac = jacobian_determinant(disp, fixed.GetSpacing(), np.asarray(fixed.GetDirection()).reshape(3, 3))
            write_image_atomic(fixed_grid.image_from_array(jac.astype(np.float32)), staging / "jacobian.nii.gz")
            metrics: dict = {"sdlogj": sdlogj(jac), "fold_percent": fold_percent(jac)}
            initial: dict = {"sdlogj": 0.0, "fold_percent": 0.0}
            after_affine: dict = {}
            affine_tx = affine if settings.affine else None
            if fixed_seg is not None:
                labels = list(inputs.labels) if inputs.labels else _labels_in(fixed_seg, moving_seg)
                warped_seg = resample_segmentation(moving_seg, fixed_seg, transform)
                write_image_atomic(warped_seg, staging / "warped_seg.nii.gz")
                metrics.update(segmentation_metrics(fixed_seg, warped_seg, labels))
                initial.update(segmentation_metrics(fixed_seg, resample_segmentation(moving_seg, fixed_seg, None), labels))
                if affine_tx is not None:
                    after_affine.update(segmentation_metrics(
                        fixed_seg, resample_segmentation(moving_seg, fixed_seg, affine_tx), labels))
            if fixed_pts is not None:
                mean, sd, per_point = tre(fixed_pts, moving_pts, disp_img)
                metrics.update({"tre_mean_mm": mean, "tre_sd_mm": sd, "tre_median_mm": float(np.median(per_point))})
                mean0, sd0, per0 = tre_initial(fixed_pts, moving_pts)
                initial.update({"tre_mean_mm": mean0, "tre_sd_mm": sd0, "tre_median_mm": float(np.median(per0))})
                if affine_tx is not None:
                    matrix, offset = affine_to_matrix(affine_tx)
                    d = np.linalg.norm(fixed_pts @ matrix.T + offset - moving_pts, axis=1)
                    after_affine.update({"tre_mean_mm": float(d.mean()), "tre_sd_mm": float(d.std())})
            segmentations = {"fixed": fixed_seg, "moving": moving_seg}
            for side, (label_image, infos) in regions.items():
                write_image_atomic(label_image, staging / f"{side}_regions.nii.gz")
                segmentation = segmentations[side]
                if segmentation is not None and segmentation.GetSize() == label_image.GetSize():
                    from .prompting.segment import region_quality
                    metrics.setdefault("regions", {})[side] = region_quality(label_image, segmentation, infos)
            if regions:
                metrics["region_pairs"] = region_pair_dice(
                    regions["fixed"][0], regions["moving"][0], [info["label"] for info in regions["fixed"][1]],
                    transform, affine_tx)
            metrics["initial"] = initial
            if after_affine:
                metrics["affine"] = after_affine
            reporter("write", 0.8, "QC figure")
            before = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, background, sitk.sitkFloat32)
            write_qc_png(fixed, before, warped, staging / "qc.png",
                         title=f"{Path(inputs.moving).name} -> {Path(inputs.fixed).name}")
        report = {
            "version": __version__,
            "inputs": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(inputs).items()},
            "settings": {**settings.to_dict(), "spacing": spacing},
            "resolved": {"fixed_modality": fixed_modality, "moving_modality": moving_modality,
                         "working_grid": {"size": list(grid.size), "spacing": list(grid.spacing)},
                         "affine": affine_report, "encoder": encoder_info,
                         "regions": {side: infos for side, (_, infos) in regions.items()},
                         "auto_prompts": sampled,
                         "method": result.info},
            "device": str(device),
            "timings": timer.report(),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "metrics": metrics,
        }
        report["inputs"]["labels"] = list(inputs.labels) if inputs.labels else None
        write_json_atomic(report, staging / "report.json")
        reporter.check_cancelled()
        for item in sorted(staging.iterdir()):
            ledger.replace(item, output_dir / item.name)
        ledger.remove_staging(staging)
        reporter("write", 1.0, f"outputs in {output_dir}")
    except BaseException:
        ledger.discard()
        raise
    return report
