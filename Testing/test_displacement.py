"""The displacement-field type on an anisotropic, oblique grid: units, ITK round trip, point
mapping against ITK's own transform, composition, inversion, Jacobian and warping."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantom import oblique_direction, phantom, smooth_field, translated
from SAMRegistrationLib.displacement import DisplacementField
from SAMRegistrationLib.fields import total_displacement
from SAMRegistrationLib.grid import Grid
from SAMRegistrationLib.metrics import jacobian_determinant


@pytest.fixture(scope="module")
def image() -> sitk.Image:
    return phantom(direction=oblique_direction())


@pytest.fixture(scope="module")
def grid(image) -> Grid:
    return Grid.from_image(image)


@pytest.fixture(scope="module")
def smooth(image) -> DisplacementField:
    return DisplacementField.from_image(smooth_field(image, amplitude_mm=2.5, wavelength_mm=70.0))


def interior_points(grid: Grid, count: int = 300, margin: int = 4, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    index = rng.uniform(margin, np.asarray(grid.size) - 1 - margin, size=(count, 3))
    return torch.from_numpy(grid.index_to_world(index))


def linear_field(grid: Grid, matrix: np.ndarray) -> DisplacementField:
    """u(x) = A (x - centre): its Jacobian is det(I + A) everywhere."""
    points = grid.world_points(torch.float64)
    centre = torch.as_tensor(grid.index_to_world((np.asarray(grid.size) - 1) / 2.0))
    u = (points - centre) @ torch.as_tensor(matrix).T
    return DisplacementField(grid, u.permute(3, 0, 1, 2)[None].float().contiguous())


def test_voxel_units_round_trip_and_shape_is_checked(grid):
    voxels = torch.randn((1, 3, *grid.shape))
    field = DisplacementField.from_voxels(grid, voxels)
    assert torch.allclose(field.to_voxels(), voxels, atol=1e-5)
    one_voxel_i = torch.zeros((1, 3, *grid.shape))
    one_voxel_i[:, 0] = 1.0                       # one voxel along i is spacing_x mm along direction column 0
    mm = DisplacementField.from_voxels(grid, one_voxel_i).data[0, :, 0, 0, 0].double().numpy()
    assert np.allclose(mm, grid.direction_matrix[:, 0] * grid.spacing[0], atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        DisplacementField(grid, torch.zeros(1, 3, 2, 2, 2))


def test_itk_round_trip_and_points_agree_with_itk(smooth, tmp_path):
    path = tmp_path / "field.nrrd"
    smooth.write(path)
    back = DisplacementField.read(path)
    assert back.grid.size == smooth.grid.size and torch.equal(back.data, smooth.data)
    for attribute in ("spacing", "origin", "direction"):   # NRRD's header keeps ~15 digits
        assert np.allclose(getattr(back.grid, attribute), getattr(smooth.grid, attribute), atol=1e-9)
    transform = smooth.to_transform()
    points = interior_points(smooth.grid)
    ours = smooth.map_points(points).numpy()
    itk = np.array([transform.TransformPoint(p) for p in points.numpy().tolist()])
    assert np.abs(ours - itk).max() < 1e-4


def test_warp_image_of_a_constant_field_is_the_translation(image, grid):
    shift = np.array([4.0, -3.0, 2.5])
    field = DisplacementField(grid, torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1, 1)
                              .expand(1, 3, *grid.shape).contiguous())
    moving = translated(image, shift)               # moving(q) = image(q - shift)
    warped = sitk.GetArrayFromImage(field.warp_image(moving, default=0.0))
    by_translation = sitk.GetArrayFromImage(sitk.Resample(moving, image, sitk.TranslationTransform(3, shift.tolist()),
                                                          sitk.sitkLinear, 0.0, moving.GetPixelID()))
    assert np.abs(warped - by_translation).max() < 1e-3 * np.abs(by_translation).max()
    original = sitk.GetArrayFromImage(image)
    inside = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.Cast(image > 100, sitk.sitkUInt8), [4, 4, 4])) > 0
    before = np.abs(sitk.GetArrayFromImage(moving) - original)[inside].mean()
    assert np.abs(warped - original)[inside].mean() < 0.5 * before      # the shift is undone, not doubled
    labels = sitk.Cast(moving > 600, sitk.sitkUInt8)
    warped_labels = field.warp_image(labels, sitk.sitkNearestNeighbor, default=0)
    assert warped_labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(warped_labels))) <= {0, 1}


def test_compose_adds_translations_and_undoes_an_inverse(grid, smooth):
    a = DisplacementField(grid, torch.full((1, 3, *grid.shape), 1.5))
    b = DisplacementField(grid, torch.full((1, 3, *grid.shape), -0.5))
    assert torch.allclose(a.compose(b).data, torch.full_like(a.data, 1.0))
    inverse, error = smooth.inverse()
    assert error < 0.05                             # mm, the inverse-consistency error it reports
    points = interior_points(grid)
    assert (inverse.map_points(smooth.map_points(points)) - points).norm(dim=-1).max() < 0.1
    assert (smooth.compose(inverse).at(points)).norm(dim=-1).max() < 0.05


def test_inverse_of_a_translation_is_its_negative(grid):
    shift = DisplacementField(grid, torch.full((1, 3, *grid.shape), 2.0))
    inverse, error = shift.inverse()
    assert torch.allclose(inverse.data, -shift.data, atol=1e-5) and error < 1e-4


def test_jacobian_is_physical_on_an_oblique_anisotropic_grid(grid):
    matrix = np.array([[0.10, 0.02, -0.03], [0.01, -0.15, 0.04], [0.05, 0.00, 0.08]])
    field = linear_field(grid, matrix)
    jac = field.jacobian_determinant()
    assert torch.allclose(jac, torch.full_like(jac, np.linalg.det(np.eye(3) + matrix)), atol=1e-4)
    reference = jacobian_determinant(field.data[0].permute(1, 2, 3, 0).numpy(), grid.spacing, grid.direction)
    assert np.allclose(jac.numpy(), reference, atol=1e-5)
    assert field.fold_percent() == 0.0
    folding = linear_field(grid, -1.5 * np.eye(3))
    assert folding.fold_percent() == 100.0


def test_resample_of_a_linear_field_is_exact_inside(grid):
    field = linear_field(grid, np.array([[0.1, 0, 0], [0, 0.05, 0.02], [0, 0, -0.1]]))
    finer = grid.cropped((4, 4, 4), (grid.size[0] - 4, grid.size[1] - 4, grid.size[2] - 4)).with_spacing(1.0)
    resampled = field.resample(finer)
    expected = linear_field(finer, np.array([[0.1, 0, 0], [0, 0.05, 0.02], [0, 0, -0.1]]))
    assert torch.allclose(resampled.data, expected.data, atol=1e-3)


def test_with_affine_matches_the_pipeline_composition(image, grid, smooth):
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.02, 0.01, 0.0, -0.02, 0.98, 0.01, 0.0, 0.015, 1.01])
    affine.SetTranslation([1.0, -2.0, 0.5])
    affine.SetCenter([0.0, 5.0, -3.0])
    work = grid.with_spacing(2.0)
    coarse = smooth.resample(work)
    expected = total_displacement(grid, work, coarse.to_voxels(), affine)
    ours = coarse.with_affine(affine).resample(grid)
    points = interior_points(grid)
    ours_at = ours.at(points).numpy()
    expected_at = DisplacementField.from_image(grid.image_from_array(expected, is_vector=True)).at(points).numpy()
    assert np.abs(ours_at - expected_at).max() < 0.05


def test_grid_pyramid_levels_share_the_frame(grid):
    levels = grid.pyramid((4, 2, 1))
    assert levels[-1] is grid
    assert [lv.spacing for lv in levels[:2]] == [tuple(4 * s for s in grid.spacing), tuple(2 * s for s in grid.spacing)]
    assert levels[0].size == tuple(n // 4 for n in grid.size)
    for level, factor in zip(levels[:2], (4, 2)):   # cell 0's centre is the mean of voxels 0..f-1
        assert np.allclose(level.index_to_world(np.zeros(3)), grid.index_to_world(np.full(3, (factor - 1) / 2)))
        assert level.direction == grid.direction
    with pytest.raises(ValueError, match="whole numbers"):
        grid.pyramid((1.5,))
