"""Memory shared by the registrations running at once on one machine.

Each run reserves the memory it will need (its working grid's buffers plus a base for torch,
the model and the images) in a small file of a machine-wide folder before its heavy stages,
and gives it back when it ends; a run whose reservation does not fit beside the others' waits
for them (showing it in its progress), up to a limit, and is then refused with one line (exit
code 3). A run that dies leaves a file that names a dead process: it is ignored and removed.
So a second run started from Slicer, a batch's workers or two shells never overcommit
together. The budget is 90 % of the physical memory (``SAMREG_MEMORY_BUDGET_MB`` to choose);
the wait is at most ten minutes (``SAMREG_MEMORY_WAIT_S``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import psutil

from .errors import ResourceError
from .io_atomic import file_lock, write_json_atomic

BUDGET_ENV = "SAMREG_MEMORY_BUDGET_MB"
WAIT_ENV = "SAMREG_MEMORY_WAIT_S"
DEFAULT_WAIT_S = 600.0
#: torch, the model and the images of a run, beside its working grid (a small pair peaks near 0.6 GB)
BASE_BYTES = 1 << 30
POLL_S = 1.0

log = logging.getLogger(__name__)


def folder() -> Path:
    return Path(tempfile.gettempdir()) / "samreg-memory"


def budget_bytes() -> int:
    value = os.environ.get(BUDGET_ENV)
    if value:
        try:
            return int(float(value) * 2**20)
        except ValueError:
            raise ResourceError(f"{BUDGET_ENV} must be a number of megabytes, got {value!r}") from None
    return int(0.9 * psutil.virtual_memory().total)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # someone else's live process
        return True
    return True


def held_by_others(mine: Optional[Path] = None) -> tuple[int, int]:
    """(runs, bytes) reserved by live runs other than ``mine``; dead runs' files are removed."""
    runs = total = 0
    for path in folder().glob("*.json"):
        if path == mine:
            continue
        try:
            entry = json.loads(path.read_text())
            pid, nbytes = int(entry["pid"]), int(entry["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            continue                # being written, or not ours
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        runs, total = runs + 1, total + nbytes
    return runs, total


@contextlib.contextmanager
def reservation(nbytes: int, waiting: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold ``nbytes`` of the machine's budget for the block, waiting while others hold too much;
    ``waiting(message)`` is called while waiting (a progress report, which may cancel)."""
    budget = budget_bytes()
    gb = lambda n: f"{n / 2**30:.1f} GB"  # noqa: E731
    if nbytes > budget:
        raise ResourceError(f"not enough memory: this run needs about {gb(nbytes)}, more than the memory "
                            f"budget of {gb(budget)}; use a coarser --spacing")
    wait_s = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
    mine = folder() / f"{os.getpid()}-{secrets.token_hex(4)}.json"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with file_lock(folder() / ".lock"):
                runs, held = held_by_others(mine)
                if held + nbytes <= budget:
                    write_json_atomic({"pid": os.getpid(), "bytes": nbytes, "since": time.time()}, mine)
                    break
        except OSError as exc:      # no writable temporary folder: run unreserved rather than not at all
            log.warning("memory reservations are unavailable (%s); running without one", exc)
            yield
            return
        if time.monotonic() >= deadline:
            raise ResourceError(f"not enough memory: {runs} other samreg run(s) hold {gb(held)} of the "
                                f"{gb(budget)} budget and this run needs {gb(nbytes)}; wait for them to finish "
                                f"(or set {BUDGET_ENV})")
        if waiting is not None:
            waiting(f"waiting for memory: {runs} other run(s) hold {gb(held)} of {gb(budget)}")
        time.sleep(POLL_S)
    try:
        yield
    finally:
        mine.unlink(missing_ok=True)
