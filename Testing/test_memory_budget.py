"""Several registrations at once share a memory budget checked before their heavy stages:
they wait their turn (saying so), a run that cannot get memory in time is refused with one
line (exit 3), and a dead run's reservation does not block anyone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from helpers import REPO, parse_events, write_pair

from SAMRegistrationLib import memory_budget

#: a phantom run reserves about 1.04 GB (1 GB base and its small grid): one fits, two do not
BUDGET_MB = "1500"


def write_job(folder, name: str) -> str:
    job = {"fixed": "in/fixed.nii.gz", "moving": "in/moving.nii.gz", "output_dir": f"out-{name}",
           "settings": {"encoder": "mind", "threads": 1}}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job))
    return str(path)


def start(folder, name: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "SAMRegistrationLib.cli", "worker", "--job", write_job(folder, name)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(folder / "tmp"),
                                 memory_budget.BUDGET_ENV: BUDGET_MB, **env})


@pytest.fixture
def folder(tmp_path):
    write_pair(tmp_path / "in", with_segs=False)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def test_concurrent_runs_wait_their_turn(folder):
    runs = [start(folder, f"run{i}") for i in range(3)]
    results = [None] * 3

    def collect(i):
        out, err = runs[i].communicate(timeout=600)
        results[i] = (runs[i].returncode, parse_events(out), err)
    threads = [threading.Thread(target=collect, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [code for code, _, _ in results] == [0, 0, 0], [err[-1000:] for _, _, err in results]
    waited = [any("waiting for memory" in e.get("message", "") for e in events) for _, events, _ in results]
    assert sum(waited) >= 1, "with room for one run, the others must have waited"
    assert not list((folder / "tmp" / "samreg-memory").glob("*.json")), "reservations left behind"


def test_a_run_that_cannot_get_memory_in_time_is_refused(folder, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(folder / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setenv(memory_budget.BUDGET_ENV, BUDGET_MB)
    with memory_budget.reservation(int(1.2 * 2**30)):          # another run holds most of the budget
        proc = start(folder, "late", **{memory_budget.WAIT_ENV: "2"})
        out, err = proc.communicate(timeout=300)
    events = parse_events(out)
    assert proc.returncode == 3 and "Traceback" not in err
    assert events[-1]["kind"] == "ResourceError" and "\n" not in events[-1]["message"]
    assert "1 other samreg run(s) hold 1.2 GB" in events[-1]["message"]
    assert any("waiting for memory" in e.get("message", "") for e in events)
    assert not (folder / "out-late").exists()


def test_a_dead_runs_reservation_is_ignored(folder, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    reservations = folder / "tmp" / "samreg-memory"
    reservations.mkdir()
    stale = reservations / f"{dead.pid}-dead.json"
    stale.write_text(json.dumps({"pid": dead.pid, "bytes": 10 * 2**30}))
    proc = start(folder, "alive", **{memory_budget.WAIT_ENV: "0"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert not stale.exists()
