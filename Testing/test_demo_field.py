"""The demo's known deformation: the fixed->moving field inverts the moving-creation map."""
from __future__ import annotations

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("scipy")

from SAMRegistrationLib import demo  # noqa: E402


def reference(size=(36, 40, 32), spacing=(2.0, 2.0, 2.5)):
    """An oblique, anisotropic grid (the field code must work in physical space)."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin((30.0, -20.0, 5.0))
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection((np.diag([-1, -1, 1]) @ rot).ravel().tolist())
    return image


def test_grid_points_match_itk():
    image = reference()
    points = demo.grid_points(image)
    nx, ny, nz = image.GetSize()
    for flat in (0, 17, points.shape[0] - 1, 5 * nx * ny + 3 * nx + 7):
        k, rem = divmod(flat, nx * ny)
        j, i = divmod(rem, nx)
        assert np.allclose(points[flat], image.TransformIndexToPhysicalPoint((i, j, k)))


def test_inverse_field_composes_to_identity():
    image = reference()
    deformation = demo.KnownDeformation(image, seed=3, max_mm=7.0)
    points = demo.grid_points(image)
    v = deformation.v(points)
    assert 5.0 < np.linalg.norm(deformation.nonlinear, axis=-1).max() <= 7.0 + 1e-6
    assert demo.fold_percent(v, image) == 0.0              # v itself is invertible
    u, residual = deformation.fixed_to_moving(points)
    # p + u(p) = q with q + v(q) = p
    q = points + u
    assert np.abs(q + deformation.v(q) - points).max() < 1e-3
    assert residual < 1e-3
    assert np.linalg.norm(u, axis=1).max() > 5.0            # a real deformation, not ~0
    # the rigid part has the requested size
    assert np.isclose(np.linalg.norm(deformation.translation), 4.0)
    angle = np.degrees(np.arccos((np.trace(deformation.rotation) - 1) / 2))
    assert np.isclose(angle, 3.0)


def test_inverse_field_warps_moving_back_to_fixed():
    """moving(q) = fixed(q + v(q)) and warped(p) = moving(p + u(p)) reproduce fixed."""
    image = reference()
    deformation = demo.KnownDeformation(image, seed=5)
    points = demo.grid_points(image)
    shape = sitk.GetArrayViewFromImage(image).shape
    # smooth test pattern (linear interpolation of it is accurate)
    centre = points.mean(axis=0)
    fixed = np.exp(-np.sum((points - centre) ** 2, axis=1) / (2 * 18.0 ** 2)).reshape(shape)
    moving = demo.sample(fixed, image, points + deformation.v(points), order=1).reshape(shape)
    u, _ = deformation.fixed_to_moving(points)
    warped = demo.sample(moving, image, points + u, order=1).reshape(shape)
    inner = (slice(6, -6),) * 3
    before = np.abs(moving - fixed)[inner].max()
    after = np.abs(warped - fixed)[inner].max()
    assert before > 0.1
    assert after < 0.1 * before


def test_field_written_in_itk_convention(tmp_path):
    """A field on disk + SimpleITK's DisplacementFieldTransform maps p to p + u(p)."""
    image = reference((20, 22, 18))
    deformation = demo.KnownDeformation(image, seed=7)
    points = demo.grid_points(image)
    u, _ = deformation.fixed_to_moving(points)
    shape = sitk.GetArrayViewFromImage(image).shape
    field = sitk.GetImageFromArray(u.reshape(shape + (3,)), isVector=True)
    field.CopyInformation(image)
    sitk.WriteImage(field, str(tmp_path / "u.nrrd"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(tmp_path / "u.nrrd")),
                                                          sitk.sitkVectorFloat64))
    for flat in (0, 1234, points.shape[0] // 2):
        assert np.allclose(transform.TransformPoint(points[flat].tolist()), points[flat] + u[flat], atol=1e-6)
    # the evaluation helpers see a perfect registration as perfect
    assert np.allclose(demo._field_on_grid(tmp_path / "u.nrrd", image), u, atol=1e-6)


def test_tissue_labels():
    gm = np.array([200.0, 100.0, 140.0, 0.0])
    wm = np.array([10.0, 200.0, 130.0, 0.0])
    assert demo.tissue_labels(gm, wm).tolist() == [1, 2, 1, 0]


def test_template_available_and_small():
    pytest.importorskip("nilearn")
    t1, gm, wm = demo.load_template()
    assert t1.GetSpacing() == (2.0, 2.0, 2.0)
    assert all(40 < n < 120 for n in t1.GetSize())
    assert sitk.GetArrayViewFromImage(t1).max() > 100
    assert gm.GetSize() == t1.GetSize() == wm.GetSize()
