"""Tests for SAMRegistrationLib.metrics (synthetic cases plus identity anchors on shared data)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.metrics import (dice_per_label, fold_percent, hd95_per_label,
                                        jacobian_determinant, resample_segmentation, sdlogj,
                                        segmentation_metrics, tre, tre_initial)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _cube(shape=(20, 20, 20), lo=(5, 5, 5), size=10, label=1, dtype=np.uint8):
    a = np.zeros(shape, dtype)
    a[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = label
    return a


def _rotation(ax_deg: float, az_deg: float) -> np.ndarray:
    a, b = math.radians(ax_deg), math.radians(az_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def _grid_points(shape_zyx, spacing_xyz, direction, origin) -> np.ndarray:
    """World (x,y,z) coordinates of every voxel, shape (z,y,x,3)."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape_zyx], indexing="ij")
    idx = np.stack([x, y, z], axis=-1)
    M = np.asarray(direction).reshape(3, 3) @ np.diag(spacing_xyz)
    return idx @ M.T + np.asarray(origin)


def _disp_image(disp, spacing, direction, origin) -> sitk.Image:
    img = sitk.GetImageFromArray(disp.astype(np.float64), isVector=True)
    img.SetSpacing(tuple(spacing))
    img.SetDirection(tuple(np.asarray(direction).ravel()))
    img.SetOrigin(tuple(origin))
    return img


# ---------------------------------------------------------------- Dice / HD95

def test_dice_shifted_cube():
    a = _cube()
    b = np.roll(a, 2, axis=2)  # 10^3 cube shifted 2 voxels in x: overlap 8*10*10
    d = dice_per_label(a, b, [1, 7])
    assert d[1] == pytest.approx(2 * 800 / 2000)
    assert math.isnan(d[7])
    assert dice_per_label(a, a, [1])[1] == 1.0


def test_dice_shape_mismatch():
    with pytest.raises(InputError):
        dice_per_label(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), [1])


@pytest.mark.parametrize("axis,spacing_zyx,expected", [
    (2, (1.0, 1.0, 1.5), 4.5),   # shift 3 voxels along x, 1.5 mm
    (0, (2.5, 1.0, 1.0), 7.5),   # shift 3 voxels along z, 2.5 mm
])
def test_hd95_known_shift(axis, spacing_zyx, expected):
    a = _cube(shape=(24, 24, 24), size=12)
    b = np.roll(a, 3, axis=axis)
    hd = hd95_per_label(a, b, [1], spacing_zyx)
    assert hd[1] == pytest.approx(expected)
    assert hd95_per_label(a, a, [1], spacing_zyx)[1] == 0.0


def test_hd95_empty_side_is_nan():
    a = _cube()
    hd = hd95_per_label(a, np.zeros_like(a), [1, 2], (1, 1, 1))
    assert math.isnan(hd[1]) and math.isnan(hd[2])


def test_hd95_cropping_matches_touching_border():
    # Object touching the image border: the border face counts as surface either way.
    a = np.zeros((10, 12, 14), np.uint8)
    a[0:6, 2:8, 3:9] = 1
    b = np.zeros_like(a)
    b[0:6, 2:8, 5:11] = 1
    assert hd95_per_label(a, b, [1], (1, 1, 1))[1] == pytest.approx(2.0)


def test_segmentation_metrics_json_friendly():
    a = _cube(shape=(20, 20, 20)).astype(np.uint16)
    b = np.roll(a, 2, axis=2)
    fi, wi = sitk.GetImageFromArray(a), sitk.GetImageFromArray(b)
    fi.SetSpacing((2.0, 1.0, 1.0))
    wi.CopyInformation(fi)
    r = segmentation_metrics(fi, wi, [1, 5])
    json.dumps(r, allow_nan=False)
    assert r["dice"]["1"] == pytest.approx(0.8)
    assert r["dice"]["5"] is None and r["hd95"]["5"] is None
    assert r["dice_mean"] == pytest.approx(0.8)
    assert r["hd95_mean_mm"] == pytest.approx(4.0)  # 2 voxels * 2 mm along x
    with pytest.raises(InputError):
        segmentation_metrics(fi, sitk.Image(5, 5, 5, sitk.sitkUInt16), [1])


