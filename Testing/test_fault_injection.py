"""Faults while a registration runs, through the worker process: SIGKILL at a random moment of
every stage, a kill between two moves of the publishing step, the disk filling up during the
write stage (a real file-size limit, RLIMIT_FSIZE), damaged feature-cache entries and two runs
writing into one folder. After each, the output folder must hold the complete previous result
or a complete new one, never a mixture, and the next run must succeed.

The tally of every trial is printed by the last test (``-s``) for the closing note.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, STAGES, parse_events, run_worker, write_pair

DATA_FILES = ("warped.nii.gz", "displacement.nrrd", "jacobian.nii.gz", "qc.png")
KILLS_PER_STAGE = 3
TALLY: dict = collections.defaultdict(collections.Counter)
#: settings of the "previous" result already in the output folder, and of the new runs
PREVIOUS = {"encoder": "mind", "threads": 1, "method_params": {"iterations": 10}}
NEW = {"encoder": "mind", "threads": 1}


def write_job(folder: Path, out: Path, settings: dict, name: str = "job.json", **extra) -> Path:
    job = {"fixed": "in/fixed.nii.gz", "moving": "in/moving.nii.gz", "output_dir": str(out), "settings": settings,
           "fixed_seg": "in/fixed_seg.nii.gz", "moving_seg": "in/moving_seg.nii.gz", **extra}
    path = folder / name
    path.write_text(json.dumps(job))
    return path


def worker(job: Path, env: dict | None = None, limit_file_bytes: int | None = None) -> subprocess.Popen:
    def limit():            # a full disk, as seen by this process: writes past the limit fail (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))
    return subprocess.Popen([sys.executable, "-m", "SAMRegistrationLib.cli", "worker", "--job", str(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            preexec_fn=limit if limit_file_bytes else None)


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of the visible files (report.json: of its settings and inputs, which identify a run)."""
    found = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.name == "report.json":
            report = json.loads(path.read_text())
            identity = [report["settings"], {k: v for k, v in report["inputs"].items() if k != "output_dir"}]
            found[path.name] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        else:
            found[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """The pair, and the complete 'previous' and 'new' results of two uninterrupted runs."""
    root = tmp_path_factory.mktemp("faults")
    write_pair(root / "in")
    found = {"root": root}
    for name, settings in (("previous", PREVIOUS), ("new", NEW)):
        code, events, stderr = run_worker(write_job(root, root / name, settings, f"{name}.json"))
        assert code == 0, stderr[-2000:]
        found[name] = digests(root / name)
    assert found["previous"]["displacement.nrrd"] != found["new"]["displacement.nrrd"]
    return found


def fresh_output(results: dict, name: str) -> Path:
    """A folder holding a copy of the previous complete result."""
    out = results["root"] / name
    out.mkdir()
    for path in (results["root"] / "previous").iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


def state(results: dict, out: Path) -> str:
    now = digests(out)
    if now == results["previous"]:
        return "previous result"
    if now == results["new"]:
        return "new result"
    raise AssertionError(f"a mixture in {out}: {sorted(now)}")


def staging_left(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".samreg-staging-"))


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_at_a_random_moment_of_each_stage(results, stage):
    rng = random.Random(stage)
    for trial in range(KILLS_PER_STAGE):
        out = fresh_output(results, f"kill-{stage}-{trial}")
        proc = worker(write_job(results["root"], out, NEW, f"kill-{stage}-{trial}.json"))
        seen = []
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("event") == "progress":
                seen.append(event["stage"])
                if event["stage"] == stage:
                    time.sleep(rng.uniform(0.0, 0.15))
                    break
        proc.kill()
        proc.communicate()
        assert stage in seen, f"the run ended before stage {stage}: {seen}"
        left = state(results, out)
        TALLY[f"SIGKILL in {stage}"][f"{left}{' + staging' if staging_left(out) else ''}"] += 1
        # the next run into the folder succeeds, finishes or removes what the killed one left
        code, _, stderr = run_worker(write_job(results["root"], out, NEW, f"next-{stage}-{trial}.json"))
        assert code == 0, stderr[-2000:]
        assert state(results, out) == "new result" and not staging_left(out)


