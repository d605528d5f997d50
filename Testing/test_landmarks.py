"""Tests for SAMRegistrationLib.landmarks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from phantom import small_reference

from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.landmarks import check_pairs, read_points
from SAMRegistrationLib.metrics import tre_initial

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

PTS = np.array([[-36.351, -36.974, -1204.5],
                [12.25, 0.0, 3.5e1],
                [1e-3, -7.125, 88.0]])


def _reference() -> sitk.Image:
    return small_reference()


def _markups(points: np.ndarray, system: str | None) -> dict:
    markup = {"type": "Fiducial",
              "controlPoints": [{"id": str(i + 1), "label": f"F-{i + 1}", "position": list(map(float, p)),
                                 "positionStatus": "defined"} for i, p in enumerate(points)]}
    if system is not None:
        markup["coordinateSystem"] = system
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                       "Markups/Resources/Schema/markups-schema-v1.0.3.json#",
            "markups": [markup]}


def _write_all_formats(tmp_path: Path) -> dict[str, Path]:
    files = {}
    rows = "\n".join(" ".join(repr(float(v)) for v in p) for p in PTS)
    files["elastix_point"] = tmp_path / "pts.txt"
    files["elastix_point"].write_text(f"point\n{len(PTS)}\n{rows}\n")
    ref = _reference()
    idx = [ref.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in PTS]
    files["elastix_index"] = tmp_path / "idx.txt"
    files["elastix_index"].write_text("index\n3\n" + "\n".join(" ".join(repr(v) for v in i) for i in idx))
    files["csv_header"] = tmp_path / "pts.csv"
    files["csv_header"].write_text("x,y,z\n" + "\n".join(",".join(repr(float(v)) for v in p) for p in PTS))
    files["csv_plain"] = tmp_path / "plain.csv"
    files["csv_plain"].write_text(rows + "\n\n")
    files["mrk_lps"] = tmp_path / "lps.mrk.json"
    files["mrk_lps"].write_text(json.dumps(_markups(PTS, "LPS")))
    ras = PTS * np.array([-1.0, -1.0, 1.0])
    files["mrk_ras"] = tmp_path / "ras.mrk.json"
    files["mrk_ras"].write_text(json.dumps(_markups(ras, "RAS")))
    files["mrk_default"] = tmp_path / "default.mrk.json"
    files["mrk_default"].write_text(json.dumps(_markups(PTS, None)))
    return files


def test_all_formats_read_identical(tmp_path):
    files = _write_all_formats(tmp_path)
    for name, path in files.items():
        ref = _reference() if name == "elastix_index" else None
        pts = read_points(path, reference=ref)
        assert pts.dtype == np.float64 and pts.shape == (3, 3), name
        np.testing.assert_allclose(pts, PTS, rtol=0, atol=1e-9, err_msg=name)


def test_index_needs_reference(tmp_path):
    files = _write_all_formats(tmp_path)
    with pytest.raises(InputError, match="reference"):
        read_points(files["elastix_index"])


@pytest.mark.parametrize("name,text,match", [
    ("count.txt", "point\n3\n1 2 3\n4 5 6\n", "declares 3 points but contains 2"),
    ("empty.txt", "\n  \n", "empty"),
    ("nonnum.txt", "point\n2\n1 2 3\n4 five 6\n", "non-numeric"),
    ("cols.txt", "point\n1\n1 2\n", "expected 3"),
    ("badcount.txt", "point\nthree\n1 2 3\n", "point count"),
    ("nonnum.csv", "x,y,z\n1,2,3\n4,abc,6\n", "non-numeric"),
    ("cols.csv", "1,2,3,4\n", "expected 3"),
    ("header_only.csv", "x,y,z\n", "no points"),
    ("bad.mrk.json", "{not json", "not valid JSON"),
    ("nomarkups.mrk.json", "{}", "not a Slicer markups"),
    ("nopoints.mrk.json", json.dumps({"markups": [{"controlPoints": []}]}), "no control points"),
    ("undef.mrk.json", json.dumps({"markups": [{"controlPoints": [
        {"position": [1, 2, 3], "positionStatus": "undefined"}]}]}), "no defined position"),
    ("badsys.mrk.json", json.dumps({"markups": [{"coordinateSystem": "XYZ",
                                                 "controlPoints": [{"position": [1, 2, 3]}]}]}), "coordinateSystem"),
])
def test_bad_files(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        read_points(p)
    assert str(p) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_points(tmp_path / "nope.txt")


def test_check_pairs():
    check_pairs(PTS, PTS + 1)
    with pytest.raises(InputError, match="different point counts"):
        check_pairs(PTS, PTS[:2])
    with pytest.raises(InputError):
        check_pairs(PTS[:, :2], PTS[:, :2])


def test_lung_landmarks_initial_tre():
    fixed_file = DATA / "lung" / "CT_3D_lung_fixed_point_set_corrected.txt"
    moving_file = DATA / "lung" / "CT_3D_lung_moving_point_set_corrected.txt"
    if not (fixed_file.is_file() and moving_file.is_file()):
        pytest.skip(f"shared lung landmarks not found under {DATA.resolve()}")
    f, m = read_points(fixed_file), read_points(moving_file)
    assert f.shape == m.shape == (51, 3)
    check_pairs(f, m)
    mean, sd, per = tre_initial(f, m)
    assert mean == pytest.approx(35.27, abs=0.01)
    assert sd == pytest.approx(3.06, abs=0.01)
    assert per.shape == (51,)
