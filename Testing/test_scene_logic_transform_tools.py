"""``applyDisplacement`` and ``invertDisplacement`` of the scene logic under slicer-core (real
MRML, the engine's ``apply``/``invert`` in a real child process), against SimpleITK applying
the same displacement field.

The field: a 3 mm translation plus a smooth Gaussian bump on a 24^3 grid of 1 mm, LPS,
phi(x) = x + u(x) (fixed -> moving). Fine enough that the inverse, sampled on that grid and
interpolated trilinearly between its nodes, is good to a few hundredths of a mm everywhere.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for Python) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)
import vtk  # noqa: E402  (installed with slicer-core)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMRegistration"))
from SlicerSAMRegistrationLib import nodes  # noqa: E402
from SlicerSAMRegistrationLib.scene_logic import RegistrationError, SceneRegistrationLogic  # noqa: E402
from SlicerSAMRegistrationLib.transform_tools import parseInverseErrors  # noqa: E402

TRANSLATION_LPS = np.array([3.0, 0.0, 0.0])
BUMP_LPS = np.array([1.5, -0.75, 1.2])            # peak displacement of the bump at the origin
BUMP_SIGMA = 5.0
FIELD_SIZE, FIELD_SPACING, FIELD_ORIGIN = 24, 1.0, -11.5
LABELS = (0, 3, 7)


# ----------------------------------------------------------------------------- helpers
def flip(points) -> np.ndarray:
    """LPS <-> RAS (x and y change sign)."""
    return np.asarray(points, float) * np.array([-1.0, -1.0, 1.0])


def displacement(points_lps) -> np.ndarray:
    """u(x), LPS mm, of (N, 3) LPS points."""
    points = np.asarray(points_lps, float)
    bump = np.exp(-(points ** 2).sum(-1) / (2 * BUMP_SIGMA ** 2))[..., None]
    return TRANSLATION_LPS + bump * BUMP_LPS


def displacement_field() -> sitk.Image:
    axis = FIELD_ORIGIN + FIELD_SPACING * np.arange(FIELD_SIZE)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    image = sitk.GetImageFromArray(displacement(np.stack([x, y, z], -1)), isVector=True)
    image.SetSpacing((FIELD_SPACING,) * 3)
    image.SetOrigin((FIELD_ORIGIN,) * 3)
    return image


def itk_transform(field: sitk.Image) -> sitk.DisplacementFieldTransform:
    return sitk.DisplacementFieldTransform(sitk.Image(field))     # it takes its image over


def moving_image() -> sitk.Image:
    """A smooth image on a grid other than the field's (spacing, origin, a rotation)."""
    size, spacing, origin = 22, 1.6, -17.0
    axis = np.arange(size)
    k, j, i = np.meshgrid(axis, axis, axis, indexing="ij")
    values = 1000 * np.exp(-((i - 12) ** 2 + (j - 9) ** 2 + (k - 11) ** 2) / 40.0) + 10 * i + 5 * k
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin((origin, origin + 1.0, origin - 0.5))
    rotation = sitk.VersorTransform((0.0, 0.0, 1.0), 0.2)
    image.SetDirection(rotation.GetMatrix())
    return image


def label_image(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    labels = np.where(array > 600, LABELS[2], np.where(array > 200, LABELS[1], LABELS[0])).astype(np.uint8)
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def control_points(node) -> np.ndarray:
    return np.array([node.GetNthControlPointPosition(i) for i in range(node.GetNumberOfControlPoints())])


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


# ----------------------------------------------------------------------------- the scene
# LPS mm; the first on a grid node of the field
POINTS_LPS = np.array([[0.5, -0.5, 0.5], [4.0, -3.0, 2.0], [-6.0, 5.0, -4.0], [2.5, 7.0, 6.0], [-8.0, -6.0, 3.0]])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transform-tools")
    field = displacement_field()
    sitk.WriteImage(field, str(folder / "displacement.nrrd"))
    moving = moving_image()
    sitk.WriteImage(moving, str(folder / "moving.nrrd"))
    sitk.WriteImage(label_image(moving), str(folder / "moving_labels.nrrd"))
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moving")
    nodes.readVolume(scene, str(folder / "moving.nrrd"), volume)
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "moving labels")
    nodes.readVolume(scene, str(folder / "moving_labels.nrrd"), labels)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    for n, p in enumerate(POINTS_LPS):
        points.AddControlPoint(flip(p), f"P-{n + 1}")
    (folder / "tmp").mkdir()
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(folder / "tmp"))
    before = node_count(scene)
    outputs = logic.applyDisplacement(str(folder / "displacement.nrrd"), [volume, labels, points])
    return dict(folder=folder, field=field, moving=moving, scene=scene, logic=logic, volume=volume,
                labels=labels, points=points, outputs=outputs, before=before)


