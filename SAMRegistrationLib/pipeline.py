"""The registration pipeline: load -> affine -> encode -> (prompts) -> optimise -> evaluate and write.

:func:`register` runs the stages of :mod:`~SAMRegistrationLib.stages` in order, times each
one (``report.json``'s ``timings``) and owns the outputs. Every stage reports progress (and is
a cancellation point). Outputs are written into a hidden staging folder inside the output
folder and moved into place only when all of them exist. Each folder, staging tree and file
the run puts there is recorded in an :class:`~SAMRegistrationLib.ownership.OutputLedger`, and
a failed or cancelled job removes exactly those, never anything someone else wrote meanwhile.
The report's layout is :class:`~SAMRegistrationLib.report_schema.Report`; its scores come from
:mod:`~SAMRegistrationLib.evaluation`.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import psutil
import SimpleITK as sitk
import torch

from .device import resolve_device
from .errors import OutputError
from .input_checks import check_output_dir
from .output_guard import output_lock, recover
from . import memory_budget
from .ownership import OutputLedger
from .plugins import encoder_plugin, method_plugin
from .progress import ProgressFn, Reporter
from .settings import Settings
from .stages import (LARGE_VOXEL_BUDGET, REFERENCE_SPACING_MM, WORKING_VOXEL_BUDGET, affine_stage,
                     anatomy_mask, build_report, check_memory, choose_prompts, click_landmarks, compose_stage,
                     default_spacing, encode_stage, encoder_channels, evaluate_stage, load_stage, optimise_stage,
                     own_features, plan_working_grid, prompt_stage, publish, regions_on_grid, working_grid,
                     working_memory_bytes, write_stage)

# the helpers other modules import from here live with their stages in stages.py
__all__ = ["RegistrationInputs", "register", "STAGES", "OUTPUT_FILES", "peak_rss_mb", "working_grid",
           "default_spacing", "anatomy_mask", "regions_on_grid", "click_landmarks", "check_memory",
           "WORKING_VOXEL_BUDGET", "LARGE_VOXEL_BUDGET", "REFERENCE_SPACING_MM"]

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


# --------------------------------------------------------------------------- main entry
def register(inputs: RegistrationInputs, settings: Settings,
             progress: Optional[ProgressFn] = None,
             cancel: Optional[threading.Event] = None,
             ledger: Optional[OutputLedger] = None) -> dict:
    """Register ``inputs.moving`` to ``inputs.fixed`` and write all outputs to ``inputs.output_dir``.

    Returns the report (also written as ``report.json``; its layout is
    :class:`~SAMRegistrationLib.report_schema.Report`). Raises :class:`SamregError`
    subclasses for user errors and :class:`Cancelled` when ``cancel`` is set. The folders
    and files the run creates are recorded in ``ledger`` (a private one when None); on any
    failure the ledger is discarded, so only what this run wrote is removed. One run at a time
    writes into an output folder (another is refused with one line), and what a killed run left
    there is finished or removed first (:mod:`~SAMRegistrationLib.output_guard`). Outputs that
    cannot be written (disk full) are an :class:`OutputError`.
    """
    check_output_dir(inputs.output_dir)          # as the worker and Slicer reach here directly
    with output_lock(inputs.output_dir):
        recover(inputs.output_dir)
        return _register_locked(inputs, settings, progress, cancel, ledger)


def _register_locked(inputs: RegistrationInputs, settings: Settings, progress: Optional[ProgressFn],
                     cancel: Optional[threading.Event], ledger: Optional[OutputLedger]) -> dict:
    reporter = Reporter(progress, cancel)
    timer = _Timer()
    device = resolve_device(settings.device)
    if settings.threads:
        # ITK's threads too: its metric sums (affine stage) depend on how the work is split, so
        # the same --threads gives the same outputs in a shell, a batch worker or Slicer
        torch.set_num_threads(int(settings.threads))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(settings.threads))
    encoder_plugin(settings.encoder)              # unknown names fail before any work
    method = method_plugin(settings.method)
    if method.preflight is not None:              # e.g. a model file that is missing or damaged
        method.preflight(settings.method_params)

    with timer.stage("load"):
        loaded = load_stage(inputs, settings, reporter)
    with timer.stage("affine"):
        alignment = affine_stage(loaded, settings, reporter)
    spacing, grid = plan_working_grid(loaded, settings)
    # the machine's memory is shared with the other runs: wait here for this run's share
    need = working_memory_bytes(grid, encoder_channels(settings)) + memory_budget.BASE_BYTES
    with memory_budget.reservation(need, lambda message: reporter("encode", 0.0, message)):
        return _heavy_stages(inputs, settings, reporter, timer, device, method, loaded, alignment, spacing, grid,
                             ledger)


def _heavy_stages(inputs: RegistrationInputs, settings: Settings, reporter: Reporter, timer: _Timer, device,
                  method, loaded, alignment, spacing: float, grid, ledger: Optional[OutputLedger]) -> dict:
    """Encode, (prompts), optimise, write: the stages that need the run's memory reservation."""
    with timer.stage("encode"):
        features = own_features(method) if method.own_features else \
            encode_stage(settings, loaded, alignment, grid, reporter)
    prompting = choose_prompts(inputs, loaded, method)
    if prompting.points:
        with timer.stage("prompts"):
            prompt_stage(prompting, loaded, alignment, settings, reporter)
    with timer.stage("optimise"):
        field, method_info = optimise_stage(method, settings, loaded, alignment, grid, features, prompting,
                                            device, reporter)

    ledger = ledger if ledger is not None else OutputLedger()
    output_dir = Path(inputs.output_dir)
    try:
        ledger.make_dirs(output_dir)
        staging = ledger.make_staging(output_dir)
        with timer.stage("write"):
            composed = compose_stage(loaded, alignment, grid, field, reporter)
            scores = evaluate_stage(composed, inputs, loaded, alignment, prompting, reporter)
            write_stage(staging, inputs, loaded, composed, scores, prompting, reporter)
        report = build_report(inputs, settings, loaded, alignment, spacing, grid, features.info, prompting,
                              method_info, device, timer.report(), peak_rss_mb(), scores.metrics).to_dict()
        publish(report, staging, output_dir, ledger, reporter)
    except (OSError, OutputError) as exc:      # disk full, quota, a folder made read-only meanwhile
        ledger.discard()
        if isinstance(exc, OSError):
            name = f" ({Path(exc.filename).name})" if getattr(exc, "filename", None) else ""
            reason = f"{exc.strerror or exc}{name}"
        else:
            reason = str(exc)
        raise OutputError(f"cannot write the outputs into {output_dir}: {reason}; nothing of this run "
                          "was left there") from None
    except BaseException:
        ledger.discard()
        raise
    return report
