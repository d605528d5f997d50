"""Atomic file writers: write to a hidden temp file in the target folder, then ``os.replace``.

A reader (or a cancelled job) therefore never sees a half-written output file.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import SimpleITK as sitk

from .errors import OutputError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``path`` (same extension); on success move it onto ``path``.

    The temp name is ``.tmp-<random>-<name>`` so writers that dispatch on the extension
    (SimpleITK, matplotlib) pick the right format. On any exception the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not pre-created (mkstemp would force mode 0600): writers create it with the usual umask.
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_image_atomic(image: sitk.Image, path: Path, compress: bool = True) -> None:
    """Write ``image`` to ``path`` atomically (format chosen by the extension of ``path``).

    ITK reports a failed write (a full disk, a quota) as a RuntimeError; it becomes an
    :class:`OutputError` naming the file."""
    with atomic_path(Path(path)) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            if "Unable to determine ImageIO writer" in str(exc):
                raise           # an unknown file type: a bug of the caller, not a full disk
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = next((line for line in lines if "wrote" in line or "failed" in line.lower()), lines[-1] if lines else "")
            raise OutputError(f"cannot write {Path(path).name} (is the disk full? {detail[-120:]})") from None


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and Paths to plain JSON types; NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy types and NaN handled)."""
    write_text_atomic(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n", path)


@contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) across processes.

    With ``wait=False`` a lock someone else holds raises :class:`BlockingIOError` at once.

    POSIX ``flock``: two processes, or two threads that open the file separately, exclude each
    other; the lock dies with its holder, so a killed worker never leaves a stale lock. Where
    ``fcntl`` does not exist (Windows) the block runs unlocked: the writes are still atomic, a
    volume may just be encoded twice.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
