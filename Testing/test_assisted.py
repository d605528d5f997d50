"""Method ``assisted``: its masks (channels, training degradation), its losses (prototype,
contour), its network (identity when untrained, any input size, attention that treats every
position alike), a short training run through ``samreg train``'s machinery, and the method
through the pipeline with masks from files, from none, and a bad mask file as one line."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantom import interior_mask, phantom, register_cli, register_images, translated
from SAMRegistrationLib.learned.assisted.config import AssistedConfig
from SAMRegistrationLib.learned.assisted.losses import contour_loss, prototype_loss
from SAMRegistrationLib.learned.assisted.masks import degrade, mask_dice, to_channels, training_masks
from SAMRegistrationLib.learned.assisted.model import AssistedModel, predict
from SAMRegistrationLib.settings import Settings


def _ball(shape=(20, 24, 28), centre=(10, 12, 14), radius=5.0) -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius ** 2).float()


# --------------------------------------------------------------------------- masks
def test_structures_go_to_channels_modulo_their_count():
    structures = torch.stack([_ball(radius=r) for r in (2.0, 3.0, 4.0, 5.0, 6.0)])
    channels = to_channels(structures, 4)
    assert channels.shape == (1, 4, 20, 24, 28)
    assert torch.equal(channels[0, 1], structures[1]) and torch.equal(channels[0, 3], structures[3])
    assert torch.equal(channels[0, 0], torch.maximum(structures[0], structures[4]))   # 0 and 4 share channel 0
    assert to_channels(structures[:0], 3).abs().sum() == 0


def test_degraded_masks_move_only_near_the_boundary_by_about_the_error_asked():
    mask = _ball(radius=7.0)
    assert torch.equal(degrade(mask, 0.0), mask)
    generator = torch.Generator().manual_seed(3)
    shifted = degrade(mask, 2.0, generator)
    changed = shifted != mask
    assert changed.any(), "a 2-voxel boundary error changed nothing"
    # every change lies within the error (plus a voxel of the blur's estimate) of the boundary
    z, y, x = torch.nonzero(changed).float().T
    radius = ((z - 10) ** 2 + (y - 12) ** 2 + (x - 14) ** 2).sqrt()
    assert float((radius - 7.0).abs().max()) <= 3.0 + 0.5
    dice = float(2 * (shifted * mask).sum() / (shifted.sum() + mask.sum()))
    assert 0.6 < dice < 0.99


def test_training_masks_follow_the_keep_and_none_chances():
    labels = torch.zeros(1, 1, 20, 24, 28, dtype=torch.long)
    labels[0, 0][_ball(radius=4.0, centre=(10, 8, 8)) > 0] = 1
    labels[0, 0][_ball(radius=4.0, centre=(10, 16, 20)) > 0] = 2
    none = AssistedConfig(mask_none=1.0)
    fixed, moving, owner = training_masks(labels, labels, none, torch.Generator().manual_seed(0))
    assert fixed.abs().sum() == 0 and moving.abs().sum() == 0 and owner == [0, 0, 0, 0]
    every = AssistedConfig(mask_none=0.0, mask_keep=1.0, mask_error_voxels=1.0)
    seen = set()
    for seed in range(6):
        fixed, moving, owner = training_masks(labels, labels, every, torch.Generator().manual_seed(seed))
        assert sorted(v for v in owner if v) == [1, 2]
        seen.add(tuple(owner))
        assert mask_dice(fixed, labels, owner) > 0.75 and mask_dice(moving, labels, owner) > 0.75
        assert not torch.equal(fixed, moving)              # the two images' masks err independently
    assert len(seen) > 1, "structures always went to the same channels"
    assert training_masks(None, labels, every)[0] is None


# --------------------------------------------------------------------------- losses
def test_prototype_loss_is_lower_for_features_that_separate_the_structures():
    masks = torch.stack([_ball(radius=4.0, centre=(10, 8, 8)), _ball(radius=4.0, centre=(10, 16, 20))])[None]
    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 8, 20, 24, 28, generator=rng)
    separating = noise * 0.1
    separating[:, 0] += 1.0 - masks.sum(1)[0]             # background, structure 1, structure 2 on their own axes
    separating[:, 1] += masks[0, 0]
    separating[:, 2] += masks[0, 1]
    good = prototype_loss(separating, separating.roll(1, -1), masks, masks.roll(1, -1))
    bad = prototype_loss(noise, noise.roll(1, -1), masks, masks.roll(1, -1))
    assert float(good) < float(bad) - 0.2
    assert float(prototype_loss(noise, noise, masks * 0, masks)) == 0.0      # no structure in both: no loss


def test_contour_loss_vanishes_for_the_true_shift_and_its_gradient_points_to_it():
    fixed = _ball(radius=5.0)[None, None]
    moving = _ball(radius=5.0, centre=(10, 12, 17))[None, None]          # moved +3 voxels along x
    true = torch.zeros(1, 3, 20, 24, 28)
    true[:, 0] = 3.0
    assert float(contour_loss(fixed, moving, true, count=4096)) < 1e-6
    field = torch.zeros(1, 3, 20, 24, 28, requires_grad=True)
    loss = contour_loss(fixed, moving, field, count=4096)
    assert float(loss) > 1.0
    loss.backward()
    assert float(field.grad[:, 0].sum()) < 0 and abs(float(field.grad[:, 1].sum())) < abs(float(field.grad[:, 0].sum())) / 5


# --------------------------------------------------------------------------- network
def test_an_untrained_network_is_the_identity_on_inputs_of_any_size():
    torch.manual_seed(0)
    model = AssistedModel(AssistedConfig(width=4, levels=3)).eval()
    fixed, moving = torch.rand(1, 1, 13, 18, 11), torch.rand(1, 1, 13, 18, 11)
    masks = torch.zeros(1, 4, 13, 18, 11)
    fields = predict(model, fixed, moving, masks, masks)
    assert fields[0].shape == (1, 3, 13, 18, 11) and fields[1].shape == (1, 3, 7, 9, 6)
    assert float(fields[0].abs().max()) == 0.0


def test_neighbourhood_attention_treats_every_position_alike():
    """Inputs moved give the output moved, away from the borders (no windows, no position
    codes, a per-voxel norm); and the context changes the output."""
    from SAMRegistrationLib.learned.assisted.network import NeighbourhoodAttention
    torch.manual_seed(0)
    attention = NeighbourhoodAttention(8, 2, 1).eval()
    query, context = torch.randn(1, 8, 10, 10, 10), torch.randn(1, 8, 10, 10, 10)
    with torch.no_grad():
        out = attention(query, context)
        moved = attention(query.roll(2, -1), context.roll(2, -1))
        other = attention(query, context.roll(1, -2))
    assert torch.allclose(out.roll(2, -1)[..., 1:-1, 1:-1, 3:-1], moved[..., 1:-1, 1:-1, 3:-1], atol=1e-5)
    assert float((other - out)[..., 1:-1, 1:-1, 1:-1].abs().max()) > 1e-2


# --------------------------------------------------------------------------- training
def test_assisted_trains_through_the_training_machinery_and_validates_with_and_without_masks(tmp_path):
    from SAMRegistrationLib.learned.assisted.inference import load_model
    from SAMRegistrationLib.learned.assisted.task import AssistedTask
    from SAMRegistrationLib.training.config import TrainConfig
    from SAMRegistrationLib.training.dataset import load_dataset
    from SAMRegistrationLib.training.trainer import train
    from training_data import write_dataset

    dataset = load_dataset(write_dataset(tmp_path / "data", volumes=1, label_maps=0, pairs=1, validation=1))
    task = AssistedTask(AssistedConfig(width=4, levels=3, mask_none=0.0, mask_keep=1.0, mask_error_voxels=0.5))
    settings = TrainConfig.parse({"grid_size": [24, 24, 24], "grid_spacing": 2.0, "steps": 4, "lr": 1e-3, "val_every": 2,
                                  "checkpoint_every": 4, "threads": 2, "device": "cpu", "seed": 0})
    result = train(task, dataset, tmp_path / "run", settings, show_progress=False)
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"image", "diffusion", "dice", "prototype", "contour"} <= set(rows[0])
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert any(float(r["prototype"]) > 0 and float(r["contour"]) > 0 for r in rows), "no step had masks"
    validated = [r for r in rows if r.get("val_dice")]
    assert validated and 0.0 <= float(validated[-1]["val_dice_no_masks"]) <= 1.0
    assert 0.5 < float(validated[-1]["val_mask_dice"]) <= 1.0             # the masks it was given, scored
    model = load_model(tmp_path / "run" / "model.pt", result.model_sha256)
    assert model.config.width == 4


# --------------------------------------------------------------------------- the method
def _model(path, spacing: float = 2.0) -> None:
    """A small assisted model, untrained: its last layers are zero (the identity field)."""
    from SAMRegistrationLib.training.checkpointing import write_model
    torch.manual_seed(0)
    config = AssistedConfig(width=4, levels=2, spacing=spacing)
    write_model({"kind": "samreg-model", "task": "assisted", "model": AssistedModel(config).state_dict(),
                 "task_config": config.to_dict(), "data_hash": ""}, path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("assisted-model") / "model.pt"
    _model(path)
    return path


def _labels(image: sitk.Image) -> sitk.Image:
    """The phantom's brightest blobs as labels 1 and 2 (by intensity band)."""
    array = sitk.GetArrayFromImage(image)
    labels = np.zeros(array.shape, np.uint8)
    labels[array > 250] = 1
    labels[(array > 180) & (array <= 250)] = 2
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def _settings(tmp_path, model_file, iterations: int, **params) -> Settings:
    return Settings(encoder="mind", method="assisted", affine=False, cache_dir=str(tmp_path / "cache"),
                    method_params={"model": str(model_file), "iterations": iterations, "lambda_reg": 0.1, **params})