@pytest.mark.parametrize("moves", [1, 3])
def test_kill_between_two_moves_is_finished_by_the_next_run(results, moves):
    out = fresh_output(results, f"publish-{moves}")
    proc = worker(write_job(results["root"], out, NEW, f"publish-{moves}.json"),
                  env={"SAMREG_FAULT_KILL_AFTER_MOVES": str(moves)})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert staging_left(out), "the killed run's staging folder is still there"
    with pytest.raises(AssertionError, match="mixture"):
        state(results, out)                  # the instant after the kill: part old, part new
    # the next run, even one that fails at once (a label absent from the label maps), finishes the move first
    code, events, _ = run_worker(write_job(results["root"], out, NEW, "bad.json", labels=[9]))
    assert code == 2 and events[-1]["event"] == "error" and "label 9" in events[-1]["message"]
    assert state(results, out) == "new result" and not staging_left(out)
    TALLY["SIGKILL between two moves"]["new result after the next run"] += 1


@pytest.mark.parametrize("limit_kb", [8, 40, 120])
def test_disk_full_during_the_write_stage(results, limit_kb):
    out = fresh_output(results, f"full-{limit_kb}")
    proc = worker(write_job(results["root"], out, NEW, f"full-{limit_kb}.json"), limit_file_bytes=limit_kb * 1024)
    stdout, stderr = proc.communicate(timeout=300)
    events = parse_events(stdout)
    assert proc.returncode == 5, (proc.returncode, events[-1:], stderr[-2000:])
    assert "Traceback" not in stderr
    last = events[-1]
    assert last["event"] == "error" and last["kind"] == "OutputError" and "\n" not in last["message"]
    assert "cannot write the outputs" in last["message"]
    assert state(results, out) == "previous result" and not staging_left(out)
    TALLY["disk full in the write stage"]["previous result"] += 1
    code, _, stderr = run_worker(write_job(results["root"], out, NEW, f"after-full-{limit_kb}.json"))
    assert code == 0 and state(results, out) == "new result", stderr[-2000:]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
          "bits flipped": _flip,
          "emptied": lambda p: p.write_bytes(b""),
          "replaced by garbage": lambda p: p.write_bytes(os.urandom(5000))}


def test_damaged_cache_entries_are_detected_and_encoded_again(results, tmp_path):
    cache = tmp_path / "cache"
    settings = {"encoder": "litemedsam", "threads": 1, "cache_dir": str(cache)}

    def run(name: str) -> tuple[dict, dict]:
        out = tmp_path / name
        code, _, stderr = run_worker(write_job(results["root"], out, settings, f"{name}.json"))
        assert code == 0, stderr[-2000:]
        report = json.loads((out / "report.json").read_text())
        return report["resolved"]["encoder"], digests(out)

    info, reference = run("first")
    assert info["fixed"]["cache_hit"] is False and info["moving"]["cache_hit"] is False
    entries = sorted(p for p in cache.iterdir() if p.suffix == ".pt")
    assert len(entries) == 2
    for name, damage in DAMAGE.items():
        damage(entries[0])
        info, outputs = run(name.replace(" ", "-"))
        assert sorted(info[side]["cache_hit"] for side in ("fixed", "moving")) == [False, True], name
        assert {k: v for k, v in outputs.items() if k != "report.json"} == \
            {k: v for k, v in reference.items() if k != "report.json"}, name
        info, _ = run(name.replace(" ", "-") + "-again")           # the entry was replaced by a good one
        assert info["fixed"]["cache_hit"] is True and info["moving"]["cache_hit"] is True, name
        TALLY["damaged cache entry"][f"{name}: detected, encoded again, same outputs"] += 1


def test_two_runs_into_one_folder_never_interleave(results):
    for trial in range(3):
        out = fresh_output(results, f"concurrent-{trial}")
        first = worker(write_job(results["root"], out, NEW, f"first-{trial}.json"))
        for line in first.stdout:           # wait until the first one is under way
            if json.loads(line).get("event") == "progress":
                break
        second = worker(write_job(results["root"], out, NEW, f"second-{trial}.json"))
        second_out, _ = second.communicate(timeout=300)
        first.communicate(timeout=300)
        assert first.returncode == 0
        assert second.returncode == 2
        message = parse_events(second_out)[-1]["message"]
        assert "another samreg run is writing into" in message
        assert state(results, out) == "new result" and not staging_left(out)
        TALLY["two runs into one folder"]["second refused, first complete"] += 1


def test_print_tally():
    for trial, outcomes in TALLY.items():
        print(f"{trial:<32} {sum(outcomes.values()):>3} trial(s): " +
              ", ".join(f"{k} {v}" for k, v in outcomes.items()))
