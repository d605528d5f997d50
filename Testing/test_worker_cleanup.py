"""A failed or cancelled worker removes only its own outputs: files that someone else saves in the
output folder or beside it while the job runs survive (real ``samreg worker`` processes)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import OUTPUT_FILES, parse_events, start_worker, write_job, write_pair

pytestmark = pytest.mark.slow      # real worker runs that must reach the optimise and write stages

# saved by "someone else" while the job runs: one in the output folder, two beside it whose
# names contain the output folder's name
OTHERS = {"out/notes.txt": "my notes", "layout_notes.txt": "layout", "out-notes.txt": "more notes"}


class EventReader:
    """Collect the worker's stdout lines in a thread; :meth:`wait_for` a progress stage."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._stages: set[str] = set()
        self._changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                for event in parse_events(line):
                    if event["event"] == "progress":
                        self._stages.add(event["stage"])
                self._changed.notify_all()
        with self._changed:
            self._stages.add("<eof>")
            self._changed.notify_all()

    def wait_for(self, stage: str, timeout: float = 300) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: stage in self._stages or "<eof>" in self._stages, timeout), \
                f"no {stage!r} progress event"
            assert stage in self._stages, f"worker ended before {stage!r}: {self.lines[-3:]}"

    def events(self) -> list[dict]:
        self.thread.join(10)
        return parse_events("".join(self.lines))


def save_others(root: Path) -> None:
    for name, text in OTHERS.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(text)


def assert_others_survive(root: Path) -> None:
    for name, text in OTHERS.items():
        assert (root / name).is_file(), f"{name}, saved by someone else during the run, was deleted"
        assert (root / name).read_text() == text, name


def leftovers(root: Path) -> list[str]:
    """Staging folders and temp files of the run anywhere below ``root``."""
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.startswith(".samreg-staging-") or p.name.startswith(".tmp-")]


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.stderr.read()


def test_cancelled_run_keeps_files_saved_by_others(tmp_path):
    write_pair(tmp_path / "in", with_segs=False)
    # many iterations so the job is still optimising when the signal arrives
    job = write_job(tmp_path, settings={"encoder": "mind", "method_params": {"iterations": 100000}, "use_cache": False})
    proc = start_worker(job)
    reader = EventReader(proc)
    reader.wait_for("optimise")
    assert proc.poll() is None, "job finished before it could be cancelled"
    save_others(tmp_path)                   # creates out/ too: the run has not written there yet
    proc.send_signal(signal.SIGTERM)
    stderr = finish(proc, 30)
    assert proc.returncode == 130, stderr
    assert reader.events()[-1] == {"event": "error", "kind": "Cancelled", "message": "cancelled"}
    assert_others_survive(tmp_path)
    assert sorted(os.listdir(tmp_path / "out")) == ["notes.txt"]
    assert not leftovers(tmp_path)
    assert not [name for name in OUTPUT_FILES if (tmp_path / "out" / name).exists()]


def test_run_failing_while_moving_outputs_keeps_others_and_removes_its_own(tmp_path):
    write_pair(tmp_path / "in", with_segs=False)
    out = tmp_path / "out"
    # moving report.json into place fails (a file cannot replace a non-empty folder) after
    # displacement.nrrd, jacobian.nii.gz and qc.png (sorted before it) were moved already
    (out / "report.json").mkdir(parents=True)
    (out / "report.json" / "inside.txt").write_text("a folder that was there before")
    # enough iterations that the files below are saved before the write stage begins
    job = write_job(tmp_path, settings={"encoder": "mind", "method_params": {"iterations": 800}, "use_cache": False})
    proc = start_worker(job)
    reader = EventReader(proc)
    reader.wait_for("optimise")
    save_others(tmp_path)
    stderr = finish(proc, 300)
    events = reader.events()
    assert proc.returncode != 0, stderr
    error = events[-1]
    assert error["event"] == "error", error
    # an OSError while moving outputs: the outputs could not be written (exit 5), one line
    assert proc.returncode == 5 and error["kind"] == "OutputError", (error, stderr)
    assert "report.json" in error["message"] and "Traceback" not in stderr and "\n" not in error["message"]
    assert any(e.get("stage") == "write" for e in events), "the job did not reach the write stage"
    assert_others_survive(tmp_path)
    assert (out / "report.json" / "inside.txt").read_text() == "a folder that was there before"
    moved_before_the_failure = ("displacement.nrrd", "jacobian.nii.gz", "qc.png")
    assert not [name for name in moved_before_the_failure if (out / name).exists()]
    assert sorted(os.listdir(out)) == ["notes.txt", "report.json"]
    assert not leftovers(tmp_path)
