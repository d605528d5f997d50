"""``samreg apply`` and ``samreg invert``: a written displacement field applied to images, label
maps and point sets in either direction, checked against SimpleITK's own resampling and point
transform, and the inverse checked against ITK's inverse filter and by round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import samreg
from phantom import oblique_direction, phantom, smooth_field
from SAMRegistrationLib.apply import apply, invert, read_field
from SAMRegistrationLib.errors import InputError


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apply")
    fixed = phantom(direction=oblique_direction())
    field = smooth_field(fixed, amplitude_mm=3.0, wavelength_mm=80.0)
    sitk.WriteImage(sitk.Cast(field, sitk.sitkVectorFloat32), str(folder / "displacement.nrrd"))
    moving = phantom(direction=oblique_direction(), seed=3)
    sitk.WriteImage(moving, str(folder / "moving.nii.gz"))
    labels = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayFromImage(moving) > 200).astype(np.uint8) +
                                              (sitk.GetArrayFromImage(moving) > 500).astype(np.uint8)), sitk.sitkUInt8)
    labels.CopyInformation(moving)
    sitk.WriteImage(labels, str(folder / "labels.nii.gz"))
    inside = np.argwhere(sitk.GetArrayFromImage(fixed) > 100)[::97][:, ::-1].astype(float)
    points = np.array([fixed.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in inside])
    (folder / "points.csv").write_text("x,y,z\n" + "".join(f"{p[0]},{p[1]},{p[2]}\n" for p in points))
    return {"folder": folder, "fixed": fixed, "field": field, "points": points}


def _transform(field: sitk.Image) -> sitk.DisplacementFieldTransform:
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def test_images_and_labels_from_the_moving_space_match_simpleitk(case, tmp_path):
    folder = case["folder"]
    result = apply(folder, [folder / "moving.nii.gz"], tmp_path / "img")
    ours = sitk.ReadImage(str(tmp_path / "img" / "moving.nii.gz"))
    moving = sitk.ReadImage(str(folder / "moving.nii.gz"), sitk.sitkFloat32)
    expected = sitk.Resample(moving, case["fixed"], _transform(case["field"]), sitk.sitkLinear,
                             float(sitk.GetArrayViewFromImage(moving).min()), sitk.sitkFloat32)
    assert np.allclose(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(expected), atol=1e-3)
    assert "inverse_max_error_mm" not in result              # images from the moving space need no inverse

    apply(folder, [folder / "labels.nii.gz"], tmp_path / "lab", labels=True)
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "lab" / "labels.nii.gz")))
    assert set(np.unique(warped)) <= {0, 1, 2} and set(np.unique(warped)) >= {1, 2}


def test_points_go_both_ways_and_come_back(case, tmp_path):
    folder, points = case["folder"], case["points"]
    apply(folder, [folder / "points.csv"], tmp_path / "to-moving", space="fixed")
    moved = np.loadtxt(tmp_path / "to-moving" / "points.csv", delimiter=",", skiprows=1)
    transform = _transform(case["field"])
    expected = np.array([transform.TransformPoint(tuple(p)) for p in points])
    assert np.abs(moved - expected).max() < 1e-3               # fixed -> moving is x + u(x), as ITK maps it
    result = apply(folder, [tmp_path / "to-moving" / "points.csv"], tmp_path / "back", space="moving")
    back = np.loadtxt(tmp_path / "back" / "points.csv", delimiter=",", skiprows=1)
    assert np.linalg.norm(back - points, axis=1).max() < 0.05  # moving -> fixed through the inverse
    assert result["inverse_max_error_mm"] < 0.05


def test_markups_and_elastix_points_keep_their_format(case, tmp_path):
    folder, points = case["folder"], case["points"][:3]
    markups = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                          "Resources/Schema/markups-schema-v1.0.3.json#",
               "markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [
                   {"label": f"p{i}", "position": [-p[0], -p[1], p[2]]} for i, p in enumerate(points)]}]}
    (tmp_path / "clicks.mrk.json").write_text(json.dumps(markups))
    (tmp_path / "points.txt").write_text("point\n3\n" + "".join(f"{p[0]} {p[1]} {p[2]}\n" for p in points))
    apply(folder, [tmp_path / "clicks.mrk.json", tmp_path / "points.txt"], tmp_path / "out", space="fixed")
    doc = json.loads((tmp_path / "out" / "clicks.mrk.json").read_text())
    ras = np.array([cp["position"] for cp in doc["markups"][0]["controlPoints"]])
    assert doc["markups"][0]["coordinateSystem"] == "RAS" and doc["markups"][0]["controlPoints"][2]["label"] == "p2"
    elastix = (tmp_path / "out" / "points.txt").read_text().split("\n")
    assert elastix[:2] == ["point", "3"]
    mapped = np.loadtxt(elastix[2:5])
    assert np.abs(ras * [-1, -1, 1] - mapped).max() < 1e-4      # the same points, each in its file's frame


def test_the_inverse_agrees_with_itk_and_is_consistent(case, tmp_path):
    inverse = invert(read_field(case["folder"]))
    assert inverse.max_error_mm < 0.05 and inverse.mean_error_mm < inverse.max_error_mm
    itk = sitk.InvertDisplacementField(sitk.Cast(case["field"], sitk.sitkVectorFloat64), maximumNumberOfIterations=50,
                                       maxErrorToleranceThreshold=0.01, meanErrorToleranceThreshold=0.001,
                                       enforceBoundaryCondition=False)
    ours = sitk.GetArrayFromImage(inverse.field.to_image())
    difference = np.linalg.norm(ours - sitk.GetArrayFromImage(itk), axis=-1)
    assert np.median(difference) < 0.05, np.median(difference)

    result = samreg("invert", case["folder"] / "displacement.nrrd", "-o", tmp_path / "inverse.nrrd")
    assert result.returncode == 0, result.stderr
    assert "inverse-consistency error: max" in result.stdout
    written = sitk.ReadImage(str(tmp_path / "inverse.nrrd"))
    assert written.GetSize() == case["fixed"].GetSize() and written.GetNumberOfComponentsPerPixel() == 3


def test_bad_inputs_are_one_line_and_inputs_are_never_overwritten(case, tmp_path):
    folder = case["folder"]
    with pytest.raises(InputError, match="no displacement field"):
        apply(tmp_path, [folder / "moving.nii.gz"], tmp_path / "out")
    with pytest.raises(InputError, match="would overwrite the input"):
        apply(folder, [folder / "moving.nii.gz"], folder)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "points.csv").write_text((folder / "points.csv").read_text())
    with pytest.raises(InputError, match="share the file name points.csv"):
        apply(folder, [folder / "points.csv", tmp_path / "other" / "points.csv"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = samreg("apply", folder, tmp_path / "missing.nii.gz", "-o", tmp_path / "out")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "input not found" in lines[0], lines
    result = samreg("invert", folder, "-o", tmp_path / "inverse.txt")
    assert result.returncode == 2 and "must be an image file" in result.stderr
