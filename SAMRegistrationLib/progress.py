"""Progress reporting shared by the pipeline, the CLI and the worker."""
from __future__ import annotations

import threading
from typing import Callable, Optional

from .errors import Cancelled

#: progress(stage, fraction in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]


def no_progress(stage: str, fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything."""


class Reporter:
    """Wraps a progress callback and a cancel flag; every report is a cancellation point."""

    def __init__(self, progress: Optional[ProgressFn] = None,
                 cancel: Optional[threading.Event] = None) -> None:
        self._progress = progress or no_progress
        self._cancel = cancel

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        self._progress(stage, float(min(max(fraction, 0.0), 1.0)), message)

    def check_cancelled(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("registration cancelled")
