"""DDP: two CPU processes (gloo) under torch.distributed.run train exactly what one process with
twice the batch does, and only one set of outputs is written."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO
from training_data import write_dataset

LAUNCHER = Path(__file__).resolve().parent / "train_cli.py"


def _train(data: Path, run: Path, batch: int, processes: int = 1) -> subprocess.CompletedProcess:
    arguments = ["train", "tiny-net", "--data", str(data), "-o", str(run), "--steps", "6", "--batch", str(batch),
                 "--val-every", "3", "--checkpoint-every", "3", "--grid-size", "16,16,16", "--lr", "0.003",
                 "--threads", "1", "--device", "cpu", "--channels", "4", "-q"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")       # the loopback: no network needed
    return subprocess.run([*launch, str(LAUNCHER), *arguments], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_processes_train_like_one_with_twice_the_batch(tmp_path):
    data = write_dataset(tmp_path / "data")
    ddp = _train(data, tmp_path / "ddp", batch=1, processes=2)
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    single = _train(data, tmp_path / "single", batch=2)
    assert single.returncode == 0, single.stderr[-4000:]

    a, b = _rows(tmp_path / "ddp"), _rows(tmp_path / "single")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(1, 7)]
    for x, y in zip(a, b):
        for column in ("loss", "ncc", "diffusion"):
            assert float(x[column]) == pytest.approx(float(y[column]), rel=1e-4, abs=1e-6), column
    wa = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "single" / "model.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)

    # one set of outputs, written once: the main process alone writes
    run = tmp_path / "ddp"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "curves.png", "metrics.csv", "model.pt",
                                                     "model.sha256", "train.log"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt", "step-000003.pt",
                                                                      "step-000006.pt"]
    log = (run / "train.log").read_text()
    assert log.count("done at step 6") == 1 and "2 process(es) x 1" in log
    assert ddp.stdout.count("Run folder:") == 1
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["world"] == 2 and len(last["rng"]) == 2
