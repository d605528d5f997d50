"""The registration pipeline: load -> affine -> encode -> optimise -> write."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .progress import ProgressFn
from .settings import Settings

STAGES = ("load", "affine", "encode", "optimise", "write")


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


def register(inputs: RegistrationInputs, settings: Settings,
             progress: Optional[ProgressFn] = None,
             cancel: Optional[threading.Event] = None) -> dict:
    """Register ``inputs.moving`` to ``inputs.fixed`` and write all outputs to ``inputs.output_dir``.

    Returns the report (also written as ``report.json``). Raises :class:`SamregError`
    subclasses for user errors and :class:`Cancelled` when ``cancel`` is set; in both
    cases nothing is left in ``output_dir`` that was not there before.
    """
    raise NotImplementedError("pipeline under construction")
