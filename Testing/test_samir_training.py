"""samir trained by the training machinery on a tiny dataset with real LiteMedSAM features: the
frozen projection is fitted before the model is built, every pair carries the frozen features,
the loss and the validation run, and the shipped model.pt loads for registration."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from SAMRegistrationLib.learned.samir.inference import load_model
from SAMRegistrationLib.learned.samir.model import SamirConfig
from SAMRegistrationLib.learned.samir.task import SamirTask
from SAMRegistrationLib.training.config import TrainConfig
from SAMRegistrationLib.training.dataset import load_dataset
from SAMRegistrationLib.training.trainer import train
from training_data import write_dataset

pytestmark = pytest.mark.slow      # LiteMedSAM encodes every training volume (about half a minute)


def test_samir_trains_on_frozen_litemedsam_features_and_ships_a_loadable_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMREG_CACHE", str(tmp_path / "cache"))
    dataset = load_dataset(write_dataset(tmp_path / "data", volumes=1, label_maps=0, pairs=1, validation=1))
    config = SamirConfig(dims=4, head_channels=4, width=8, levels=2, steps=3)
    task = SamirTask(config)
    settings = TrainConfig.parse({"grid_size": [16, 16, 16], "steps": 4, "batch": 1, "lr": 1e-3, "val_every": 2,
                                  "checkpoint_every": 4, "threads": 2, "device": "cpu", "seed": 0})
    result = train(task, dataset, tmp_path / "run", settings, show_progress=False)
    assert task.projection is not None and task.projection.dims == 4
    assert task.feature_provider.identity.startswith("litemedsam-frozen:canvas=224")
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    validated = [r for r in rows if r.get("val_dice")]
    assert validated and 0.0 <= float(validated[-1]["val_dice"]) <= 1.0
    model = load_model(tmp_path / "run" / "model.pt", result.model_sha256)
    assert torch.allclose(model.projection().basis, task.projection.basis)