def test_outputs_are_new_nodes_of_their_inputs_kind(setup):
    outputs, scene = setup["outputs"], setup["scene"]
    assert [type(n) for n in outputs] == [slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLLabelMapVolumeNode,
                                          slicer.vtkMRMLMarkupsFiducialNode]
    assert [n.GetName() for n in outputs] == ["moving (registered)", "moving labels (registered)", "P (registered)"]
    assert all(scene.IsNodePresent(n) and n.GetTransformNodeID() is None for n in outputs)
    assert list((setup["folder"] / "tmp").iterdir()) == []                 # temporary folders removed


def test_a_moving_volume_matches_simpleitk_resampling(setup):
    field, moving = setup["field"], setup["moving"]
    default = float(sitk.GetArrayViewFromImage(moving).min())
    expected = sitk.Resample(moving, field, itk_transform(field), sitk.sitkLinear, default, sitk.sitkFloat32)
    node = setup["outputs"][0]
    got = nodes.arrayFromVolume(node).astype(float)
    want = sitk.GetArrayFromImage(expected).astype(float)
    assert got.shape == want.shape == (FIELD_SIZE,) * 3
    # on the field's grid: RAS origin is the LPS origin with x, y negated
    assert np.allclose(ijk_to_ras(node)[:3, 3], flip(field.GetOrigin()))
    assert np.allclose(np.abs(np.diag(ijk_to_ras(node))[:3]), FIELD_SPACING)
    diff = np.abs(got - want)
    print(f"\nengine vs SimpleITK: max |d| {diff.max():.2e} (range {np.ptp(want):.0f})")
    assert diff.max() < 1e-3 * np.ptp(want)
    assert np.ptp(want) > 100                                               # the content was inside


def test_a_label_map_stays_a_label_map_with_its_values(setup):
    field = setup["field"]
    node = setup["outputs"][1]
    got = nodes.arrayFromVolume(node)
    assert set(np.unique(got).tolist()) == set(LABELS)
    moving_labels = sitk.ReadImage(str(setup["folder"] / "moving_labels.nrrd"))
    expected = sitk.GetArrayFromImage(sitk.Resample(moving_labels, field, itk_transform(field),
                                                    sitk.sitkNearestNeighbor, 0))
    agreement = float((got == expected).mean())
    print(f"\nlabels: agreement with SimpleITK nearest neighbour {agreement:.4f}")
    assert agreement > 0.99


def test_moving_points_come_back_through_the_inverse(setup):
    """From moving: q with phi(q) = p (checked with SimpleITK applying phi, in LPS)."""
    moved = control_points(setup["outputs"][2])
    assert moved.shape == POINTS_LPS.shape
    transform = itk_transform(setup["field"])
    forward = np.array([transform.TransformPoint(tuple(q)) for q in flip(moved)])
    error = np.linalg.norm(forward - POINTS_LPS, axis=1)
    print(f"\nmoving points: |phi(q) - p| max {error.max():.4f} mm")
    assert error.max() < 0.05
    assert np.linalg.norm(flip(moved) - POINTS_LPS, axis=1).min() > 2.5    # they did move