def test_resample_segmentation_nearest_and_type():
    a = _cube(label=3).astype(np.int16)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((1.5, 1.0, 2.0))
    out = resample_segmentation(img, img, None)
    assert out.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), a)
    tx = sitk.TranslationTransform(3, (3.0, 0.0, 0.0))  # 2 voxels in x: warped(p) = moving(p + t)
    shifted = sitk.GetArrayFromImage(resample_segmentation(img, img, tx))
    expected = np.zeros_like(a)
    expected[:, :, :-2] = a[:, :, 2:]
    np.testing.assert_array_equal(shifted, expected)
    assert set(np.unique(shifted)) <= {0, 3}


# ---------------------------------------------------------------- Jacobian

def test_jacobian_affine_rotated_anisotropic():
    spacing = np.array([0.7, 1.3, 2.9])
    direction = _rotation(30, -50)
    origin = np.array([10.0, -20.0, 5.0])
    shape = (6, 7, 8)
    p = _grid_points(shape, spacing, direction, origin)
    A = np.array([[1.10, 0.20, -0.05], [0.03, 0.90, 0.15], [-0.10, 0.07, 1.25]])
    t = np.array([2.0, -1.0, 0.5])
    u = p @ (A - np.eye(3)).T + t
    jac = jacobian_determinant(u, spacing, direction.ravel())
    assert jac.shape == shape
    np.testing.assert_allclose(jac, np.linalg.det(A), rtol=1e-10)
    assert sdlogj(jac) == pytest.approx(0.0, abs=1e-9)
    assert fold_percent(jac) == 0.0


def test_jacobian_chunking_matches_plain_gradient():
    rng = np.random.default_rng(0)
    u = rng.normal(scale=0.3, size=(37, 5, 6, 3))  # > one 16-slice chunk
    jac = jacobian_determinant(u, (1.0, 1.0, 1.0), np.eye(3))
    g = [np.gradient(u[..., a]) for a in range(3)]
    J = np.stack([np.stack([g[a][2], g[a][1], g[a][0]], -1) for a in range(3)], -2) + np.eye(3)
    np.testing.assert_allclose(jac, np.linalg.det(J), rtol=1e-12)


def test_fold_detection():
    shape = (8, 8, 8)
    p = _grid_points(shape, (1, 1, 1), np.eye(3), (0, 0, 0))
    u = np.zeros(shape + (3,))
    u[..., 0] = -2.0 * p[..., 0]  # x -> -x: det = -1 everywhere
    jac = jacobian_determinant(u, (1, 1, 1), np.eye(3))
    np.testing.assert_allclose(jac, -1.0)
    assert fold_percent(jac) == 100.0
    # Local fold: 1 + du/dx < 0 where the sine is steep enough.
    x = np.arange(32, dtype=float)
    u = np.zeros((4, 4, 32, 3))
    u[..., 0] = 3.0 * np.sin(2 * np.pi * x / 16)[None, None, :]
    jac = jacobian_determinant(u, (1, 1, 1), np.eye(3))
    f = fold_percent(jac)
    assert 0.0 < f < 100.0
    assert sdlogj(jac) > 1.0
    assert fold_percent(np.ones((3, 3, 3))) == 0.0


def test_jacobian_bad_shape():
    with pytest.raises(InputError):
        jacobian_determinant(np.zeros((4, 4, 4, 2)), (1, 1, 1), np.eye(3))


# ---------------------------------------------------------------- TRE

