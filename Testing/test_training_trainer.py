"""The training loop on the tests' tiny learned task: the loss falls, the run folder holds what
it should, a killed run resumes to the weights of an uninterrupted one, other settings are refused."""
from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from SAMRegistrationLib.errors import CheckpointError, InputError
from SAMRegistrationLib.training.checkpointing import read_model
from SAMRegistrationLib.training.config import TrainConfig
from SAMRegistrationLib.training.dataset import load_dataset
from SAMRegistrationLib.training.trainer import train
from helpers import REPO
from training_data import write_dataset
from training_task import TinyParams, TinyTask

LAUNCHER = Path(__file__).resolve().parent / "train_cli.py"


def _config(**changes) -> TrainConfig:
    values = {"grid_size": [16, 16, 16], "steps": 8, "batch": 1, "lr": 3e-3, "val_every": 4,
              "checkpoint_every": 4, "threads": 1, "device": "cpu", "seed": 0}
    return TrainConfig.parse({**values, **changes})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_the_loss_falls_on_a_real_pair(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "data", volumes=0, label_maps=0, pairs=1, validation=1))
    result = train(TinyTask(TinyParams(channels=8)), dataset, tmp_path / "run",
                   _config(steps=40, val_every=20, checkpoint_every=40, lr=5e-3), show_progress=False)
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["loss"]) for row in rows]
    assert len(losses) == 40 and [int(r["step"]) for r in rows] == list(range(1, 41))
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses          # measured: about a third
    assert result.best["name"] == "dice" and result.best["mode"] == "max"
    validated = [row for row in rows if row["val_dice"]]
    assert [int(r["step"]) for r in validated] == [20, 40]
    initial_dice = float(validated[0]["val_dice"])
    assert 0.0 < initial_dice <= 1.0