def test_the_method_runs_without_masks_and_with_mask_files_and_says_which(tmp_path, model_file):
    fixed = phantom(spacing=(2.0, 2.0, 2.0))
    shift = np.array([4.0, 0.0, 0.0])
    moving = translated(fixed, shift)
    assert len(np.unique(sitk.GetArrayFromImage(_labels(fixed)))) == 3

    (tmp_path / "none").mkdir()
    report, field = register_images(tmp_path / "none", fixed, moving, _settings(tmp_path, model_file, 0))
    assert float(np.abs(sitk.GetArrayFromImage(field)).max()) < 1e-6
    info = report["resolved"]["method"]
    assert info["masks"] == "none" and info["structures"] == 0 and report["resolved"]["encoder"]["by_method"] == "assisted"

    folder = tmp_path / "files"
    folder.mkdir()
    sitk.WriteImage(_labels(fixed), str(folder / "fixed_mask.nii.gz"))
    sitk.WriteImage(_labels(moving), str(folder / "moving_mask.nii.gz"))
    report, field = register_images(folder, fixed, moving, _settings(
        tmp_path, model_file, 80, fixed_mask=str(folder / "fixed_mask.nii.gz"),
        moving_mask=str(folder / "moving_mask.nii.gz")))
    info = report["resolved"]["method"]
    assert info["masks"] == "files" and info["structures"] == 2 and info["refine_grid"] is not None
    error = np.linalg.norm(sitk.GetArrayFromImage(field)[interior_mask(fixed)] - shift, axis=1)
    assert np.mean(error) < 1.5, f"mean endpoint error {np.mean(error):.2f} mm of a 4 mm shift"
    assert report["metrics"]["fold_percent"] == 0.0