def test_tre_linear_field_is_exact():
    spacing = (1.5, 1.0, 2.0)
    direction = _rotation(20, 35)
    origin = (-10.0, 4.0, 7.0)
    shape = (12, 14, 16)
    p = _grid_points(shape, spacing, direction, origin)
    A = np.array([[1.05, 0.1, 0.0], [0.0, 0.95, 0.05], [0.02, 0.0, 1.1]])
    t = np.array([3.0, -2.0, 1.0])
    disp = _disp_image(p @ (A - np.eye(3)).T + t, spacing, direction, origin)
    fixed = p[3:9:2, 4:10:3, 5:11:2].reshape(-1, 3) + 0.3  # inside the grid, off-voxel
    moving = fixed @ A.T + t
    mean, sd, per = tre(fixed, moving, disp)
    assert per.shape == (len(fixed),)
    assert mean == pytest.approx(0.0, abs=1e-9) and sd == pytest.approx(0.0, abs=1e-9)
    # The caller's image must stay intact (the transform takes a copy).
    assert disp.GetSize() == shape[::-1]
    # With an offset moving set, TRE is the offset length.
    mean, _, _ = tre(fixed, moving + np.array([3.0, 4.0, 0.0]), disp)
    assert mean == pytest.approx(5.0)


def test_tre_initial_and_errors():
    f = np.zeros((3, 3))
    m = np.array([[3.0, 4.0, 0.0], [0, 0, 1], [0, 0, 0]])
    mean, sd, per = tre_initial(f, m)
    np.testing.assert_allclose(per, [5.0, 1.0, 0.0])
    assert mean == pytest.approx(2.0) and sd == pytest.approx(np.std([5.0, 1.0, 0.0]))
    with pytest.raises(InputError):
        tre_initial(f, m[:2])
    with pytest.raises(InputError):
        tre_initial(np.zeros((3, 2)), np.zeros((3, 2)))


# ---------------------------------------------------------------- shared-data anchors

def _cases() -> dict:
    if not (DATA / "cases.json").is_file():
        pytest.skip(f"shared benchmark data not found at {DATA.resolve()}")
    return json.loads((DATA / "cases.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case,dice_mean,hd95_mean,per_label", [
    ("brain", 0.522, 5.11, None),
    ("acdc067", 0.533, 14.64, {"1": 0.659, "2": 0.367, "3": 0.574}),
    ("spine", 0.852, 2.00, {"1": 0.852}),
])
def test_identity_anchors(case, dice_mean, hd95_mean, per_label):
    c = _cases()[case]
    fixed_seg = sitk.ReadImage(str(DATA / c["fixed_seg"]))
    moving_seg = sitk.ReadImage(str(DATA / c["moving_seg"]))
    warped = resample_segmentation(moving_seg, fixed_seg, None)
    r = segmentation_metrics(fixed_seg, warped, c["labels"])
    assert r["dice_mean"] == pytest.approx(dice_mean, abs=6e-4)
    assert r["hd95_mean_mm"] == pytest.approx(hd95_mean, abs=6e-3)
    for lab, v in (per_label or {}).items():
        assert r["dice"][lab] == pytest.approx(v, abs=6e-4)


def test_region_pair_dice_reports_used_pairs_before_and_after():
    from SAMRegistrationLib.metrics import region_pair_dice
    fixed = np.zeros((12, 20, 20), np.uint8)
    fixed[3:9, 4:10, 4:10] = 1
    fixed[3:9, 12:18, 12:18] = 2
    fixed[0, 0, 0] = 3                                  # a region found in the fixed image only
    moving = np.zeros_like(fixed)
    moving[3:9, 4:10, 6:12] = 1                         # shifted by 2 voxels (2 mm) along x
    moving[3:9, 12:18, 14:20] = 2
    images = []
    for array in (fixed, moving):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 1.0))
        images.append(image)
    shift = sitk.TranslationTransform(3, (2.0, 0.0, 0.0))    # fixed -> moving points
    pairs = region_pair_dice(images[0], images[1], ["a", "b", "c"], shift, sitk.Transform())
    assert [p["region"] for p in pairs] == ["a", "b"]
    for pair in pairs:
        assert pair["dice"] == 1.0 and pair["dice_affine"] < 0.8, pair
