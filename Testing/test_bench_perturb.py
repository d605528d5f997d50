"""Tests for SAMRegistrationLib.bench.perturb on small phantoms with non-identity geometry."""
import numpy as np
import pytest
import SimpleITK as sitk

from SAMRegistrationLib.bench.perturb import (SyntheticPair, intensity_change, make_synthetic_pair,
                                              random_smooth_field, reoriented_copy)
from SAMRegistrationLib.metrics import dice_per_label, jacobian_determinant

SIZE = (40, 36, 30)
SPACING = (1.2, 1.0, 2.0)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)   # 90-degree rotation about z
ORIGIN = (10.0, -20.0, 5.0)


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _phantom() -> tuple[sitk.Image, sitk.Image]:
    """Smooth body/organ phantom and its label map (1, 2), defined in image-axis millimetres."""
    ref = sitk.Image(SIZE, sitk.sitkFloat32)
    ref.SetSpacing(SPACING)
    ref.SetOrigin(ORIGIN)
    ref.SetDirection(DIRECTION)
    nx, ny, nz = SIZE
    iz, iy, ix = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    # mm along the image axes, centred: the shapes are rigidly attached to the image grid.
    x = (ix - (nx - 1) / 2) * SPACING[0]
    y = (iy - (ny - 1) / 2) * SPACING[1]
    z = (iz - (nz - 1) / 2) * SPACING[2]

    def inside(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    body = inside(0, 0, 0, 21, 16, 26)
    organ1 = inside(-5, 0, -4, 10, 9, 14)
    organ2 = inside(8, 3, 10, 7, 6, 10) & ~organ1
    seg = np.zeros(body.shape, dtype=np.uint8)
    seg[organ1] = 1
    seg[organ2] = 2
    values = 100.0 * body + 200.0 * organ1 + 400.0 * organ2 + 30.0 * np.sin(x / 6.0) * body
    values = _smooth_mm(values, 1.5)
    img = sitk.GetImageFromArray(values.astype(np.float32))
    img.CopyInformation(ref)
    lab = sitk.GetImageFromArray(seg)
    lab.CopyInformation(ref)
    return img, lab


def _smooth_mm(values: np.ndarray, sigma_mm: float) -> np.ndarray:
    from scipy import ndimage
    return ndimage.gaussian_filter(values, [sigma_mm / s for s in SPACING[::-1]])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _transform(field: sitk.Image) -> sitk.DisplacementFieldTransform:
    return sitk.DisplacementFieldTransform(sitk.Cast(sitk.Image(field), sitk.sitkVectorFloat64))


def _trilinear(image: sitk.Image, index_xyz: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``image`` at (N,3) continuous (x,y,z) indices."""
    from scipy import ndimage
    return ndimage.map_coordinates(sitk.GetArrayFromImage(image).astype(np.float64),
                                   index_xyz[:, ::-1].T, order=1, mode="nearest")


def _interior(margin_mm: float) -> tuple[slice, slice, slice]:
    m = [int(np.ceil(margin_mm / s)) for s in SPACING[::-1]]
    return tuple(slice(k, -k) for k in m)


@pytest.fixture(scope="module")
def phantom():
    return _phantom()


# --------------------------------------------------------------------------------------------
# random_smooth_field
# --------------------------------------------------------------------------------------------

def test_random_field_reproducible_magnitude_geometry(phantom):
    img, _ = phantom
    a = random_smooth_field(img, seed=7, max_displacement_mm=5.0, control_spacing_mm=20.0)
    b = random_smooth_field(img, seed=7, max_displacement_mm=5.0, control_spacing_mm=20.0)
    c = random_smooth_field(img, seed=8, max_displacement_mm=5.0, control_spacing_mm=20.0)
    assert _geometry(a) == _geometry(img)
    assert a.GetNumberOfComponentsPerPixel() == 3 and a.GetPixelID() == sitk.sitkVectorFloat64
    arr_a, arr_b, arr_c = (sitk.GetArrayFromImage(f) for f in (a, b, c))
    np.testing.assert_array_equal(arr_a, arr_b)
    assert np.abs(arr_a - arr_c).max() > 1.0
    mag = np.linalg.norm(arr_a, axis=-1)
    assert mag.max() == pytest.approx(5.0, rel=0.01)
    assert mag.mean() > 1.0   # a real deformation, not a single spike
    # smooth: neighbouring voxels differ by far less than the peak displacement
    assert np.abs(np.diff(arr_a, axis=2)).max() < 1.0


@pytest.mark.parametrize("size,spacing,max_mm,control_mm", [
    (SIZE, SPACING, 5.0, 20.0),
    ((48, 48, 10), (1.37, 1.37, 10.0), 7.5, 30.0),   # cardiac-MRI-like anisotropy
])
def test_random_field_has_no_folding(size, spacing, max_mm, control_mm):
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(sitk.VersorTransform((0.3, 0.5, 0.8), 0.7).GetMatrix())   # oblique
    ref.SetOrigin((-30.0, 40.0, 12.0))
    for seed in range(3):
        field = random_smooth_field(ref, seed, max_mm, control_mm)
        arr = sitk.GetArrayFromImage(field)
        jac = jacobian_determinant(arr, field.GetSpacing(), field.GetDirection())
        assert jac.min() > 0.2, (seed, jac.min())
        assert np.linalg.norm(arr, axis=-1).max() == pytest.approx(max_mm, rel=0.01)


def test_zero_displacement_gives_zero_field(phantom):
    img, _ = phantom
    field = random_smooth_field(img, 1, max_displacement_mm=0.0)
    assert _geometry(field) == _geometry(img)
    assert not sitk.GetArrayViewFromImage(field).any()


# --------------------------------------------------------------------------------------------
# make_synthetic_pair
# --------------------------------------------------------------------------------------------

def test_synthetic_pair_true_field_recovers_fixed(phantom):
    img, seg = phantom
    pair = make_synthetic_pair(img, seg, seed=3, max_displacement_mm=6.0, control_spacing_mm=24.0,
                               change_intensity=False)
    assert isinstance(pair, SyntheticPair)
    assert pair.fixed is img and pair.fixed_seg is seg
    for im in (pair.moving, pair.moving_seg, pair.true_field):
        assert _geometry(im) == _geometry(img)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(pair.true_field),
        sitk.GetArrayFromImage(random_smooth_field(img, 3, 6.0, 24.0)))

    fixed_arr = sitk.GetArrayFromImage(img)
    seg_arr = sitk.GetArrayFromImage(seg)
    moving_arr = sitk.GetArrayFromImage(pair.moving)
    inner = _interior(7.0)
    labels = (1, 2)
    # the pair is really deformed, so the checks below could fail
    assert _corr(moving_arr[inner], fixed_arr[inner]) < 0.97
    before = dice_per_label(seg_arr, sitk.GetArrayFromImage(pair.moving_seg), labels)
    assert max(before.values()) < 0.95, before

    back = sitk.Resample(pair.moving, img, _transform(pair.true_field), sitk.sitkLinear, 0.0)
    assert _corr(sitk.GetArrayFromImage(back)[inner], fixed_arr[inner]) > 0.98
    back_seg = sitk.Resample(pair.moving_seg, img, _transform(pair.true_field),
                             sitk.sitkNearestNeighbor, 0)
    after = dice_per_label(seg_arr, sitk.GetArrayFromImage(back_seg), labels)
    assert min(after.values()) > 0.95, after

    # true_field and the generating inverse field compose to the identity: u(p) + w(p + u(p)) = 0
    w_at = sitk.Resample(pair.inverse_field, img, _transform(pair.true_field), sitk.sitkLinear, 0.0)
    err = np.linalg.norm(sitk.GetArrayFromImage(pair.true_field) + sitk.GetArrayFromImage(w_at), axis=-1)
    assert err[inner].mean() < 0.1 and err[inner].max() < 0.2


def test_synthetic_pair_with_intensity_change(phantom):
    img, _ = phantom
    fixed_before = sitk.GetArrayFromImage(img).copy()
    plain = make_synthetic_pair(img, None, seed=5, change_intensity=False)
    changed = make_synthetic_pair(img, None, seed=5)
    again = make_synthetic_pair(img, None, seed=5)
    assert changed.moving_seg is None and changed.fixed_seg is None
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), fixed_before)
    m_plain, m_changed = sitk.GetArrayFromImage(plain.moving), sitk.GetArrayFromImage(changed.moving)
    np.testing.assert_array_equal(m_changed, sitk.GetArrayFromImage(again.moving))
    assert np.abs(m_changed - m_plain).mean() > 1.0
    assert _corr(m_changed, m_plain) > 0.8   # changed, but still the same anatomy


# --------------------------------------------------------------------------------------------
# intensity_change
# --------------------------------------------------------------------------------------------

def test_intensity_change_keeps_input_and_geometry(phantom):
    img, _ = phantom
    ct = sitk.Cast(img * 3.0 - 1000.0, sitk.sitkInt16)   # CT-like range with a -1000 background
    before = sitk.GetArrayFromImage(ct).copy()
    out = intensity_change(ct, seed=11)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), before)
    assert ct.GetPixelID() == sitk.sitkInt16
    assert out.GetPixelID() == sitk.sitkFloat32 and _geometry(out) == _geometry(ct)

    arr = sitk.GetArrayFromImage(out)
    np.testing.assert_array_equal(arr, sitk.GetArrayFromImage(intensity_change(ct, seed=11)))
    assert np.abs(arr - sitk.GetArrayFromImage(intensity_change(ct, seed=12))).mean() > 1.0
    assert np.abs(arr - before).mean() > 5.0
    # still in the original intensity range, and the anatomy is still recognisable
    lo, hi = before.min(), before.max()
    span = hi - lo
    assert lo - 0.3 * span < np.percentile(arr, 1) and np.percentile(arr, 99) < hi + 0.3 * span
    assert _corr(arr, before) > 0.8


def test_intensity_change_without_perturbations_is_identity(phantom):
    img, _ = phantom
    out = intensity_change(img, seed=0, gamma_range=(1.0, 1.0), noise_fraction=0.0, bias_strength=0.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(img), atol=1e-3)


# --------------------------------------------------------------------------------------------
# reoriented_copy
# --------------------------------------------------------------------------------------------

def test_reoriented_copy_exact_when_spacing_unchanged(phantom):
    img, seg = phantom
    copy = reoriented_copy(img, spacing_factor=1.0)
    assert copy.GetSize() == (SIZE[2], SIZE[0], SIZE[1])
    assert copy.GetDirection() != img.GetDirection()
    # each physical voxel centre keeps its intensity, so resampling back is exact
    back = sitk.Resample(copy, img, sitk.Transform(), sitk.sitkLinear, -1.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img), atol=1e-3)
    back_seg = sitk.Resample(reoriented_copy(seg, 1.0, is_label=True), img, sitk.Transform(),
                             sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back_seg), sitk.GetArrayFromImage(seg))


def test_reoriented_copy_same_physical_content(phantom):
    img, seg = phantom
    copy = reoriented_copy(img, spacing_factor=1.3)
    assert copy.GetSize() != img.GetSize() and copy.GetSpacing() != img.GetSpacing()
    D = np.asarray(copy.GetDirection()).reshape(3, 3)
    assert not np.allclose(D, np.eye(3)) and not np.allclose(D, np.asarray(DIRECTION).reshape(3, 3))
    assert np.allclose(np.abs(D).sum(axis=0), 1.0)   # still a signed permutation
    np.testing.assert_allclose(sorted(copy.GetSpacing()), sorted(np.asarray(SPACING) * 1.3))

    # interpolate both images at random interior physical points
    rng = np.random.default_rng(0)
    idx = np.stack([rng.uniform(4, n - 5, 300) for n in SIZE], axis=1)
    pts = [img.TransformContinuousIndexToPhysicalPoint(i.tolist()) for i in idx]
    idx_copy = np.array([copy.TransformPhysicalPointToContinuousIndex(p) for p in pts])
    diffs = _trilinear(img, idx) - _trilinear(copy, idx_copy)
    span = float(np.ptp(sitk.GetArrayViewFromImage(img)))
    assert np.abs(diffs).mean() < 0.02 * span and np.abs(diffs).max() < 0.1 * span

    seg_copy = reoriented_copy(seg, 1.3, is_label=True)
    assert seg_copy.GetPixelID() == seg.GetPixelID()
    back = sitk.Resample(seg_copy, img, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    dice = dice_per_label(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(back), (1, 2))
    assert min(dice.values()) > 0.9, dice
