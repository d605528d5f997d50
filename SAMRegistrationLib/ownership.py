"""What a run wrote itself, so that a failed or cancelled run removes exactly that.

A registration tool shares its output folder (and the folder beside it) with the user and with
other programs, so the clean-up after a failure must never be inferred from what *appeared*
during the run: it is an explicit record, kept as the run creates folders and puts files into
place. :class:`OutputLedger` is passed explicitly from the job runner (worker, CLI) to the
pipeline and the demo.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import threading
from pathlib import Path
from typing import Union

from .errors import Cancelled

PathLike = Union[str, os.PathLike]

STAGING_PREFIX = ".samreg-staging-"

_DIR, _STAGING, _FILE = "dir", "staging", "file"


class OutputLedger:
    """Thread-safe record of the folders, staging trees and files one run created.

    :meth:`discard` removes them, newest first: files, staging trees (whole), and created
    folders only while they are empty. Once discarded the ledger is closed: recording more
    raises :class:`Cancelled` (and a file put into place after the discard is removed at
    once), so a job thread still writing while the watchdog cleans up leaves nothing behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[str, Path]] = []
        self._closed = False

    # ------------------------------------------------------------------ recording
    def _check_open(self) -> None:
        if self._closed:
            raise Cancelled("the run's outputs were discarded")

    def make_dirs(self, path: PathLike) -> Path:
        """``mkdir -p path``, recording exactly the levels this call created."""
        path = Path(path).absolute()
        missing = []
        level = path
        while not level.exists() and level.parent != level:
            missing.append(level)
            level = level.parent
        with self._lock:
            self._check_open()
            for level in reversed(missing):
                try:
                    level.mkdir()
                except FileExistsError:
                    if not level.is_dir():
                        raise
                    continue        # someone else made it meanwhile: not ours
                self._entries.append((_DIR, level))
        return path

    def make_staging(self, parent: PathLike, prefix: str = STAGING_PREFIX) -> Path:
        """Create a new hidden folder ``parent/<prefix><random>`` owned wholly by the run."""
        with self._lock:
            self._check_open()
            staging = Path(parent).absolute() / f"{prefix}{secrets.token_hex(6)}"
            staging.mkdir()
            self._entries.append((_STAGING, staging))
        return staging

    def remove_staging(self, staging: PathLike) -> None:
        """Remove a recorded staging tree now (after success) and forget it."""
        staging = Path(staging).absolute()
        with self._lock:
            self._entries = [e for e in self._entries if e != (_STAGING, staging)]
            shutil.rmtree(staging, ignore_errors=True)

    def replace(self, source: PathLike, target: PathLike) -> Path:
        """``os.replace(source, target)`` and record ``target``, under the lock.

        Nothing is recorded when the replace fails, so a file of the same name that was there
        before stays.
        """
        target = Path(target).absolute()
        with self._lock:
            self._check_open()
            os.replace(source, target)
            self._entries.append((_FILE, target))
        return target

    def record_file(self, path: PathLike) -> Path:
        """Record a file the run has just put into place (call right after its ``os.replace``)."""
        path = Path(path).absolute()
        with self._lock:
            if self._closed:        # placed after the discard: it is ours, take it away again
                _remove_file(path)
                raise Cancelled("the run's outputs were discarded")
            self._entries.append((_FILE, path))
        return path

    # ------------------------------------------------------------------ clean-up
    @property
    def paths(self) -> list[Path]:
        """The recorded paths, oldest first."""
        with self._lock:
            return [path for _, path in self._entries]

    def discard(self) -> None:
        """Remove everything recorded, newest first, and close the ledger. Idempotent."""
        with self._lock:
            self._closed = True
            entries, self._entries = self._entries, []
            for kind, path in reversed(entries):
                if kind == _FILE:
                    _remove_file(path)
                elif kind == _STAGING:
                    _remove_tree(path)
                else:
                    _remove_empty_dir(path)


def _warn(path: Path, exc: OSError) -> None:
    print(f"samreg: warning: could not remove {path}: {exc}", file=sys.stderr)


def _remove_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        _warn(path, exc)


def _remove_tree(path: Path) -> None:
    if path.is_symlink():       # not the folder the run made: leave it
        return
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _warn(path, exc)


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        pass                    # not empty: it holds someone else's files, so it stays