def test_the_run_folder_holds_checkpoints_shipping_weights_and_records(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "data"))
    run = tmp_path / "run"
    result = train(TinyTask(TinyParams(channels=4)), dataset, run, _config(steps=6, val_every=3, checkpoint_every=4),
                   show_progress=False)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step-000004.pt", "step-000006.pt"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "curves.png", "metrics.csv", "model.pt",
                                                     "model.sha256", "train.log"]
    digest = hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    assert (run / "model.sha256").read_text() == f"{digest}  model.pt\n" and result.model_sha256 == digest
    shipped = torch.load(run / "model.pt", weights_only=True)
    assert sorted(shipped) == ["data_hash", "format", "kind", "model", "task", "task_config"]
    assert shipped["task_config"] == {"channels": 4, "lambda_diffusion": 0.05, "similarity": "ncc", "window": 5}
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6 and last["data_hash"] == shipped["data_hash"] == result.data_hash
    assert {"model", "optimizer", "rng", "train_config", "task_config"} <= set(last)
    assert last["train_config"]["lr"] == 3e-3 and len(last["rng"]) == 1
    for name, tensor in shipped["model"].items():
        assert torch.equal(tensor, last["model"][name])
    assert torch.load(run / "checkpoints" / "step-000004.pt", weights_only=True)["step"] == 4
    assert read_model(run / "model.pt", task="tiny-net")["data_hash"] == result.data_hash     # its sidecar checks it
    assert read_model(run / "checkpoints" / "best.pt", sha256=None)["kind"] == "samreg-best"
    with pytest.raises(CheckpointError, match="trained by 'tiny-net', not 'samir'"):
        read_model(run / "model.pt", task="samir")
    with pytest.raises(CheckpointError, match="not a trained model"):
        read_model(run / "checkpoints" / "last.pt")
    damaged = bytearray((run / "model.pt").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (run / "copy.pt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_model(run / "copy.pt", sha256=digest)
    (run / "copy.pt").unlink()
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", "loss", "ncc", "diffusion", "val_dice", "val_fold_percent", "val_ncc", "seconds"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (run / "train.log").read_text()
    assert "step 3/6" in log and "step 6/6" in log and "checkpoint step-000004.pt" in log and "done at step 6" in log


def test_validation_and_checkpoint_cadence_do_not_change_the_weights(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "data"))
    task = TinyTask(TinyParams(channels=4))
    train(task, dataset, tmp_path / "a", _config(steps=5, val_every=1, checkpoint_every=2), show_progress=False)
    train(task, dataset, tmp_path / "b", _config(steps=5, val_every=50, checkpoint_every=50), show_progress=False)
    a, b = _weights(tmp_path / "a" / "model.pt"), _weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = tmp_path / "c"
    train(task, dataset, c, _config(steps=5, seed=1), show_progress=False)
    assert not all(torch.equal(a[k], _weights(c / "model.pt")[k]) for k in a)


def test_gradient_clipping_acts_only_beyond_its_norm(tmp_path):
    """A clip far above the gradients' norm leaves every weight as without clipping; a tiny one
    changes the training."""
    dataset = load_dataset(write_dataset(tmp_path / "data"))
    task = TinyTask(TinyParams(channels=4))
    runs = {}
    for name, clip in (("none", None), ("huge", 1e6), ("tiny", 1e-9)):
        train(task, dataset, tmp_path / name, _config(steps=4, clip_grad_norm=clip), show_progress=False)
        runs[name] = _weights(tmp_path / name / "model.pt")
    assert all(torch.equal(runs["none"][k], runs["huge"][k]) for k in runs["none"])
    assert not all(torch.equal(runs["none"][k], runs["tiny"][k]) for k in runs["none"])


def test_other_settings_or_data_are_refused_and_restart_starts_over(tmp_path):
    path = write_dataset(tmp_path / "data", label_maps=0)
    dataset = load_dataset(path)
    run = tmp_path / "run"
    task = TinyTask(TinyParams(channels=4))
    train(task, dataset, run, _config(steps=2, checkpoint_every=2), show_progress=False)
    with pytest.raises(InputError) as error:
        train(task, dataset, run, _config(steps=4, lr=1e-2), show_progress=False)
    assert "lr: 0.003 then, 0.01 now" in str(error.value) and "--restart" in str(error.value)
    with pytest.raises(InputError, match="channels: 4 then, 5 now"):
        train(TinyTask(TinyParams(channels=5)), dataset, run, _config(steps=4), show_progress=False)
    volume = tmp_path / "data" / "volume0.nii.gz"
    original = volume.read_bytes()
    volume.write_bytes((tmp_path / "data" / "volume1.nii.gz").read_bytes())
    with pytest.raises(InputError, match="was trained on other data"):
        train(task, load_dataset(path), run, _config(steps=4), show_progress=False)
    volume.write_bytes(original)
    with pytest.raises(InputError, match="at step 2, beyond --steps 1"):
        train(task, dataset, run, _config(steps=1), show_progress=False)
    result = train(task, load_dataset(path), run, _config(steps=3, lr=1e-2), restart=True, show_progress=False)
    assert result.resumed_from == 0 and torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert not (run / "checkpoints" / "step-000002.pt").exists()
    # steps may grow: the run continues
    longer = train(task, load_dataset(path), run, _config(steps=5, lr=1e-2), show_progress=False)
    assert longer.resumed_from == 3 and longer.step == 5


def _command(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, str(LAUNCHER), "train", "tiny-net", "--data", str(data), "-o", str(run),
            "--steps", "40", "--checkpoint-every", "5", "--val-every", "10", "--grid-size", "20,20,20",
            "--batch", "2", "--lr", "0.003", "--threads", "1", "--device", "cpu", "--channels", "6", "-q", *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    data = write_dataset(tmp_path / "data")
    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(data, killed), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    first = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert first.exists() and not (killed / "model.pt").exists(), "the run must be killed mid-way"
    stopped_at = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 5 <= stopped_at < 40

    resumed = subprocess.run(_command(data, killed), cwd=REPO, env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(resumed at {stopped_at})" in resumed.stdout
    assert f"resuming tiny-net at step {stopped_at}" in (killed / "train.log").read_text()

    whole = tmp_path / "whole"
    straight = subprocess.run(_command(data, whole), cwd=REPO, env=_env(), capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = _weights(killed / "model.pt"), _weights(whole / "model.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-7), name
    assert not list(killed.rglob(".tmp-*"))                         # what the kill left half-written is gone
    # the metrics of the steps before the kill were kept, those after it redone: one row per step
    with (killed / "metrics.csv").open() as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == list(range(1, 41))
