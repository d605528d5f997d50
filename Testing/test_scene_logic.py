"""Scene logic under slicer-core (Slicer's real MRML without Qt): nodes -> worker -> nodes.

One registration of a phantom pair whose content is shifted by a known translation serves
several checks: the transform node's sign and axes (RAS vs LPS), the exact round trip of the
displacement file into the node, Slicer's own resampling through that node against the
engine's ``warped.nii.gz``, progress order and scoring with segmentation nodes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for Python) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)
import vtk  # noqa: E402  (installed with slicer-core)

from phantom import oblique_direction, phantom, translated  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMRegistration"))
from SlicerSAMRegistrationLib import nodes  # noqa: E402
from SlicerSAMRegistrationLib.prompts import PromptError, markupsToPrompts  # noqa: E402
from SlicerSAMRegistrationLib.scene_logic import (RegistrationCancelled, RegistrationError,  # noqa: E402
                                                  SceneRegistrationLogic)

SHIFT_LPS = np.array([5.0, -3.0, 4.0])        # content shift of the moving image, LPS mm
FAST = {"encoder": "mind", "method_params": {"iterations": 30}}


# ----------------------------------------------------------------------------- helpers
def ras_from_lps(v) -> np.ndarray:
    return np.array([-v[0], -v[1], v[2]], dtype=float)


def load_volume(scene, path: Path, name: str, label: bool = False):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode", name)
    nodes.readVolume(scene, str(path), node)
    return node


def labels_of(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    labels = np.digitize(array, [200, 450, 750]).astype(np.uint8)     # background, body, two blob classes
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def segmentation_from_labels(scene, labelmap, name: str):
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg)
    return seg


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def interior_points_ras(node, step: int = 3, margin: int = 6) -> np.ndarray:
    """RAS positions of a sparse set of voxels well inside the phantom body."""
    array = nodes.arrayFromVolume(node)
    k, j, i = np.nonzero(array > 200)
    keep = (k % step == 0) & (j % step == 0) & (i % step == 0)
    ijk = np.stack([i[keep], j[keep], k[keep]], 1).astype(float)
    dims = np.array(array.shape[::-1])
    ijk = ijk[np.all((ijk >= margin) & (ijk < dims - margin), 1)]
    return (np.c_[ijk, np.ones(len(ijk))] @ ijk_to_ras(node).T)[:, :3]


def scene_state(scene) -> list[str]:
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


# ----------------------------------------------------------------------------- the shared run
@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    # smoothed, so that comparing two resamplings (which interpolate at different points) measures
    # the transform rather than the interpolation of step edges
    fixed = sitk.SmoothingRecursiveGaussian(phantom(size=(40, 36, 26), spacing=(1.6, 1.4, 2.5),
                                                    direction=oblique_direction()), 2.0)
    moving = translated(fixed, SHIFT_LPS)            # moving(q) = fixed(q - shift) on the same grid
    for name, image in (("fixed", fixed), ("moving", moving)):
        sitk.WriteImage(image, str(folder / f"{name}.nrrd"))
        sitk.WriteImage(labels_of(image), str(folder / f"{name}_labels.nrrd"))
    scene = slicer.vtkMRMLScene()
    fixed_node = load_volume(scene, folder / "fixed.nrrd", "fixed")
    moving_node = load_volume(scene, folder / "moving.nrrd", "moving")
    fixed_seg = segmentation_from_labels(scene, load_volume(scene, folder / "fixed_labels.nrrd", "fl", True), "fixed seg")
    moving_seg = segmentation_from_labels(scene, load_volume(scene, folder / "moving_labels.nrrd", "ml", True), "moving seg")
    warped_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
    jacobian_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "jacobian")
    displacement_node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "displacement")
    progress: list[tuple[str, float, str]] = []
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(folder))
    result = logic.register(fixed_node, moving_node, outputVolume=warped_node, settings=FAST,
                            fixedSegmentation=fixed_seg, movingSegmentation=moving_seg,
                            outputJacobianVolume=jacobian_node, outputDisplacementVolume=displacement_node,
                            keepTemporaryFiles=True,
                            progressCallback=lambda stage, overall, message: progress.append((stage, overall, message)))
    return dict(scene=scene, logic=logic, result=result, fixed=fixed_node, moving=moving_node,
                warped=warped_node, progress=progress, folder=folder)


def test_a_known_translation_comes_back_with_the_right_sign_and_axes(registered):
    transform = registered["result"].transformNode
    assert transform.GetTransformNodeID() is None            # the fixed volume has no parent transform
    points = interior_points_ras(registered["fixed"])
    from_parent = transform.GetTransformFromParent()          # resampling direction: fixed -> moving
    moved = np.array([from_parent.TransformPoint(p) for p in points])
    expected = ras_from_lps(SHIFT_LPS)
    error = np.linalg.norm(moved - points - expected, axis=1)
    print(f"\ntranslation round trip: {len(points)} interior points, error mean {error.mean():.3f} mm, "
          f"max {error.max():.3f} mm (expected RAS shift {expected})")
    assert np.all(np.sign((moved - points).mean(0)) == np.sign(expected))
    assert error.mean() < 0.75


def test_the_transform_node_holds_exactly_the_engine_field(registered):
    """displacement.nrrd (LPS, ITK) -> transform node (RAS, VTK): sampled at the fixed voxels."""
    out = Path(registered["result"].outputDir)
    field = sitk.ReadImage(str(out / "displacement.nrrd"))
    disp_lps = sitk.GetArrayFromImage(field).reshape(-1, 3)
    fixed = registered["fixed"]
    dims = fixed.GetImageData().GetDimensions()
    k, j, i = np.meshgrid(*(np.arange(n) for n in dims[::-1]), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)], 1)
    ras = (ijk @ ijk_to_ras(fixed).T)[:, :3]
    pick = np.random.default_rng(0).choice(len(ras), 2000, replace=False)
    from_parent = registered["result"].transformNode.GetTransformFromParent()
    node_disp = np.array([from_parent.TransformPoint(p) for p in ras[pick]]) - ras[pick]
    file_disp = np.array([ras_from_lps(d) for d in disp_lps[pick]])
    error = np.abs(node_disp - file_disp).max()
    print(f"\nfile -> transform node: max |difference| {error:.2e} mm over 2000 fixed voxels")
    assert error < 1e-3


def grid_of(node) -> sitk.Image:
    """An empty SimpleITK image (LPS) with the node's voxel grid."""
    m = ijk_to_ras(node)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    flip = np.diag([-1.0, -1.0, 1.0])
    image = sitk.Image([int(n) for n in node.GetImageData().GetDimensions()], sitk.sitkFloat32)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((flip @ m[:3, 3]).tolist())
    image.SetDirection((flip @ m[:3, :3] / spacing).ravel().tolist())
    return image