def _cli(tmp_path, *extra: str):
    return register_cli(tmp_path, "assisted", *extra)


def test_bad_mask_inputs_are_one_line_before_any_work(tmp_path, model_file):
    missing = _cli(tmp_path, "--model", str(model_file), "--fixed-mask", str(tmp_path / "nowhere.nii.gz"),
                   "--moving-mask", str(tmp_path / "nowhere.nii.gz"))
    assert missing.returncode == 2, missing.stderr
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "fixed_mask not found" in lines[0], lines
    asked = _cli(tmp_path, "--model", str(model_file), "--masks", "files")
    lines = [line for line in asked.stderr.splitlines() if line.strip()]
    assert asked.returncode == 2 and len(lines) == 1 and "needs both fixed_mask and moving_mask" in lines[0], lines
    foreign = _cli(tmp_path, "--model", str(tmp_path / "nowhere.pt"))
    assert foreign.returncode == 2 and "assisted model not found" in foreign.stderr
    assert not (tmp_path / "out" / "displacement.nrrd").exists()


def test_the_shipped_model_matches_its_checksum_and_provenance():
    from SAMRegistrationLib.learned.assisted.inference import load_model
    from SAMRegistrationLib.methods.assisted import SHIPPED_MODEL, SHIPPED_SHA256
    from SAMRegistrationLib.training.checkpointing import file_sha256
    assert file_sha256(SHIPPED_MODEL) == SHIPPED_SHA256
    provenance = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())
    assert provenance["sha256"] == SHIPPED_SHA256 and "samreg train assisted" in provenance["command"]
    assert load_model(SHIPPED_MODEL, SHIPPED_SHA256).config.mask_channels >= 3
