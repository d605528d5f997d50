"""Run one registration job as a separate process that streams JSON events (``samreg worker``).

Used by the Slicer module (and anything else) that wants a cancellable registration in a
child process. Usage: ``samreg worker --job JOB.json``.

Job file (JSON object; relative paths are relative to the job file's folder)::

    {
      "fixed": "fixed.nii.gz",              # required
      "moving": "moving.nii.gz",            # required
      "output_dir": "out",                  # required
      "settings": {"encoder": "mind", ...}, # optional; any Settings fields (unknown -> error)
      "fixed_seg": "...", "moving_seg": "...",              # optional label maps
      "labels": [1, 2, 3],                  # optional; list of ints or "1,2,3"
      "fixed_landmarks": "...", "moving_landmarks": "...",  # optional
      "prompts": {"fixed": [...], "moving": [...]},         # optional point prompts, LPS mm
                                                            # (see SAMRegistrationLib/prompts.py)
      "auto_prompts": 8                     # optional; K automatically sampled prompts (>= 1)
    }

Events: one JSON object per line on stdout, flushed after each line. Nothing else is
ever written to stdout (file descriptor 1 is redirected to stderr while the job runs)::

    {"event": "started", "pid": 1234, "version": "0.1.0"}
    {"event": "progress", "stage": "encode", "fraction": 0.5, "message": "...", "overall": 0.4}
    {"event": "done", "output_dir": "/abs/out", "report": "/abs/out/report.json", "metrics": {...}}
    {"event": "error", "message": "one line", "kind": "InputError|CheckpointError|ResourceError|OutputError|Cancelled|InternalError"}

``overall`` is a monotonic fraction across the pipeline stages. ``metrics`` holds the
report's key metrics where the run computed them: ``dice_mean``, ``tre_mean_mm`` and
``fold_percent`` (``report.metrics.<name>``) and their ``<name>_initial`` values
(``report.metrics.initial.<name>``); see :func:`key_metrics`.

Exit status: 0 done, 2 input/checkpoint error, 3 not enough memory, 5 outputs not written, 130 cancelled,
1 internal error (traceback on stderr).

SIGTERM / SIGINT set the pipeline's cancel event; the pipeline stops at its next progress
point. If it has not returned after :data:`CANCEL_GRACE_S` seconds the process cleans up and
exits with ``os._exit``. On cancel or failure the folders, staging trees and files the job
itself created (recorded in an :class:`~SAMRegistrationLib.ownership.OutputLedger`) are
removed; everything else, including files others put into or beside ``output_dir`` while the
job ran, is left alone.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional, TextIO

from . import report_schema
from .errors import Cancelled, CheckpointError, InputError, OutputError, ResourceError, SamregError
from .ownership import OutputLedger

#: seconds between a cancel request and a forced exit
CANCEL_GRACE_S = 4.0

#: relative cost of the pipeline stages, for the ``overall`` progress fraction
STAGE_WEIGHTS = {"load": 0.05, "affine": 0.10, "encode": 0.45, "optimise": 0.35, "write": 0.05}

#: report metrics summarised by the CLI and in the worker's ``done`` event
KEY_METRICS = report_schema.KEY_METRICS

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_MEMORY, EXIT_CANCELLED = 0, 1, 2, 3, 130
EXIT_OUTPUT = 5      # the outputs could not be written (disk full, quota, permissions)


# ----------------------------------------------------------------------------- shared helpers
def package_version() -> str:
    """The engine's version (also when a stale editable install imports the package as a namespace)."""
    try:
        from . import __version__
        return __version__
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("samregistration")
        except PackageNotFoundError:
            return "unknown"


def one_line(message: object) -> str:
    """Collapse an exception message to a single line."""
    text = " ".join(str(message).split())
    return text or "unknown error"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for MemoryError and torch's 'out of memory' RuntimeErrors."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def classify(exc: BaseException) -> tuple[str, int]:
    """Map an exception to the worker's error ``kind`` and an exit status."""
    if isinstance(exc, Cancelled):
        return "Cancelled", EXIT_CANCELLED
    if isinstance(exc, ResourceError) or is_out_of_memory(exc):
        return "ResourceError", EXIT_MEMORY
    if isinstance(exc, CheckpointError):
        return "CheckpointError", EXIT_USER
    if isinstance(exc, OutputError):
        return "OutputError", EXIT_OUTPUT
    if isinstance(exc, SamregError):
        return "InputError", EXIT_USER
    return "InternalError", EXIT_INTERNAL


def key_metrics(report: Any) -> dict[str, float]:
    """``dice_mean``, ``tre_mean_mm``, ``fold_percent`` and their ``<name>_initial`` values of a
    report, each read from its place in the report's schema
    (:func:`SAMRegistrationLib.report_schema.key_metrics`); ``{}`` for anything but a dict."""
    return report_schema.key_metrics(report if isinstance(report, dict) else {})