def test_slicer_resampling_through_the_node_reproduces_warped(registered):
    """Harden the transform on a copy of the moving volume with Slicer's transform logic and
    compare it with the engine's ``warped.nii.gz`` at the hardened volume's voxels (Slicer
    resamples onto a grid around the transformed volume, so the engine's image is sampled there)."""
    scene, moving = registered["scene"], registered["moving"]
    copy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moving copy")
    nodes.setVolumeArray(copy, nodes.arrayFromVolume(moving), moving)
    copy.SetAndObserveTransformNodeID(registered["result"].transformNode.GetID())
    assert slicer.vtkSlicerTransformLogic().hardenTransform(copy)
    assert copy.GetTransformNodeID() is None
    slicer_warped = nodes.arrayFromVolume(copy).astype(float)
    engine = sitk.ReadImage(str(Path(registered["result"].outputDir) / "warped.nii.gz"), sitk.sitkFloat32)
    engine_warped = sitk.GetArrayFromImage(sitk.Resample(engine, grid_of(copy), sitk.Transform(),
                                                         sitk.sitkLinear, float("nan")))
    inside = np.isfinite(engine_warped)
    inner = np.zeros(inside.shape, bool)
    inner[3:-3, 3:-3, 3:-3] = True                                  # boundary handling differs
    inside &= inner
    assert inside.mean() > 0.3
    diff = np.abs(slicer_warped - engine_warped)[inside]
    value_range = float(np.ptp(engine_warped[inside]))
    print(f"\nSlicer vs engine warped over {int(inside.sum())} voxels: mean |d| {diff.mean():.3f} "
          f"({100 * diff.mean() / value_range:.2f} % of range), 99th pct {np.percentile(diff, 99):.3f}, "
          f"max {diff.max():.3f} (range {value_range:.0f})")
    assert diff.mean() < 0.01 * value_range
    assert np.percentile(diff, 99) < 0.10 * value_range


