"""``samreg batch``: the pairs table, the queue job scripts, the shared feature cache under
concurrent processes, and real Dask LocalClusters (two workers) running, losing a worker,
being killed and resuming."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

from helpers import REPO, assert_user_error, samreg
from phantom import phantom, smooth_field, warped_by

from SAMRegistrationLib.batch.cluster import ClusterOptions, default_workers, job_script
from SAMRegistrationLib.batch.table import load_pairs
from SAMRegistrationLib.errors import InputError

FIELDS = ("displacement.nrrd", "warped.nii.gz", "jacobian.nii.gz", "warped_seg.nii.gz")


# ----------------------------------------------------------------------------- data
def make_cohort(folder: Path, count: int, size=(40, 40, 30), bad_row: bool = False) -> Path:
    """One template (fixed) and ``count`` smooth deformations of it with label maps; a table."""
    folder.mkdir(parents=True, exist_ok=True)
    template = phantom(size=size, spacing=(2.0, 2.0, 2.5), seed=3)
    labels = sitk.Cast(sitk.BinaryThreshold(template, 450, 5000, 2, 0)
                       + sitk.BinaryThreshold(template, 100, 450, 1, 0), sitk.sitkUInt8)
    sitk.WriteImage(template, str(folder / "template.nii.gz"))
    sitk.WriteImage(labels, str(folder / "template_seg.nii.gz"))
    rows = [["id", "fixed", "moving", "fixed_seg", "moving_seg"]]
    for i in range(count):
        field = smooth_field(template, amplitude_mm=3.0, seed=10 + i)
        sitk.WriteImage(warped_by(template, field), str(folder / f"subject{i}.nii.gz"))
        seg = sitk.Resample(labels, labels, sitk.DisplacementFieldTransform(sitk.Image(field)),
                            sitk.sitkNearestNeighbor, 0)
        sitk.WriteImage(seg, str(folder / f"subject{i}_seg.nii.gz"))
        rows.append([f"s{i}", "template.nii.gz", f"subject{i}.nii.gz", "template_seg.nii.gz", f"subject{i}_seg.nii.gz"])
    if bad_row:
        rows.append(["missing", "template.nii.gz", "no_such_subject.nii.gz", "", ""])
    with (folder / "pairs.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return folder / "pairs.csv"


def arrays(folder: Path) -> dict[str, np.ndarray]:
    return {name: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))
            for name in FIELDS if (folder / name).is_file()}


def summary(out: Path) -> dict[str, dict]:
    with (out / "summary.csv").open() as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / ".samreg-batch" / "records").glob("*.json")}


BATCH = ("--encoder", "mind", "--threads", "1", "--workers", "2", "-q")


# ----------------------------------------------------------------------------- table
def test_table_rows_become_register_commands(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    sitk.WriteImage(phantom(size=(12, 12, 10)), str(tmp_path / "f.nii.gz"))
    sitk.WriteImage(phantom(size=(12, 12, 10), seed=1), str(tmp_path / "m.nii.gz"))
    (tmp_path / "pairs.csv").write_text(
        "Fixed,moving,method,options\n"
        "f.nii.gz,m.nii.gz,convexadam,--no-affine --spacing 4\n"
        "f.nii.gz,m.nii.gz,,\n"
        "f.nii.gz,gone.nii.gz,,\n"
        "f.nii.gz,m.nii.gz,,--iterations -3\n")
    pairs = load_pairs(tmp_path / "pairs.csv", tmp_path / "out", {"encoder": "mind", "method": "pyramid"})
    assert [p.pair_id for p in pairs] == ["m", "m-2", "gone", "m-3"]
    first, second, missing, bad = pairs
    assert first.settings.method == "convexadam" and first.settings.affine is False and first.settings.spacing == 4
    assert second.settings.method == "pyramid" and second.settings.encoder == "mind"   # the batch's options
    assert Path(first.inputs.fixed) == tmp_path / "f.nii.gz"                           # relative to the table
    assert Path(second.inputs.output_dir) == tmp_path / "out" / "m-2"
    assert missing.error and "row 3" in missing.error and "gone.nii.gz" in missing.error
    assert bad.error and "row 4" in bad.error and "iterations" in bad.error
    (tmp_path / "bad.csv").write_text("fixed,moving,colour\nf.nii.gz,m.nii.gz,red\n")
    with pytest.raises(InputError, match="unknown column 'colour'"):
        load_pairs(tmp_path / "bad.csv", tmp_path / "out", {})
    (tmp_path / "dup.csv").write_text("id,fixed,moving\nx,f.nii.gz,m.nii.gz\nx,f.nii.gz,m.nii.gz\n")
    with pytest.raises(InputError, match="used twice"):
        load_pairs(tmp_path / "dup.csv", tmp_path / "out", {})


def test_bad_table_is_one_line(tmp_path):
    assert_user_error(samreg("batch", tmp_path / "nope.csv", "-o", tmp_path / "out"), "not found")
    (tmp_path / "empty.csv").write_text("fixed,moving\n")
    assert_user_error(samreg("batch", tmp_path / "empty.csv", "-o", tmp_path / "out"), "no pairs")
    assert not (tmp_path / "out").exists()


def test_local_workers_do_not_oversubscribe():
    assert default_workers(cores=2, memory_gb=24, pairs=20) == 2
    assert default_workers(cores=16, memory_gb=128, pairs=20) == 16
    assert default_workers(cores=16, memory_gb=12, pairs=20) == 3      # memory bound
    assert default_workers(cores=64, memory_gb=512, pairs=5) == 5      # never more than pairs
    assert default_workers(cores=1, memory_gb=2, pairs=5) == 1


# ----------------------------------------------------------------------------- queue job scripts
@pytest.mark.parametrize("queue,expected", [
    ("slurm", ["#SBATCH --cpus-per-task=8", "#SBATCH --mem=30G", "#SBATCH -t 04:30:00", "#SBATCH --gres=gpu:2",
               "#SBATCH -p gpuq", "#SBATCH -A lab42"]),
    ("pbs", ["#PBS -l select=1:ncpus=8:ngpus=2:mem=32GB", "#PBS -l walltime=04:30:00", "#PBS -q gpuq",
             "#PBS -A lab42"]),
    ("sge", ["#$ -l h_rt=04:30:00", "#$ -l gpu=2", "#$ -q gpuq", "#$ -P lab42"]),
    ("lsf", ["#BSUB -n 8", "#BSUB -W 04:30", '#BSUB -gpu "num=2"', "#BSUB -q gpuq", '#BSUB -P "lab42"']),
])
def test_queue_job_scripts_request_the_resources(queue, expected):
    options = ClusterOptions(queue_system=queue, cores=8, memory="32GB", walltime="04:30:00", gpus=2,
                             queue="gpuq", account="lab42", prologue=["source /opt/samreg/bin/activate"],
                             job_directives=["--comment=cohort"] if queue == "slurm" else [])
    script = job_script(options)
    for line in expected:
        assert line in script, (line, script)
    assert "source /opt/samreg/bin/activate" in script
    # the nanny must not slow torch down (MALLOC_TRIM_THRESHOLD_ unset, 8 OpenMP threads)
    assert "export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=\"{'MALLOC_TRIM_THRESHOLD_': None, " \
           "'OMP_NUM_THREADS': '8'" in script
    worker = next(line for line in script.splitlines() if "dask_worker" in line or "dask-worker" in line)
    assert "--nthreads 8" in worker and "--resources pair=1" in worker      # one pair at a time, 8 threads
    assert "--preload SAMRegistrationLib.batch.worker_setup" in worker
    if queue == "slurm":
        assert "#SBATCH --comment=cohort" in script


def test_print_job_script_and_option_conflicts(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("fixed,moving\na,b\n")
    result = samreg("batch", table, "-o", tmp_path / "out", "--cluster", "slurm", "--cores", "6",
                    "--memory", "20GB", "--walltime", "01:00:00", "--print-job-script")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --cpus-per-task=6" in result.stdout and "#SBATCH -t 01:00:00" in result.stdout
    assert not (tmp_path / "out").exists()
    assert_user_error(samreg("batch", table, "-o", tmp_path / "out", "--cluster", "pbs", "--scheduler",
                             "tcp://127.0.0.1:1"), "exclude")


# ----------------------------------------------------------------------------- shared feature cache
def _encode_once(cache: str, counter: str, seed_image: str) -> float:
    """Ask the cache for the same volume's stack; count how often it is really computed."""
    import torch

    from SAMRegistrationLib.features.slicewise import FeatureStack, cached_stack
    from SAMRegistrationLib.grid import Grid
    from SAMRegistrationLib.settings import Settings

    image = sitk.ReadImage(seed_image)

    def make():
        with open(counter, "a") as handle:
            handle.write("encoded\n")
        time.sleep(1.5)            # long enough for the other process to ask meanwhile
        return FeatureStack(Grid.from_image(image), torch.ones(2, *image.GetSize()[::-1]),
                            torch.ones(*image.GetSize()[::-1], dtype=torch.bool))

    stack, _ = cached_stack(image, "probe", "v1", 2, 1, Settings(cache_dir=cache), make)
    return float(stack.features.sum())


