"""One run at a time in an output folder, and the repair of what a killed run left there.

A run holds a lock named after its output folder (in the system's temporary folder, so that
nothing is added to the output folder and it works before that folder exists); a second run
into the same folder is refused at once with one line. While it holds the lock, a run knows
that any staging folder it finds in its output folder belongs to a run that died: one marked
complete was killed while moving its outputs into place, and its move is finished (so the
folder holds that run's whole result, not a mixture); any other is removed.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .io_atomic import file_lock
from .ownership import STAGING_PREFIX

log = logging.getLogger(__name__)

#: the file a staging folder holds once every output is in it
COMPLETE_MARKER = ".complete"


def lock_path(output_dir: Path) -> Path:
    key = hashlib.sha256(str(Path(output_dir).absolute()).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / "samreg-locks" / f"{key}.lock"


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock for the block; another holder is an :class:`InputError`."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(lock_path(output_dir), wait=False))
        except BlockingIOError:
            raise InputError(f"another samreg run is writing into {output_dir}; wait for it to finish "
                             "or choose another output folder") from None
        yield


def recover(output_dir: Path) -> list[str]:
    """Finish or remove what killed runs left in ``output_dir`` (call with its lock held)."""
    done = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return done
    for staging in sorted(output_dir.glob(f"{STAGING_PREFIX}*")):
        if not staging.is_dir():
            continue
        if (staging / COMPLETE_MARKER).is_file():
            for item in sorted(staging.iterdir()):
                if item.name != COMPLETE_MARKER:
                    os.replace(item, output_dir / item.name)
            done.append(f"finished moving the outputs of an interrupted run ({staging.name})")
        else:
            done.append(f"removed the unfinished outputs of an interrupted run ({staging.name})")
        shutil.rmtree(staging, ignore_errors=True)
    for line in done:
        log.warning("%s in %s", line, output_dir)
    return done