def test_progress_arrives_in_stage_order_and_results_are_scored(registered):
    progress, result = registered["progress"], registered["result"]
    stages = [stage for stage, _, _ in progress]
    order = ["load", "affine", "encode", "optimise", "write"]
    firsts = [stages.index(s) for s in order]
    assert firsts == sorted(firsts), stages
    overall = [value for _, value, _ in progress]
    assert overall == sorted(overall) and overall[-1] == pytest.approx(1.0)
    metrics = result.metrics
    assert metrics["dice_mean"] > metrics["dice_mean_initial"] + 0.05, metrics
    assert result.report["inputs"]["labels"] == [1, 2, 3]
    assert result.jacobianVolumeNode is not None and result.displacementVolumeNode is not None
    jacobian = nodes.arrayFromVolume(result.jacobianVolumeNode)
    assert jacobian.shape == nodes.arrayFromVolume(registered["fixed"]).shape
    assert 0.5 < float(np.median(jacobian)) < 1.5
    transform = result.transformNode
    assert transform.GetNodeReference(slicer.vtkMRMLTransformNode.GetMovingNodeReferenceRole()) is registered["moving"]
    assert transform.GetNodeReference(slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole()) is registered["fixed"]


def test_checkerboard_alternates_fixed_and_warped(registered):
    logic = registered["logic"]
    board = logic.checkerboardVolume(registered["fixed"], registered["warped"], squareMm=10.0)
    array = nodes.arrayFromVolume(board)
    assert array.shape == nodes.arrayFromVolume(registered["fixed"]).shape
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert np.allclose(ijk_to_ras(board), ijk_to_ras(registered["fixed"]))


# ----------------------------------------------------------------------------- prompts
def test_markups_on_a_transformed_volume_arrive_at_the_right_lps_position(tmp_path):
    """A volume under a rotation+translation, a markups node under its own transform: the job
    gets each point in the LPS frame of the volume's file."""
    scene = slicer.vtkMRMLScene()
    image = phantom(size=(30, 28, 20), direction=oblique_direction())
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    volume = load_volume(scene, tmp_path / "v.nrrd", "volume")
    parent = scene.AddNewNodeByClass("vtkMRMLTransformNode", "volume parent")
    matrix = vtk.vtkMatrix4x4()
    rotation = vtk.vtkTransform()
    rotation.RotateZ(25)
    rotation.RotateX(-10)
    rotation.Translate(12.0, -7.0, 30.0)
    rotation.GetMatrix(matrix)
    parent.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(parent.GetID())
    markups_parent = scene.AddNewNodeByClass("vtkMRMLTransformNode", "markups parent")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(1, 3, 9.0)
    markups_parent.SetMatrixTransformToParent(shift)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    points.SetAndObserveTransformNodeID(markups_parent.GetID())
    # physical LPS positions inside the image -> local RAS -> world RAS -> markups-local RAS
    index = np.array([[10, 12, 8], [20, 5, 15], [3, 20, 2]], float)
    lps = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in index])
    world = [np.array(parent.GetTransformToParent().TransformPoint(ras_from_lps(p))) for p in lps]
    for n, w in enumerate(world):
        points.AddControlPoint(w - np.array([0.0, 9.0, 0.0]), f"P-{n + 1}")
    prompts = markupsToPrompts(points, volume, True, "moving")
    got = np.array([p["position"] for p in prompts])
    print(f"\nmarkups -> job LPS: max error {np.abs(got - lps).max():.2e} mm")
    assert np.abs(got - lps).max() < 1e-4
    assert [p["label"] for p in prompts] == ["P-1", "P-2", "P-3"] and all(p["positive"] for p in prompts)
    # through the logic into the job file, with the worker really started (then cancelled)
    other = load_volume(scene, tmp_path / "v.nrrd", "other")
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(tmp_path))
    logic.register(other, volume, settings=FAST, movingPositivePoints=points, autoPrompts=3,
                   waitForCompletion=False)
    job = json.loads((Path(logic.temporaryDirectory) / "job.json").read_text())
    logic.cancel()
    assert logic.waitForCompletion(timeout=60)
    assert np.abs(np.array([p["position"] for p in job["prompts"]["moving"]]) - lps).max() < 1e-4
    assert job["prompts"]["fixed"] == []
    assert job["auto_prompts"] == 3
    # a point outside the volume is refused with a message naming it
    points.AddControlPoint(world[0] + np.array([0.0, 500.0, 0.0]), "far")
    with pytest.raises(PromptError, match="'far'.*outside"):
        markupsToPrompts(points, volume, True, "moving")


