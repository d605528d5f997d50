"""What a Dask worker runs for one pair, and the record it leaves behind.

:func:`run_pair` runs :func:`~SAMRegistrationLib.pipeline.register` into the pair's folder
(the outputs are those of ``samreg register``) and then writes the pair's *record*, a small
JSON file in ``OUTDIR/.samreg-batch/records/``: status, one-line error, key metrics, stage
times, peak memory, whether the fixed image was encoded or read from the feature cache, and
the fingerprint of the row (its arguments and its input files' sizes and times). A resumed
batch skips a pair whose record says ``ok`` with the same fingerprint and whose outputs are
all there. A user error of one pair is its record's error; it never stops the batch.
"""
from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import Cancelled, SamregError
from ..io_atomic import write_json_atomic
from ..worker import is_out_of_memory, key_metrics, one_line

STATE_DIR = ".samreg-batch"
RECORDS = "records"
OUTPUT_FILES = ("warped.nii.gz", "displacement.nrrd", "jacobian.nii.gz", "qc.png", "report.json")
#: seconds between two looks at the batch's cancel event (a scheduler round trip)
CANCEL_POLL_S = 1.0


def records_dir(output_dir: Path) -> Path:
    return Path(output_dir) / STATE_DIR / RECORDS


def record_path(output_dir: Path, pair_id: str) -> Path:
    return records_dir(output_dir) / f"{pair_id}.json"


def fingerprint(argv: list[str], files: list[Path]) -> str:
    """What decides a pair's outputs: its register arguments and its input files (size, mtime)."""
    parts = list(argv)
    for path in files:
        try:
            stat = Path(path).stat()
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:missing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def read_record(output_dir: Path, pair_id: str) -> Optional[dict]:
    try:
        return json.loads(record_path(output_dir, pair_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(output_dir: Path, pair_id: str, expected_fingerprint: str) -> bool:
    """The pair ran to the end with these very inputs and its outputs are all in place."""
    record = read_record(output_dir, pair_id)
    if not record or record.get("status") != "ok" or record.get("fingerprint") != expected_fingerprint:
        return False
    folder = Path(record.get("output_dir", ""))
    return all((folder / name).is_file() for name in OUTPUT_FILES)


def encoded(resolved_encoder: Any, side: str) -> Optional[bool]:
    """Whether the report's encoder section says ``side`` was encoded (False: read from the cache;
    None: an encoder without a cache, such as MIND)."""
    found: list[bool] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            info = node.get(side)
            if isinstance(info, dict) and "cache_hit" in info:
                found.append(not info["cache_hit"])
            for value in node.values():
                walk(value)
    walk(resolved_encoder)
    return any(found) if found else None


class _EventPoller:
    """``is_set()`` of a Dask ``Event``, asked of the scheduler at most once a second."""

    def __init__(self, name: Optional[str]) -> None:
        self._event = None
        if name:
            from distributed import Event
            self._event = Event(name)
        self._last = 0.0
        self._set = False

    def is_set(self) -> bool:
        if self._event is None or self._set:
            return self._set
        now = time.monotonic()
        if now - self._last >= CANCEL_POLL_S:
            self._last = now
            try:
                self._set = bool(self._event.is_set())
            except Exception:       # the driver is gone: keep going; its lock is released anyway
                self._set = False
        return self._set


def base_record(pair_id: str, row: int, print_fingerprint: str, inputs: Any, settings: Any) -> dict:
    return {"id": pair_id, "row": row, "fingerprint": print_fingerprint,
            "fixed": str(inputs.fixed) if inputs is not None else "",
            "moving": str(inputs.moving) if inputs is not None else "",
            "method": getattr(settings, "method", ""), "encoder": getattr(settings, "encoder", ""),
            "output_dir": str(Path(inputs.output_dir).absolute()) if inputs is not None else ""}


def run_pair(pair_id: str, row: int, print_fingerprint: str, inputs: Any, settings: Any,
             threads: Optional[int], batch_dir: str, cancel_event: Optional[str] = None) -> dict:
    """Register one pair on this worker, write its record, and return the record."""
    from ..pipeline import register

    record = base_record(pair_id, row, print_fingerprint, inputs, settings)
    if threads and not settings.threads:
        settings = settings.model_copy(update={"threads": int(threads)})
    record.update(host=socket.gethostname(), threads=settings.threads)
    start = time.time()
    cancel = _EventPoller(cancel_event)
    if cancel.is_set():         # cancelled before it started: nothing to undo
        return {**record, "status": "cancelled", "error": "cancelled"}
    try:
        report = register(inputs, settings, cancel=cancel)
        record.update(status="ok", error="", metrics=key_metrics(report), timings=report.get("timings", {}),
                      peak_rss_mb=report.get("peak_rss_mb"),
                      fixed_encoded=encoded(report.get("resolved", {}).get("encoder"), "fixed"),
                      moving_encoded=encoded(report.get("resolved", {}).get("encoder"), "moving"))
    except Cancelled:
        record.update(status="cancelled", error="cancelled")
    except SamregError as exc:
        record.update(status="failed", error=one_line(exc))
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        record.update(status="failed", error=f"not enough memory: {one_line(exc)}")
    record.update(seconds=round(time.time() - start, 3), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if record["status"] != "cancelled":      # a cancelled pair is simply not done
        write_json_atomic(record, record_path(Path(batch_dir), pair_id))
    return record