def check_input_files(**paths: Optional[Path]) -> None:
    """Raise InputError naming the first given path that is not an existing file."""
    for role, path in paths.items():
        if path is None:
            continue
        path = Path(path)
        try:
            exists, is_file = path.exists(), path.is_file()
        except OSError as exc:   # e.g. a file name too long
            raise InputError(f"{role.replace('_', ' ')} file cannot be checked: {path} "
                             f"({exc.strerror or one_line(exc)})") from None
        if not exists:
            raise InputError(f"{role.replace('_', ' ')} file not found: {path}")
        if not is_file:
            raise InputError(f"{role.replace('_', ' ')} is not a file: {path}")


def parse_labels(value: Any) -> Optional[list[int]]:
    """Labels from '1,2,3' or [1, 2, 3]; InputError if they are not integers."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"labels must be a list of integers, got {value!r}")
    labels = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            if isinstance(item, float) and not item.is_integer():
                raise ValueError
            labels.append(int(text) if isinstance(item, str) else int(item))
        except (TypeError, ValueError):
            raise InputError(f"labels must be integers separated by commas, got {value!r}") from None
    if not labels:
        raise InputError(f"no labels given in {value!r}")
    return labels


def validate_names(encoder: Optional[str], method: Optional[str]) -> None:
    """Raise the plug-ins' InputError for unknown encoder / method names."""
    from .plugins import encoder_plugin, method_plugin
    if encoder is not None:
        encoder_plugin(encoder)
    if method is not None:
        method_plugin(method)


def overall_fraction(stage: str, fraction: float, stages: tuple = tuple(STAGE_WEIGHTS)) -> Optional[float]:
    """Fraction of the whole pipeline done when ``stage`` is ``fraction`` done (None if unknown)."""
    if stage not in stages:
        return None
    weights = [STAGE_WEIGHTS.get(s, 1.0 / len(stages)) for s in stages]
    index = stages.index(stage)
    done = sum(weights[:index]) + weights[index] * min(max(fraction, 0.0), 1.0)
    return round(min(done / sum(weights), 1.0), 4)


# ----------------------------------------------------------------------------- the job
def _expand(value: str, role: str) -> Path:
    try:
        return Path(value).expanduser()
    except RuntimeError:        # '~name' of an unknown user
        raise InputError(f"job field {role!r}: cannot find the home folder in {value!r}") from None


def _resolve(base: Path, value: Any, role: str, required: bool = False) -> Optional[Path]:
    if value is None or value == "":
        if required:
            raise InputError(f"job field {role!r} is missing")
        return None
    if not isinstance(value, str):
        raise InputError(f"job field {role!r} must be a path string")
    path = _expand(value, role)
    return path if path.is_absolute() else base / path


_JOB_KEYS = {"fixed", "moving", "output_dir", "settings", "fixed_seg", "moving_seg", "labels",
             "fixed_landmarks", "moving_landmarks", "prompts", "auto_prompts"}


def load_job(job_path: Path):
    """Read and validate a job file -> (RegistrationInputs, Settings); a problem is one
    InputError line naming the job file."""
    job_path = Path(job_path)
    if not job_path.is_file():
        raise InputError(f"job file not found: {job_path}")
    try:
        return _load_job(job_path)
    except InputError as exc:
        message = one_line(exc)
        raise InputError(message if str(job_path) in message else f"job file {job_path}: {message}") from None


def _load_job(job_path: Path):
    from .pipeline import RegistrationInputs
    from .prompts import parse_auto_prompts, parse_prompt_set
    from .settings import Settings

    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:   # ValueError: JSON syntax
        raise InputError(f"cannot read job file {job_path}: {one_line(exc)}") from None
    if not isinstance(job, dict):
        raise InputError(f"job file {job_path} must hold a JSON object")
    unknown = sorted(set(job) - _JOB_KEYS)
    if unknown:
        raise InputError(f"unknown job field(s): {', '.join(map(repr, unknown))}")
    base = job_path.absolute().parent
    raw_settings = job.get("settings") or {}
    if not isinstance(raw_settings, dict):
        raise InputError("job field 'settings' must be an object")
    settings = Settings.from_dict(raw_settings)
    inputs = RegistrationInputs(
        fixed=_resolve(base, job.get("fixed"), "fixed", required=True),
        moving=_resolve(base, job.get("moving"), "moving", required=True),
        output_dir=_resolve(base, job.get("output_dir"), "output_dir", required=True),
        fixed_seg=_resolve(base, job.get("fixed_seg"), "fixed_seg"),
        moving_seg=_resolve(base, job.get("moving_seg"), "moving_seg"),
        labels=parse_labels(job.get("labels")),
        fixed_landmarks=_resolve(base, job.get("fixed_landmarks"), "fixed_landmarks"),
        moving_landmarks=_resolve(base, job.get("moving_landmarks"), "moving_landmarks"),
        prompts=parse_prompt_set(job.get("prompts")),
        auto_prompts=parse_auto_prompts(job.get("auto_prompts")),
    )
    from .input_checks import check_image_path      # an image may be a DICOM folder
    check_image_path(inputs.fixed, "fixed")
    check_image_path(inputs.moving, "moving")
    check_input_files(fixed_seg=inputs.fixed_seg, moving_seg=inputs.moving_seg,
                      fixed_landmarks=inputs.fixed_landmarks, moving_landmarks=inputs.moving_landmarks)
    if settings.checkpoint:
        check_input_files(checkpoint=_expand(settings.checkpoint, "settings.checkpoint"))
    validate_names(settings.encoder, settings.method)
    return inputs, settings