def test_prompt_regions_become_named_segments_on_their_volume(tmp_path):
    """A region label image (label 2 dropped, as the pair checks do) -> one segment per
    structure found, named after it, covering the same voxels."""
    image = phantom(size=(24, 22, 16), direction=oblique_direction())
    array = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    array[4:9, 5:12, 6:14] = 1
    array[10:14, 8:15, 3:9] = 3
    regions = sitk.GetImageFromArray(array)
    regions.CopyInformation(image)
    sitk.WriteImage(regions, str(tmp_path / "moving_regions.nii.gz"))
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "regions")
    count = nodes.readRegions(scene, str(tmp_path / "moving_regions.nii.gz"), node, ["RV", "Myo", "LV"])
    assert count == 2
    segmentation = node.GetSegmentation()
    names = sorted(segmentation.GetNthSegment(i).GetName() for i in range(2))
    assert names == ["LV", "RV"]
    left = [scene.GetNthNode(i).GetClassName() for i in range(scene.GetNumberOfNodes())]
    assert sorted(left) == ["vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode"], left   # no label map left
    # back to a label map on the image's grid: the same voxels under the same labels
    reference = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reference")
    nodes.readVolume(scene, str(tmp_path / "moving_regions.nii.gz"), reference)
    exported = nodes.writeLabels(scene, node, reference, str(tmp_path / "back.nrrd"), ["RV", "LV"])
    back = sitk.GetArrayFromImage(sitk.ReadImage(exported))
    assert np.array_equal(back == 1, array == 1) and np.array_equal(back == 2, array == 3)


def test_a_prompted_run_loads_the_regions_of_both_volumes(tmp_path):
    """Automatic prompts through the logic: each volume gets a segmentation of its regions,
    in its own frame (the moving one follows the moving volume through the result)."""
    fixed = sitk.SmoothingRecursiveGaussian(phantom(size=(36, 32, 20)), 1.0)
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nrrd"))
    sitk.WriteImage(translated(fixed, (3.0, -2.0, 2.0)), str(tmp_path / "moving.nrrd"))
    scene = slicer.vtkMRMLScene()
    fixed_node = load_volume(scene, tmp_path / "fixed.nrrd", "fixed")
    moving_node = load_volume(scene, tmp_path / "moving.nrrd", "moving")
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(tmp_path))
    result = logic.register(fixed_node, moving_node, settings={**FAST, "method": "promptreg"}, autoPrompts=2)
    assert set(result.regionSegmentationNodes) == {"fixed", "moving"}
    for side, volume in (("fixed", fixed_node), ("moving", moving_node)):
        node = result.regionSegmentationNodes[side]
        assert node.GetName() == f"{volume.GetName()}-regions"
        assert node.GetTransformNodeID() == volume.GetTransformNodeID()
        segmentation = node.GetSegmentation()
        names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        assert names <= {"auto-1", "auto-2"}
    assert moving_node.GetTransformNodeID() == result.transformNode.GetID()
    assert len(result.report["resolved"]["auto_prompts"]) == 2



def test_segmentations_become_the_assisted_methods_masks(tmp_path):
    """Segmentations given as masks reach ``assisted`` as label files matched by segment name
    (the report says it used them); for any other method they are refused before a run."""
    import torch
    from SAMRegistrationLib.learned.assisted.config import AssistedConfig
    from SAMRegistrationLib.learned.assisted.model import AssistedModel
    from SAMRegistrationLib.training.checkpointing import write_model
    fixed = sitk.SmoothingRecursiveGaussian(phantom(size=(36, 32, 20), spacing=(2.0, 2.0, 2.0)), 1.0)
    moving = translated(fixed, (3.0, 0.0, 0.0))
    for name, image in (("fixed", fixed), ("moving", moving)):
        sitk.WriteImage(image, str(tmp_path / f"{name}.nrrd"))
        sitk.WriteImage(labels_of(image), str(tmp_path / f"{name}_labels.nrrd"))
    torch.manual_seed(0)
    config = AssistedConfig(width=4, levels=2, spacing=2.0)
    write_model({"kind": "samreg-model", "task": "assisted", "model": AssistedModel(config).state_dict(),
                 "task_config": config.to_dict(), "data_hash": ""}, tmp_path / "model.pt")
    scene = slicer.vtkMRMLScene()
    fixed_node = load_volume(scene, tmp_path / "fixed.nrrd", "fixed")
    moving_node = load_volume(scene, tmp_path / "moving.nrrd", "moving")
    fixed_seg = segmentation_from_labels(scene, load_volume(scene, tmp_path / "fixed_labels.nrrd", "fl", True), "f")
    moving_seg = segmentation_from_labels(scene, load_volume(scene, tmp_path / "moving_labels.nrrd", "ml", True), "m")
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(tmp_path))
    with pytest.raises(ValueError, match="assisted method only"):
        logic.register(fixed_node, moving_node, settings=FAST, fixedMaskSegmentation=fixed_seg,
                       movingMaskSegmentation=moving_seg)
    settings = {"encoder": "mind", "method": "assisted", "affine": False,
                "method_params": {"model": str(tmp_path / "model.pt"), "iterations": 20}}
    result = logic.register(fixed_node, moving_node, settings=settings, fixedMaskSegmentation=fixed_seg,
                            movingMaskSegmentation=moving_seg)
    method = result.report["resolved"]["method"]
    assert method["masks"] == "files" and method["structures"] == 3, method


