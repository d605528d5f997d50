"""read_dicom_folder: good series come back with the right geometry; ambiguous ones are
refused with one clear line. The DICOM series are written by SimpleITK into tmp folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_writer import GAP, PIXEL, SHAPE, pattern_volume, rotation_matrix, write_series

from SAMRegistrationLib.dicom_series import read_dicom_folder
from SAMRegistrationLib.errors import InputError

def refused(folder: Path, *words: str) -> str:
    with pytest.raises(InputError) as info:
        read_dicom_folder(folder, "moving image")
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith("moving image") and str(folder) in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


@pytest.mark.parametrize("rot", [np.eye(3), rotation_matrix(0.4, 0.3)], ids=["axial", "oblique"])
def test_good_series_geometry_and_values(tmp_path, rot):
    write_series(tmp_path, rot=rot)
    image = read_dicom_folder(tmp_path, "fixed image")
    assert image.GetSize() == (24, 20, 12)
    np.testing.assert_allclose(image.GetSpacing(), (*PIXEL, GAP), atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), (-10.0, 5.0, 30.0), atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), rot, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), pattern_volume())
    # the physical point of a voxel matches where the source put it
    point = image.TransformIndexToPhysicalPoint((3, 4, 5))
    expected = np.array([-10.0, 5.0, 30.0]) + rot @ np.array([3 * PIXEL[0], 4 * PIXEL[1], 5 * GAP])
    np.testing.assert_allclose(point, expected, atol=1e-4)


def test_empty_and_junk_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "no DICOM")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image\n")
    (junk / "data.bin").write_bytes(np.random.default_rng(0).bytes(4000))
    refused(junk, "no DICOM")


def test_several_series(tmp_path):
    write_series(tmp_path, desc="CT head", name="a")
    write_series(tmp_path, desc="CT body", uid="1.2.826.0.1.3680043.2.1125.2", name="b")
    message = refused(tmp_path, "2 series", "CT head", "CT body", "one series")
    assert "12 file" in message


def test_single_slice(tmp_path):
    write_series(tmp_path, volume=pattern_volume()[:1])
    refused(tmp_path, "single slice", "several slices")


def test_orientation_differs(tmp_path):
    write_series(tmp_path, volume=pattern_volume()[:6])
    write_series(tmp_path, volume=pattern_volume()[6:], rot=rotation_matrix(0.2), name="other", first_number=7,
                 origin=(-10.0, 5.0, 30.0 + 6 * GAP))
    refused(tmp_path, "orientation", "differs")


def test_slice_size_differs(tmp_path):
    write_series(tmp_path, volume=pattern_volume()[:6])
    write_series(tmp_path, volume=pattern_volume()[6:, :18], name="other", first_number=7,
                 origin=(-10.0, 5.0, 30.0 + 6 * GAP))
    refused(tmp_path, "slice sizes differ", "24x20", "24x18")


def test_pixel_spacing_differs(tmp_path):
    write_series(tmp_path, volume=pattern_volume()[:6])
    write_series(tmp_path, volume=pattern_volume()[6:], name="other", first_number=7, pixel=(0.9, 0.8),
                 origin=(-10.0, 5.0, 30.0 + 6 * GAP))
    refused(tmp_path, "pixel spacing differs", "0.8\\0.7", "0.8\\0.9")


def test_gantry_tilt(tmp_path):
    tilt = np.radians(10.0)
    positions = [np.array([0.0, k * GAP * np.tan(tilt), k * GAP]) for k in range(SHAPE[0])]
    write_series(tmp_path, positions=positions)
    refused(tmp_path, "gantry tilt", "10.0 degrees")


def test_small_tilt_within_tolerance_is_read(tmp_path):
    positions = [np.array([0.0, k * GAP * np.tan(np.radians(0.2)), k * GAP]) for k in range(SHAPE[0])]
    write_series(tmp_path, positions=positions)
    assert read_dicom_folder(tmp_path, "fixed image").GetSize() == (24, 20, 12)


def test_missing_slices(tmp_path):
    files = write_series(tmp_path)
    files[5].unlink()
    files[6].unlink()
    files[9].unlink()
    refused(tmp_path, "missing", "2.5 to 7.5 mm", "about 3 slice")


def test_uneven_spacing(tmp_path):
    positions = [np.array([0.0, 0.0, k * GAP + (0.7 if k == 4 else 0.0)]) for k in range(SHAPE[0])]
    write_series(tmp_path, positions=positions)
    message = refused(tmp_path, "uneven", "1.8 to 3.2 mm")
    assert "seem missing" not in message


def test_duplicate_positions(tmp_path):
    write_series(tmp_path)
    write_series(tmp_path, volume=pattern_volume()[3:5], origin=(-10.0, 5.0, 30.0 + 3 * GAP), name="again",
                 first_number=100)
    refused(tmp_path, "2 slice", "duplicate")


def test_corrupt_file_in_series(tmp_path):
    files = write_series(tmp_path)
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 300])        # truncated pixel data
    refused(tmp_path, files[3].name, "cannot be read")


def test_garbage_dicom_file_in_series(tmp_path):
    files = write_series(tmp_path)
    (tmp_path / "zz_broken.dcm").write_bytes(files[0].read_bytes()[:200])
    (tmp_path / "README.txt").write_text("ignored\n")    # non-DICOM side files are fine
    refused(tmp_path, "zz_broken.dcm", "cannot be read")