def test_concurrent_processes_encode_a_shared_volume_once(tmp_path):
    sitk.WriteImage(phantom(size=(10, 9, 8)), str(tmp_path / "atlas.nii.gz"))
    counter = tmp_path / "count.txt"
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        sums = list(pool.map(_encode_once, [str(tmp_path / "cache")] * 3, [str(counter)] * 3,
                             [str(tmp_path / "atlas.nii.gz")] * 3))
    assert counter.read_text().count("encoded") == 1
    assert sums == [2 * 10 * 9 * 8] * 3
    entries = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and entries[0].startswith("probe-")        # one entry, no temp files left


# ----------------------------------------------------------------------------- real local clusters
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six pairs sharing one template, run once uninterrupted: the reference outputs."""
    folder = tmp_path_factory.mktemp("cohort")
    table = make_cohort(folder, 6, bad_row=True)
    out = folder / "reference"
    result = samreg("batch", table, "-o", out, "--cache-dir", folder / "cache", *BATCH, timeout=900)
    return {"table": table, "folder": folder, "reference": out, "result": result}


def test_batch_runs_every_pair_and_summarises(cohort):
    result, out = cohort["result"], cohort["reference"]
    assert result.returncode == 4, result.stderr[-3000:]          # one bad row: the others still ran
    assert "Traceback" not in result.stderr
    rows = summary(out)
    assert [rows[f"s{i}"]["status"] for i in range(6)] == ["ok"] * 6
    assert rows["missing"]["status"] == "failed" and "no_such_subject.nii.gz" in rows["missing"]["error"]
    assert "\n" not in rows["missing"]["error"]
    for i in range(6):
        assert float(rows[f"s{i}"]["dice_mean"]) > float(rows[f"s{i}"]["dice_mean_initial"])
        assert sorted(p.name for p in (out / f"s{i}").iterdir()) == sorted(
            ["displacement.nrrd", "jacobian.nii.gz", "qc.png", "report.json", "warped.nii.gz", "warped_seg.nii.gz"])
    assert (out / "summary.png").stat().st_size > 5000
    info = json.loads((out / "batch.json").read_text())
    assert info["status"]["ok"] == 6 and info["status"]["failed"] == 1
    assert "2 worker(s) x 1 thread(s)" in info["cluster"]


def test_a_batch_pair_equals_samreg_register(cohort, tmp_path):
    folder = cohort["folder"]
    single = tmp_path / "single"
    result = samreg("register", folder / "template.nii.gz", folder / "subject2.nii.gz", "-o", single,
                    "--fixed-seg", folder / "template_seg.nii.gz", "--moving-seg", folder / "subject2_seg.nii.gz",
                    "--encoder", "mind", "--threads", "1", "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    batch, alone = arrays(cohort["reference"] / "s2"), arrays(single)
    assert batch.keys() == alone.keys()
    for name in batch:
        np.testing.assert_array_equal(batch[name], alone[name], err_msg=name)


def test_rerun_skips_done_pairs_and_retries_failed(cohort, tmp_path):
    out = cohort["reference"]
    before = {i: (out / f"s{i}" / "displacement.nrrd").stat().st_mtime_ns for i in range(6)}
    result = samreg("batch", cohort["table"], "-o", out, "--cache-dir", cohort["folder"] / "cache", *BATCH)
    assert result.returncode == 4, result.stderr[-2000:]
    assert "7 pair(s): 0 to run, 6 done earlier, 1 with a bad row" in result.stdout
    assert {i: (out / f"s{i}" / "displacement.nrrd").stat().st_mtime_ns for i in range(6)} == before
    assert all(row["this_run"] == "no" for row in summary(out).values())


def _worker_processes(driver: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in driver.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_worker_killed_then_batch_killed_then_resumed(cohort, tmp_path):
    table, out, cache = cohort["table"], tmp_path / "interrupted", cohort["folder"] / "cache"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    driver_process = subprocess.Popen(
        [sys.executable, "-m", "SAMRegistrationLib.cli", "batch", str(table), "-o", str(out), "--cache-dir",
         str(cache), *BATCH], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True)
    driver = psutil.Process(driver_process.pid)
    try:
        ok_records = lambda: [r for r in records(out).values() if r["status"] == "ok"] if out.exists() else []
        _wait_for(lambda: len(ok_records()) >= 1, 300, "the first pair")
        victims = _worker_processes(driver)
        assert len(victims) == 2, "a LocalCluster of two worker processes"
        environment = victims[0].environ()
        assert "MALLOC_TRIM_THRESHOLD_" not in environment and environment["OMP_NUM_THREADS"] == "1"
        victims[0].kill()                       # a worker dies mid-batch; Dask restarts it
        done_at_kill = len(ok_records())
        _wait_for(lambda: len(ok_records()) >= done_at_kill + 2, 300, "pairs after the worker died")
        os.killpg(driver_process.pid, signal.SIGKILL)        # then the whole batch is killed
        driver_process.wait(30)
    finally:
        if driver_process.poll() is None:
            os.killpg(driver_process.pid, signal.SIGKILL)
        driver_process.communicate()
    done_before = {r["id"] for r in ok_records()}
    assert 3 <= len(done_before) < 6, done_before
    stamps = {pid: (out / pid / "displacement.nrrd").stat().st_mtime_ns for pid in done_before}

    resumed = samreg("batch", table, "-o", out, "--cache-dir", cache, *BATCH, timeout=900)
    assert resumed.returncode == 4, resumed.stderr[-3000:]
    todo = 6 - len(done_before)
    assert f"7 pair(s): {todo} to run, {len(done_before)} done earlier, 1 with a bad row" in resumed.stdout
    rows = summary(out)
    assert {pid for pid, row in rows.items() if row["this_run"] == "yes"} == \
        {f"s{i}" for i in range(6)} - done_before
    assert all(rows[f"s{i}"]["status"] == "ok" for i in range(6))
    assert {pid: (out / pid / "displacement.nrrd").stat().st_mtime_ns for pid in done_before} == stamps
    for i in range(6):
        pair = out / f"s{i}"
        assert not [p for p in pair.iterdir() if p.name.startswith(".")], "no staging left behind"
        reference, got = arrays(cohort["reference"] / f"s{i}"), arrays(pair)
        assert got.keys() == reference.keys()
        for name in got:
            np.testing.assert_array_equal(got[name], reference[name], err_msg=f"s{i}/{name}")


def test_ctrl_c_cancels_cleanly_and_keeps_done_pairs(cohort, tmp_path):
    table, out = cohort["table"], tmp_path / "cancelled"
    driver = subprocess.Popen(
        [sys.executable, "-m", "SAMRegistrationLib.cli", "batch", str(table), "-o", str(out), "--cache-dir",
         str(cohort["folder"] / "cache"), *BATCH], cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)
    try:
        _wait_for(lambda: out.exists() and any(r["status"] == "ok" for r in records(out).values()), 300,
                  "the first pair")
        os.killpg(driver.pid, signal.SIGINT)        # as Ctrl-C in a terminal: the workers get it too
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "samreg: cancelled" in stderr
    rows = summary(out)
    done = {pid for pid, row in rows.items() if row["status"] == "ok"}
    assert 1 <= len(done) < 6
    for i in range(6):
        pair = out / f"s{i}"
        files = sorted(p.name for p in pair.iterdir()) if pair.exists() else []
        if f"s{i}" in done:
            assert "report.json" in files
        else:       # cancelled or never started: nothing of it is left
            assert files == [], (f"s{i}", files)