# ----------------------------------------------------------------------------- cancel and errors
def test_cancel_mid_run_leaves_no_new_nodes_and_no_temporary_folder(tmp_path):
    scene = slicer.vtkMRMLScene()
    image = phantom(size=(40, 36, 26))
    sitk.WriteImage(image, str(tmp_path / "f.nrrd"))
    sitk.WriteImage(translated(image, SHIFT_LPS), str(tmp_path / "m.nrrd"))
    fixed = load_volume(scene, tmp_path / "f.nrrd", "fixed")
    moving = load_volume(scene, tmp_path / "m.nrrd", "moving")
    before = scene_state(scene)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(temp_root))
    seen: list[str] = []
    completed: list = []

    def on_progress(stage, overall, message):
        seen.append(stage)
        if stage == "encode" and logic.isRunning:
            logic.cancel()

    with pytest.raises(RegistrationCancelled):
        logic.register(fixed, moving, settings=FAST, progressCallback=on_progress,
                       completedCallback=lambda result, error: completed.append((result, error)))
    assert "encode" in seen and "write" not in seen
    assert completed == [(None, "cancelled")]
    assert scene_state(scene) == before
    assert moving.GetTransformNodeID() is None
    assert list(temp_root.iterdir()) == []
    assert not logic.isRunning


def test_a_worker_error_becomes_a_clear_message(tmp_path):
    scene = slicer.vtkMRMLScene()
    image = phantom(size=(30, 28, 20))
    sitk.WriteImage(image, str(tmp_path / "f.nrrd"))
    constant = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 7.0
    constant.CopyInformation(image)
    sitk.WriteImage(constant, str(tmp_path / "m.nrrd"))
    fixed = load_volume(scene, tmp_path / "f.nrrd", "fixed")
    moving = load_volume(scene, tmp_path / "m.nrrd", "moving")
    before = scene_state(scene)
    with pytest.raises(RegistrationError, match="moving image.*constant") as info:
        SceneRegistrationLogic(scene, temporaryRoot=str(tmp_path)).register(fixed, moving, settings=FAST)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    assert scene_state(scene) == before


def test_unusable_inputs_are_refused_before_anything_starts(tmp_path):
    scene = slicer.vtkMRMLScene()
    image = phantom(size=(30, 28, 20))
    sitk.WriteImage(image, str(tmp_path / "f.nrrd"))
    flat = sitk.GetImageFromArray(np.ones((1, 28, 30), np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.nrrd"))
    fixed = load_volume(scene, tmp_path / "f.nrrd", "fixed")
    flat_node = load_volume(scene, tmp_path / "flat.nrrd", "flat")
    labels = load_volume(scene, tmp_path / "f.nrrd", "labels", label=True)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(tmp_path / "none"))
    cases = [((fixed, fixed), {}, "same node"),
             ((fixed, flat_node), {}, "not 3D"),
             ((fixed, empty), {}, "no image data"),
             ((None, fixed), {}, "no fixed volume"),
             ((fixed, labels), {}, "scalar volume"),
             ((fixed, load_volume(scene, tmp_path / "f.nrrd", "m")), {"settings": {"encodr": "mind"}}, "unknown setting"),
             ((fixed, load_volume(scene, tmp_path / "f.nrrd", "m2")), {"fixedSegmentation": labels}, "both")]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            logic.register(*args, **kwargs)
    assert not (tmp_path / "none").exists() or not os.listdir(tmp_path / "none")