def test_fixed_points_move_by_the_field_given_as_a_transform_node(setup):
    """From fixed: phi(x) = x + u(x) in LPS, i.e. x and y displacements flip sign in RAS. The
    field is given as a transform node (a registration's result), written back by the logic."""
    scene, logic = setup["scene"], setup["logic"]
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "registration")
    nodes.readTransform(scene, str(setup["folder"] / "displacement.nrrd"), transform)
    [moved] = logic.applyDisplacement(transform, [setup["points"]], fromSpace="fixed")
    itk = itk_transform(setup["field"])
    expected_lps = np.array([itk.TransformPoint(tuple(p)) for p in POINTS_LPS])
    got = control_points(moved)
    error = np.linalg.norm(got - flip(expected_lps), axis=1)
    print(f"\nfixed points: max error {error.max():.2e} mm")
    assert error.max() < 0.05
    # at a grid node the displacement is exactly u, with x and y negated in RAS
    assert np.allclose(got[0] - flip(POINTS_LPS[0]), flip(displacement(POINTS_LPS[0])), atol=1e-3)
    assert [moved.GetNthControlPointLabel(i) for i in range(5)] == [f"P-{n + 1}" for n in range(5)]


def test_the_inverse_composes_to_the_identity(setup):
    scene, logic, folder = setup["scene"], setup["logic"], setup["folder"]
    target = folder / "inverse.nrrd"
    inverse, errors = logic.invertDisplacement(str(folder / "displacement.nrrd"), outputPath=str(target))
    assert isinstance(inverse, slicer.vtkMRMLTransformNode) and scene.IsNodePresent(inverse)
    assert inverse.GetName() == "displacement (inverse)"
    assert target.is_file() and list((folder / "tmp").iterdir()) == []
    assert set(errors) == {"max_mm", "mean_mm", "p99_mm"}
    print(f"\ninverse-consistency errors: {errors}")
    assert 0.0 <= errors["mean_mm"] <= errors["max_mm"] < 0.1
    forward = scene.AddNewNodeByClass("vtkMRMLTransformNode", "forward")
    nodes.readTransform(scene, str(folder / "displacement.nrrd"), forward)
    phi, phi_inverse = forward.GetTransformFromParent(), inverse.GetTransformFromParent()
    for p in flip(POINTS_LPS):
        back = np.array(phi_inverse.TransformPoint(p))
        assert np.linalg.norm(back - p) > 2.5                              # the inverse is not the identity
        assert np.linalg.norm(np.array(phi.TransformPoint(back)) - p) < 0.05
    # into a given node, from a registration output folder
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "mine")
    again, _ = logic.invertDisplacement(str(folder), outputTransformNode=node, iterations=30)
    assert again is node
    p = flip(POINTS_LPS[1])
    assert np.allclose(node.GetTransformFromParent().TransformPoint(p), phi_inverse.TransformPoint(p), atol=0.05)
    # from a transform node (a registration's result), into a new node named after it
    from_node, _ = logic.invertDisplacement(forward)
    assert from_node.GetName() == "forward (inverse)"
    assert np.allclose(from_node.GetTransformFromParent().TransformPoint(p), phi_inverse.TransformPoint(p), atol=1e-6)


def test_failures_raise_one_line_and_add_no_nodes(setup):
    scene, logic, folder = setup["scene"], setup["logic"], setup["folder"]
    not_an_input = scene.AddNewNodeByClass("vtkMRMLTransformNode", "not an input")
    before = node_count(scene)
    missing = folder / "no-such" / "displacement.nrrd"
    with pytest.raises(RegistrationError, match="no displacement field") as info:
        logic.applyDisplacement(str(missing), [setup["volume"], setup["points"]])
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    with pytest.raises(RegistrationError, match="no displacement field"):
        logic.invertDisplacement(str(missing))
    with pytest.raises(RegistrationError, match="image file"):            # the engine's own check
        logic.invertDisplacement(str(folder / "displacement.nrrd"), outputPath=str(folder / "inverse.txt"))
    with pytest.raises(ValueError, match="cannot transform"):
        logic.applyDisplacement(str(folder / "displacement.nrrd"), [setup["volume"], not_an_input])
    assert node_count(scene) == before
    assert list((folder / "tmp").iterdir()) == []


def test_the_inverse_error_line_is_parsed():
    line = "inverse-consistency error: max 0.0570 mm, mean 0.0000 mm, 99th percentile 1e-04 mm"
    assert parseInverseErrors(["/x/inverse.nrrd", line]) == {"max_mm": 0.057, "mean_mm": 0.0, "p99_mm": 1e-4}
    assert parseInverseErrors(["something else"]) is None
