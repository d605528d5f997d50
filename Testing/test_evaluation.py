"""SAMRegistrationLib.evaluation on cases with known answers: the identity, a known translation,
a folding field and prompt regions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from SAMRegistrationLib.evaluation import GroundTruth, evaluate, labels_in, landmark_errors
from SAMRegistrationLib.grid import Grid
from SAMRegistrationLib.report_schema import Metrics

SIZE, SPACING, ORIGIN = (24, 20, 16), (2.0, 2.0, 2.0), (-20.0, 10.0, 5.0)


def labels(shift_voxels=(0, 0, 0)) -> sitk.Image:
    """Two boxes (labels 1 and 2) on the test grid, moved by whole voxels (x, y, z)."""
    array = np.zeros(SIZE[::-1], dtype=np.int32)
    dx, dy, dz = shift_voxels
    array[4 + dz:10 + dz, 5 + dy:12 + dy, 4 + dx:12 + dx] = 1
    array[6 + dz:12 + dz, 8 + dy:14 + dy, 14 + dx:20 + dx] = 2
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    return image


def constant_field(u_mm) -> sitk.Image:
    grid = Grid.from_image(labels())
    return grid.image_from_array(np.broadcast_to(np.asarray(u_mm, np.float32), grid.shape + (3,)).copy(),
                                 is_vector=True)


def translation(t_mm) -> sitk.Transform:
    affine = sitk.AffineTransform(3)
    affine.SetTranslation(tuple(float(c) for c in t_mm))
    return affine


def test_identity_scores_perfectly():
    seg = labels()
    result = evaluate(constant_field((0, 0, 0)), GroundTruth(seg, seg))
    metrics = result.metrics
    assert isinstance(metrics, Metrics)
    assert metrics.dice == {"1": 1.0, "2": 1.0} and metrics.dice_mean == 1.0
    assert metrics.hd95_mean_mm == 0.0 and metrics.fold_percent == 0.0 and metrics.sdlogj == 0.0
    assert metrics.initial.dice_mean == 1.0 and metrics.initial.fold_percent == 0.0
    assert metrics.affine is None                           # no affine stage: no affine block
    assert np.allclose(result.jacobian, 1.0) and result.jacobian.shape == SIZE[::-1]
    assert np.array_equal(sitk.GetArrayFromImage(result.warped_seg), sitk.GetArrayFromImage(seg))
    assert set(metrics.to_dict()) == {"sdlogj", "fold_percent", "dice", "dice_mean", "hd95", "hd95_mean_mm",
                                      "initial"}


def test_no_ground_truth_gives_regularity_only():
    result = evaluate(constant_field((1.0, 2.0, 3.0)), affine=translation((1.0, 2.0, 3.0)))
    assert result.metrics.to_dict() == {"sdlogj": 0.0, "fold_percent": 0.0,
                                        "initial": {"sdlogj": 0.0, "fold_percent": 0.0}}
    assert result.warped_seg is None


def test_a_known_translation_is_scored_before_after_and_after_the_affine():
    shift_vox = (2, 0, -1)
    t = np.asarray(shift_vox, float) * SPACING                # fixed -> moving: p -> p + t
    fixed_seg, moving_seg = labels(), labels(shift_vox)
    fixed_points = np.array([[-10.0, 20.0, 15.0], [0.0, 25.0, 20.0], [5.0, 30.0, 12.0]])
    truth = GroundTruth(fixed_seg, moving_seg, labels=[1, 2], fixed_points=fixed_points,
                        moving_points=fixed_points + t)
    half = translation(t / 2)                                 # an affine stage that got half way
    metrics = evaluate(constant_field(t), truth, affine=half).metrics
    assert metrics.tre_mean_mm == pytest.approx(0.0, abs=1e-5) and metrics.tre_median_mm == pytest.approx(0, abs=1e-5)
    assert metrics.initial.tre_mean_mm == pytest.approx(np.linalg.norm(t))
    assert metrics.initial.tre_sd_mm == pytest.approx(0.0, abs=1e-9)
    assert metrics.affine.tre_mean_mm == pytest.approx(np.linalg.norm(t) / 2)
    assert metrics.dice_mean == 1.0 and metrics.initial.dice_mean < 0.9
    assert metrics.initial.dice_mean < metrics.affine.dice_mean < 1.0
    assert metrics.fold_percent == 0.0
    assert metrics.affine.sdlogj is None and "sdlogj" not in metrics.affine.to_dict()


def test_a_folding_field_is_counted():
    grid = Grid.from_image(labels())
    x = grid.world_points().numpy()[..., 0]
    u = np.zeros(grid.shape + (3,), np.float32)
    u[..., 0] = -2.0 * x                                      # phi_x = -x: det J = -1 everywhere
    metrics = evaluate(grid.image_from_array(u, is_vector=True)).metrics
    assert metrics.fold_percent == 100.0


def test_prompt_regions_are_compared_with_the_label_maps_and_with_each_other():
    seg = labels()
    regions = sitk.Cast(seg == 1, sitk.sitkUInt8)             # one structure, region label 1
    infos = [{"label": "box"}]
    truth = GroundTruth(seg, seg, regions={"fixed": (regions, infos), "moving": (regions, infos)})
    metrics = evaluate(constant_field((0, 0, 0)), truth, affine=translation((0, 0, 0))).metrics
    assert [pair.model_dump() for pair in metrics.region_pairs] == [{"region": "box", "dice_affine": 1.0,
                                                                     "dice": 1.0}]
    for side in ("fixed", "moving"):
        (quality,) = metrics.regions[side]
        assert (quality.region, quality.label, quality.dice) == ("box", 1, 1.0)


def test_helpers():
    assert labels_in(labels(), labels((1, 0, 0))) == [1, 2]
    errors = landmark_errors(np.zeros((2, 3)), np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]))
    assert errors.tolist() == [5.0, 1.0]
    assert math.isclose(landmark_errors(np.zeros((1, 3)), np.array([[1.0, 0, 0]]), translation((1, 0, 0)))[0], 0.0)
