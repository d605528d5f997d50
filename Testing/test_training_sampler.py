"""The pair sampler: deterministic pairs, labels consistent with the known displacement,
landmarks on the training grid, and the features computed once (disk and memory)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.training.config import SamplingConfig
from SAMRegistrationLib.training.dataset import load_dataset
from SAMRegistrationLib.field_ops import warp
from SAMRegistrationLib.training.feature_cache import (FeatureCache, cosine_stats, feature_warp_fidelity,
                                                       foreground_cells, image_tensor, tensor_image)
from SAMRegistrationLib.training.pairs import PairSampler, training_grid
from SAMRegistrationLib.training.providers import MindFeatures, ScaleSpaceFeatures
from SAMRegistrationLib.training.synthesis import integrate_velocity, random_velocity, warp_nearest
from training_data import write_dataset

GRID = [20, 20, 20]


def _config(**changes) -> SamplingConfig:
    return SamplingConfig.parse({"grid_size": GRID, **changes})      # changes may replace the grid


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    scores = [2 * float(((a == v) & (b == v)).sum()) / float((a == v).sum() + (b == v).sum()) for v in (1, 2, 3)]
    return sum(scores) / 3


def test_pairs_are_determined_by_seed_step_and_index(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path))
    first, second = PairSampler(dataset, _config(), seed=3), PairSampler(dataset, _config(), seed=3)
    sources = set()
    for step, index in [(0, 0), (0, 1), (5, 0), (5, 3), (11, 2), (12, 0), (13, 1), (40, 0), (41, 1), (42, 2)]:
        a, b = first.sample(step, index), second.sample(step, index)
        sources.add(a.source.split("[")[0])
        assert a.source == b.source
        assert torch.equal(a.fixed, b.fixed) and torch.equal(a.moving, b.moving)
        if a.true_displacement is not None:
            assert torch.equal(a.true_displacement, b.true_displacement)
    assert sources == {"pairs", "volumes", "label_maps"}
    a, b = first.sample(0, 0), first.sample(0, 0)
    assert torch.equal(a.moving, b.moving)                           # the in-memory volumes are not altered
    synthetic = {seed: PairSampler(dataset, _config(pair_weight=0.0), seed=seed) for seed in (3, 4)}
    assert all(not torch.equal(synthetic[3].sample(s, 0).moving, synthetic[4].sample(s, 0).moving) for s in range(6))


def test_kind_weights_choose_what_is_drawn(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path))
    only_maps = PairSampler(dataset, _config(pair_weight=0.0, volume_weight=0.0), seed=0)
    assert {only_maps.sample(s, 0).source for s in range(6)} == {"label_maps[0] synthmorph"}
    with pytest.raises(InputError, match="weight 0"):
        PairSampler(dataset, _config(pair_weight=0.0, volume_weight=0.0, label_map_weight=0.0))


def test_synthetic_pair_labels_follow_the_true_displacement(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path, label_maps=0, pairs=0, validation=0, volumes=1, size=(32, 32, 32)))
    sampler = PairSampler(dataset, _config(deform_voxels=5.0, deform_smoothness=8.0, grid_size=[32, 32, 32]), seed=1)
    checked = 0
    for step in range(6):
        pair = sampler.sample(step, 0)
        assert pair.source == "volumes[0] synthetic"
        assert pair.fixed.shape == (1, 1, 32, 32, 32) and pair.true_displacement.shape == (1, 3, 32, 32, 32)
        assert 0.0 <= float(pair.moving.amin()) and float(pair.moving.amax()) <= 1.0
        if float(pair.true_displacement.abs().amax()) < 1.5:
            continue                                                # hardly deformed: nothing to tell
        before = _dice(pair.moving_label, pair.fixed_label)
        after = _dice(warp_nearest(pair.moving_label, pair.true_displacement), pair.fixed_label)
        assert after > 0.9 and after > before + 0.15, (before, after)
        # the opposite direction is worse than none: the displacement is fixed -> moving, not the reverse
        assert _dice(warp_nearest(pair.moving_label, -pair.true_displacement), pair.fixed_label) < before
        checked += 1
    assert checked >= 3


def test_real_pairs_come_as_given_on_the_fixed_grid_with_landmarks_in_grid_voxels(tmp_path):
    path = write_dataset(tmp_path, volumes=0, label_maps=0, pairs=1, validation=1, size=(24, 24, 24))
    dataset = load_dataset(path)
    sampler = PairSampler(dataset, _config(pair_weight=1.0), seed=0)
    pair = sampler.sample(0, 0)
    again = sampler.sample(9, 2)
    assert pair.source == "pairs[0]" and torch.equal(pair.moving, again.moving)
    assert pair.true_displacement is None and pair.labels == (1, 2, 3)
    # 24 voxels of 2 mm onto 20: 2.4 mm, centred; landmark rows are blob centres in both images
    assert pair.spacing == pytest.approx((2.4, 2.4, 2.4))
    centres = [np.argwhere(pair.fixed_label[0, 0].numpy() == v).mean(0)[::-1] for v in (1, 2, 3)]   # (x, y, z)
    assert np.allclose(pair.fixed_points.numpy(), np.asarray(centres), atol=0.8)
    shift = (pair.moving_points - pair.fixed_points).numpy()
    assert np.allclose(shift, np.array([4.0, -2.0, 2.0]) / 2.4, atol=1e-3)
    validation = sampler.validation_pairs()
    assert [v.source for v in validation] == ["validation[0]"] and validation[0].moving_points.shape == (3, 3)


def test_training_grid_is_centred_and_holds_the_volume():
    import SimpleITK as sitk
    image = sitk.Image([30, 20, 10], sitk.sitkFloat32)
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((5.0, -7.0, 2.0))
    grid = training_grid(image, (16, 16, 16))
    assert grid.spacing == pytest.approx((2.5, 2.5, 2.5))          # 40 mm of y over 16 voxels
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint((14.5, 9.5, 4.5)))
    assert np.allclose(grid.index_to_world(np.full(3, 7.5)), centre)
    assert training_grid(image, (16, 16, 16), 1.0).spacing == (1.0, 1.0, 1.0)


def test_unreadable_volume_names_the_dataset_field(tmp_path):
    path = write_dataset(tmp_path, volumes=1, label_maps=0, pairs=0, validation=0)
    (tmp_path / "volume0.nii.gz").write_text("not an image")
    sampler = PairSampler(load_dataset(path), _config(), seed=0)
    with pytest.raises(InputError) as error:
        sampler.load_all()
    assert str(error.value).startswith(f"{path}: volumes[0].image: cannot read image")


def test_a_moving_image_outside_the_fixed_one_is_named(tmp_path):
    import SimpleITK as sitk
    path = write_dataset(tmp_path, volumes=0, label_maps=0, pairs=1, validation=0)
    moving = sitk.ReadImage(str(tmp_path / "pair0_moving.nii.gz"))
    moving.SetOrigin((500.0, 0.0, 0.0))
    sitk.WriteImage(moving, str(tmp_path / "pair0_moving.nii.gz"))
    with pytest.raises(InputError, match=r"pairs\[0\]\.moving: pair0_moving.nii.gz does not overlap"):
        PairSampler(load_dataset(path), _config(), seed=0).sample(0, 0)


def test_features_are_cached_on_disk_and_a_corrupt_entry_is_recomputed(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "data", volumes=1, label_maps=0, pairs=1, validation=0))
    provider = MindFeatures(pool=2)
    cache_dir = tmp_path / "cache"
    first = PairSampler(dataset, _config(), seed=0, feature_provider=provider, cache_dir=cache_dir)
    first.load_all()
    assert first.features.computed == 3 and first.features.disk_hits == 0      # volume, pair fixed, pair moving
    entries = sorted(cache_dir.glob("*.pt"))
    assert len(entries) == 3
    pair = first.sample(1, 0)
    assert pair.fixed_features.shape == (1, 12, 10, 10, 10) and pair.moving_features.shape == (1, 12, 10, 10, 10)
    assert first.features.computed == 3                                          # memory, not recomputed

    second = PairSampler(dataset, _config(), seed=0, feature_provider=provider, cache_dir=cache_dir)
    second.load_all()
    assert (second.features.computed, second.features.disk_hits) == (0, 3)
    assert torch.equal(second.sample(1, 0).fixed_features, pair.fixed_features)

    data = bytearray(entries[0].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)                                           # damage the tensor data
    entries[0].write_bytes(bytes(data))
    third = PairSampler(dataset, _config(), seed=0, feature_provider=provider, cache_dir=cache_dir)
    third.load_all()
    assert (third.features.computed, third.features.disk_hits) == (1, 2)
    fourth = PairSampler(dataset, _config(), seed=0, feature_provider=provider, cache_dir=cache_dir)
    fourth.load_all()
    assert (fourth.features.computed, fourth.features.disk_hits) == (0, 3)        # rewritten whole
    # another provider identity is another entry
    other = FeatureCache(MindFeatures(pool=1), cache_dir)
    image = first._image("volumes[0].image", dataset.spec.volumes[0].image)
    assert other.get(image).shape == (12, 20, 20, 20) and other.computed == 1


def test_warped_cached_features_match_reencoding_for_a_smooth_provider(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path, volumes=1, label_maps=0, pairs=0, validation=0,
                                         size=(32, 32, 32)))
    sampler = PairSampler(dataset, SamplingConfig.parse({"grid_size": [32, 32, 32]}), seed=0)
    volume = sampler._image("volumes[0].image", dataset.spec.volumes[0].image)
    field = integrate_velocity(random_velocity((32, 32, 32), torch.Generator().manual_seed(2), 3.0, 12.0))
    smooth = ScaleSpaceFeatures(pool=2)
    fidelity = feature_warp_fidelity(smooth, volume, field)
    assert fidelity["voxels"] > 500
    assert fidelity["cosine_mean"] > 0.99 and fidelity["cosine_p1"] > 0.98
    assert fidelity["centred_cosine_mean"] > 0.97 and fidelity["centred_cosine_p1"] > 0.7
    # the control: re-encoded features against cached features *not* warped are clearly worse
    warped = warp(image_tensor(volume), field)
    mask = foreground_cells(warped, (16, 16, 16))
    unwarped = cosine_stats(smooth(volume), smooth(tensor_image(warped, volume)), mask)
    assert unwarped["voxels"] == fidelity["voxels"]
    assert unwarped["centred_cosine_mean"] < fidelity["centred_cosine_mean"] - 0.03
    assert unwarped["centred_cosine_p1"] < fidelity["centred_cosine_p1"] - 0.5
    # and it tells providers apart: MIND-SSC's local self-similarities do not follow a warp as well
    mind = feature_warp_fidelity(MindFeatures(radius=2, dilation=2, pool=2), volume, field)
    assert mind["centred_cosine_mean"] < fidelity["centred_cosine_mean"] - 0.02


def test_synthetic_moving_features_can_be_reencoded(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "d", volumes=1, label_maps=0, pairs=0, validation=0))
    provider = MindFeatures(pool=2)
    warped = PairSampler(dataset, _config(), 0, provider, tmp_path / "c").sample(0, 0)
    encoded = PairSampler(dataset, _config(reencode_features=True), 0, provider, tmp_path / "c").sample(0, 0)
    assert torch.equal(warped.fixed_features, encoded.fixed_features)
    assert torch.equal(warped.moving, encoded.moving)
    assert not torch.equal(warped.moving_features, encoded.moving_features)
    assert float(torch.nn.functional.cosine_similarity(warped.moving_features, encoded.moving_features).mean()) > 0.9


def test_deformed_copies_are_made_and_encoded_once_and_their_pairs_map_fixed_to_moving(tmp_path):
    """With a bank of deformed copies, every synthetic pair is two different copies; the true
    displacement carries the fixed labels onto the moving ones; each copy is encoded once, over
    any number of draws, and the bank is the same for the same seed."""
    dataset = load_dataset(write_dataset(tmp_path, label_maps=0, pairs=0, validation=0, volumes=1, size=(32, 32, 32)))
    config = _config(deform_voxels=5.0, deform_smoothness=8.0, grid_size=[32, 32, 32], deformed_copies=3)
    provider = MindFeatures()
    sampler = PairSampler(dataset, config, seed=1, feature_provider=provider, cache_dir=tmp_path / "cache")
    sampler.load_all()
    assert sampler.features.computed == 4                        # the volume and its three copies
    seen, checked = set(), 0
    for step in range(12):
        pair = sampler.sample(step, 0)
        a, b = pair.source.split()[-1].split("-")
        assert pair.source.startswith("volumes[0] copies") and a != b
        seen.add((a, b))
        assert pair.fixed_features.shape[1] == 12 and pair.moving_features.shape == pair.fixed_features.shape
        before = _dice(pair.moving_label, pair.fixed_label)
        after = _dice(warp_nearest(pair.moving_label, pair.true_displacement), pair.fixed_label)
        if before < 0.85:      # (label maps are nearest-neighbour warped three times: some loss on 32^3 blobs)
            assert after > 0.78 and after > before + 0.15, (pair.source, before, after)
            checked += 1
    assert sampler.features.computed == 4 and len(seen) >= 4 and checked >= 3
    again = PairSampler(dataset, config, seed=1, feature_provider=provider, cache_dir=tmp_path / "cache")
    assert torch.equal(again.sample(5, 0).true_displacement, sampler.sample(5, 0).true_displacement)
    assert again.features.computed == 0                         # the copies' features come from the disk cache