class _EventStream:
    """Thread-safe writer of JSON lines to a private duplicate of the original stdout."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # reader went away; nothing sensible to do

    def close_with(self, event: str, **fields: Any) -> None:
        """Emit a final event and ignore everything after it."""
        self.emit(event, **fields)
        with self._lock:
            self.closed = True


class _StdoutRedirect:
    """Give events a private stream on the real stdout; point fd 1 and sys.stdout at stderr.

    :meth:`restore` undoes it (for in-process use) and closes the private stream.
    """

    def __init__(self) -> None:
        sys.stdout.flush()
        self._saved_fd = os.dup(1)
        self._saved_stdout = sys.stdout
        self.stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def restore(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass
        sys.stdout = self._saved_stdout
        os.dup2(self._saved_fd, 1)
        os.close(self._saved_fd)


def run_job(job_path: str | os.PathLike) -> int:
    """Run the job described by ``job_path``, streaming events on stdout; returns the exit status."""
    redirect = _StdoutRedirect()
    try:
        return _run_job(job_path, _EventStream(redirect.stream))
    finally:
        redirect.restore()


def _run_job(job_path: str | os.PathLike, events: _EventStream) -> int:
    events.emit("started", pid=os.getpid(), version=package_version())

    cancel = threading.Event()
    state: dict[str, Any] = {"overall": 0.0}
    ledger = OutputLedger()     # what the job itself writes; discarded on failure or cancel
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def progress(stage: str, fraction: float, message: str = "") -> None:
        overall = overall_fraction(stage, fraction)
        if overall is None:
            overall = state["overall"]
        state["overall"] = overall = max(state["overall"], overall)
        events.emit("progress", stage=stage, fraction=round(float(fraction), 4),
                    message=str(message), overall=overall)

    def body() -> None:
        try:
            inputs, settings = load_job(Path(job_path))
            from .pipeline import register
            outcome["report"] = register(inputs, settings, progress=progress, cancel=cancel, ledger=ledger)
            outcome["output_dir"] = Path(inputs.output_dir).absolute()
        except BaseException as exc:  # noqa: BLE001 - reported as an event below
            outcome["error"] = exc
            outcome["traceback"] = traceback.format_exc()
        finally:
            finished.set()

    def fail(kind: str, message: str) -> None:
        ledger.discard()
        events.close_with("error", message=message, kind=kind)

    def on_signal(signum, _frame) -> None:
        if not cancel.is_set():
            print(f"samreg worker: received signal {signum}, cancelling", file=sys.stderr)
            cancel.set()
            state["deadline"] = time.monotonic() + CANCEL_GRACE_S

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread = threading.Thread(target=body, name="samreg-job", daemon=True)
        thread.start()
        # The main thread waits here so signal handlers run promptly even while the job
        # thread sits in long native calls; it is also the watchdog after a cancel.
        while not finished.wait(0.1):
            deadline = state.get("deadline")
            if deadline is not None and time.monotonic() > deadline:
                print("samreg worker: pipeline did not stop in time; forcing exit", file=sys.stderr)
                fail("Cancelled", "cancelled")
                ledger.discard()  # once more, in case the job thread wrote in between
                sys.stderr.flush()
                os._exit(EXIT_CANCELLED)
        thread.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

    exc = outcome.get("error")
    if exc is None and cancel.is_set():
        exc = Cancelled("cancelled")  # finished despite the request: honour the cancel
    if exc is not None:
        kind, status = classify(exc)
        if kind == "Cancelled":
            message = "cancelled"
        elif kind == "ResourceError" and not isinstance(exc, ResourceError):
            message = f"not enough memory: {one_line(exc)}"
        elif kind == "InternalError":
            print(outcome.get("traceback", ""), file=sys.stderr)
            message = f"{type(exc).__name__}: {one_line(exc)}"
        else:
            message = one_line(exc)
        fail(kind, message)
        return status

    report = outcome.get("report") or {}
    output_dir = outcome["output_dir"]
    events.close_with("done", output_dir=str(output_dir), report=str(output_dir / "report.json"),
                      metrics=key_metrics(report if isinstance(report, dict) else {}))
    return EXIT_OK
