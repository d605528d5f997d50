"""``samreg worker --job JOB.json``: the JSON event stream, errors and cancellation (SIGTERM)."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import STAGES, digest, parse_events, run_worker, start_worker, write_job


def test_event_stream_and_report(tmp_path, phantom_pair):
    files = phantom_pair
    job = write_job(tmp_path, fixed_seg="in/fixed_seg.nii.gz", moving_seg="in/moving_seg.nii.gz",
                    labels=[1, 2, 3])
    before = digest(tmp_path / "in")
    status, events, stderr = run_worker(job)
    assert status == 0, stderr
    assert events[0]["event"] == "started" and events[0]["pid"] > 0 and events[0]["version"]
    assert events[-1]["event"] == "done", events[-1]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, "no progress events"
    for e in progress:
        assert set(e) >= {"stage", "fraction", "message", "overall"}
        assert 0.0 <= e["fraction"] <= 1.0 and 0.0 <= e["overall"] <= 1.0
    # stages appear in pipeline order and the overall fraction never goes back
    order = [STAGES.index(e["stage"]) for e in progress if e["stage"] in STAGES]
    assert order == sorted(order) and set(order) == set(range(len(STAGES)))
    overall = [e["overall"] for e in progress]
    assert overall == sorted(overall)
    done = events[-1]
    out = tmp_path / "out"
    assert Path(done["output_dir"]) == out.absolute()
    assert Path(done["report"]).is_file() and Path(done["report"]) == out.absolute() / "report.json"
    assert isinstance(done["metrics"], dict) and "dice_mean" in done["metrics"]
    assert digest(tmp_path / "in") == before
    assert files["fixed"].is_file()


def test_missing_file_gives_error_event(tmp_path, phantom_images):
    job = write_job(tmp_path, moving="in/does_not_exist.nii.gz")
    status, events, stderr = run_worker(job, timeout=120)
    assert status != 0
    assert events[0]["event"] == "started"
    error = events[-1]
    assert error["event"] == "error" and error["kind"] == "InputError"
    assert "does_not_exist.nii.gz" in error["message"] and "\n" not in error["message"]
    assert not (tmp_path / "out").exists()


def test_bad_job_files(tmp_path, phantom_images):
    job = write_job(tmp_path, settings={"encoder": "mind", "no_such_setting": 1})
    status, events, _ = run_worker(job, timeout=120)
    assert status == 2 and events[-1]["kind"] == "InputError" and "no_such_setting" in events[-1]["message"]

    job.write_text("{not json")
    status, events, _ = run_worker(job, timeout=120)
    assert status == 2 and events[-1]["event"] == "error" and events[-1]["kind"] == "InputError"

    status, events, _ = run_worker(tmp_path / "nope.json", timeout=120)
    assert status == 2 and "nope.json" in events[-1]["message"]


@pytest.mark.parametrize("settings, words", [
    ({"method_params": {"itertions": 5}}, ("unknown setting 'method_params.itertions'", "known:", "iterations")),
    ({"method_params": {"iterations": "fifty"}}, ("setting 'method_params.iterations'", "'fifty'")),
    ({"method": "pyramid", "method_params": {"radii": [2, 3]}}, ("method_params", "equal length")),
    ({"encoder": "litemedsam", "encoder_params": {"pca_dims": 0}}, ("setting 'encoder_params.pca_dims'", "greater than or equal to 1")),
    ({"encoder_params": {"pca_dims": 8}}, ("unknown setting 'encoder_params.pca_dims'", "known: mind_dilation")),
    ({"spacing": -1.5}, ("setting 'spacing'", "greater than 0")),
])
def test_bad_settings_in_a_job_file_are_one_line(tmp_path, phantom_images, settings, words):
    status, events, stderr = run_worker(write_job(tmp_path, settings={"encoder": "mind", **settings}), timeout=120)
    assert status == 2 and events[-1]["kind"] == "InputError", events[-1]
    message = events[-1]["message"]
    assert all(w in message for w in words) and "\n" not in message, message
    assert "Traceback" not in stderr


def test_unknown_encoder_error_event(tmp_path, phantom_images):
    job = write_job(tmp_path, settings={"encoder": "no-such-encoder"})
    status, events, _ = run_worker(job, timeout=120)
    assert status == 2
    assert events[-1]["kind"] == "InputError" and "no-such-encoder" in events[-1]["message"]


def test_sigterm_cancels_cleanly(tmp_path, phantom_images):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("pre-existing")
    # many iterations so the job is still running when the signal arrives
    job = write_job(tmp_path, settings={"encoder": "mind", "method_params": {"iterations": 100000}, "use_cache": False})
    before = sorted(os.listdir(out))
    proc = start_worker(job)
    lines: list[str] = []
    saw_progress = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if '"progress"' in line and '"load"' not in line:
                saw_progress.set()
        saw_progress.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert saw_progress.wait(300), "no progress event"
    assert proc.poll() is None, "job finished before it could be cancelled"
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - sent
    reader.join(5)
    stderr = proc.stderr.read()
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert proc.returncode == 130, stderr
    events = parse_events("".join(lines))
    assert events[-1] == {"event": "error", "kind": "Cancelled", "message": "cancelled"}
    assert sorted(os.listdir(out)) == before
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == ["out"]


def test_worker_stdout_only_json_even_with_prints(tmp_path, monkeypatch, phantom_images):
    """In-process: stray prints from the pipeline go to stderr, stdout carries only events."""
    from SAMRegistrationLib import pipeline
    job = write_job(tmp_path)

    def fake_register(inputs, settings, progress=None, cancel=None, ledger=None):
        print("noise from the pipeline")
        for stage in STAGES:
            progress(stage, 0.5, stage)
        ledger.make_dirs(inputs.output_dir)
        (Path(inputs.output_dir) / "report.json").write_text("{}")
        ledger.record_file(Path(inputs.output_dir) / "report.json")
        (tmp_path / "out-by-someone-else.txt").write_text("not the job's")
        return {"metrics": {"dice_mean": 0.7, "fold_percent": 0.0, "initial": {"dice_mean": 0.4}}}

    monkeypatch.setattr(pipeline, "register", fake_register)
    status, text = _capture_run(job)
    assert status == 0
    events = parse_events(text)
    assert "noise" not in text
    assert events[-1]["metrics"] == {"dice_mean": 0.7, "dice_mean_initial": 0.4, "fold_percent": 0.0}
    assert (tmp_path / "out" / "report.json").is_file()
    assert (tmp_path / "out-by-someone-else.txt").read_text() == "not the job's"


def _capture_run(job: Path) -> tuple[int, str]:
    """Run ``worker.run_job`` in this process with fd 1 captured through a pipe: (status, stdout)."""
    from SAMRegistrationLib import worker

    read_fd, write_fd = os.pipe()
    saved, saved_stdout = os.dup(1), sys.stdout
    try:
        os.dup2(write_fd, 1)
        status = worker.run_job(job)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = saved_stdout
        os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        return status, pipe.read()


def _run_in_process(job: Path) -> tuple[int, list[dict]]:
    status, text = _capture_run(job)
    return status, parse_events(text)


@pytest.mark.parametrize("exc, kind, status", [
    (ValueError("a bug"), "InternalError", 1),
    (MemoryError(), "ResourceError", 3),
    (RuntimeError("CUDA out of memory"), "ResourceError", 3),
])
def test_failures_are_classified_and_cleaned(tmp_path, monkeypatch, exc, kind, status, phantom_images):
    from SAMRegistrationLib import pipeline
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    job = write_job(tmp_path)

    def fake_register(inputs, settings, progress=None, cancel=None, ledger=None):
        progress("load", 1.0, "")
        ledger.make_dirs(out)
        staging = ledger.make_staging(out)
        (staging / "half.nii.gz").write_bytes(b"x")
        (staging / "partial.nii.gz").write_bytes(b"x")
        ledger.replace(staging / "partial.nii.gz", out / "partial.nii.gz")
        (out / "someone-else.txt").write_text("not the job's")          # not recorded: stays
        (tmp_path / "out-by-someone-else.txt").write_text("not the job's")
        raise exc

    monkeypatch.setattr(pipeline, "register", fake_register)
    code, events = _run_in_process(job)
    assert code == status
    assert events[-1]["event"] == "error" and events[-1]["kind"] == kind
    assert "\n" not in events[-1]["message"]
    assert sorted(os.listdir(out)) == ["old.txt", "someone-else.txt"]
    assert (out / "old.txt").read_text() == "keep me"
    assert (tmp_path / "out-by-someone-else.txt").read_text() == "not the job's"


@pytest.mark.parametrize("report, expected", [
    ({"metrics": {"dice_mean": 0.8, "tre_mean_mm": 2.0, "initial": {"dice_mean": 0.5, "tre_mean_mm": 9.0}}},
     {"dice_mean": 0.8, "dice_mean_initial": 0.5, "tre_mean_mm": 2.0, "tre_mean_mm_initial": 9.0}),
    # read from the report's layout only: no guessing from names such as "before" or "_std"
    ({"metrics": {"dice_mean": 0.8, "dice_mean_std": 0.1, "fold_percent": 0.2, "affine": {"dice_mean": 0.7}},
      "before": {"dice_mean": 0.6}, "dice_mean_initial": 0.5},
     {"dice_mean": 0.8, "fold_percent": 0.2}),
    ({}, {}),
    ("not a report", {}),
])
def test_key_metrics(report, expected):
    from SAMRegistrationLib.worker import key_metrics
    assert key_metrics(report) == expected
