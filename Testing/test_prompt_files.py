"""Point-prompt files (Slicer .mrk.json, JSON, CSV; LPS and RAS), their checks, and the CLI/worker flags."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from phantom import oblique_direction, phantom
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.prompt_files import check_prompts, load_prompt_files, read_prompt_file
from helpers import assert_user_error, digest, samreg, write_pair

# continuous voxel indices (x, y, z) of the test clicks, and their labels
INDICES = [(10.3, 20.7, 12.2), (11.0, 18.25, 13.9), (30.6, 5.5, 3.1)]
LABELS = ["liver", "liver", "kidney"]


def image(size=(44, 40, 30)) -> sitk.Image:
    """A small volume with anisotropic spacing and an oblique direction."""
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing((1.6, 1.4, 2.5))
    img.SetOrigin((-30.0, -25.0, -35.0))
    img.SetDirection(oblique_direction().ravel().tolist())
    return img


def lps_points(img: sitk.Image) -> np.ndarray:
    return np.array([img.TransformContinuousIndexToPhysicalPoint(i) for i in INDICES])


def csv_row(point) -> str:
    return ",".join(repr(float(v)) for v in point)


def _markups(points: np.ndarray, system: str | None, statuses=None) -> dict:
    statuses = statuses or ["defined"] * len(points)
    markup = {"type": "Fiducial", "coordinateUnits": "mm",
              "controlPoints": [{"id": str(i + 1), "label": label, "position": [float(v) for v in p],
                                 "positionStatus": status}
                                for i, (p, label, status) in enumerate(zip(points, LABELS, statuses))]}
    if system is not None:
        markup["coordinateSystem"] = system
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                       "Markups/Resources/Schema/markups-schema-v1.0.3.json#", "markups": [markup]}


def write_all_formats(folder: Path, img: sitk.Image) -> dict[str, Path]:
    """The same three clicks in every supported format and coordinate system."""
    lps = lps_points(img)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    docs = {
        "lps.mrk.json": _markups(lps, "LPS"),
        "ras.mrk.json": _markups(ras, "RAS"),
        "default.mrk.json": _markups(lps, None),                    # Slicer's schema default: LPS
        "engine.json": [{"position": list(p), "label": lb, "positive": True} for p, lb in zip(lps, LABELS)],
        "lps.json": {"points": [{"position": list(p), "label": lb} for p, lb in zip(lps, LABELS)]},
        "ras.json": {"coordinate_system": "ras",
                     "points": [{"position": list(p), "label": lb} for p, lb in zip(ras, LABELS)]},
        "plain.json": [list(p) for p in lps],
    }
    files = {}
    for name, doc in docs.items():
        files[name] = folder / name
        files[name].write_text(json.dumps(doc))
    rows = [csv_row(p) for p in lps]
    tables = {
        "header.csv": "x,y,z,label,positive\n" + "\n".join(f"{r},{lb},true" for r, lb in zip(rows, LABELS)),
        "plain.csv": "\n".join(f"{r},{lb}" for r, lb in zip(rows, LABELS)) + "\n\n",
        "spaces.txt": "# clicks\n" + "\n".join(f"{r.replace(',', ' ')} {lb}" for r, lb in zip(rows, LABELS)),
        "slicer_ras.csv": "label,r,a,s,defined,selected,visible,locked,description\n" + "\n".join(
            f"{lb},{csv_row(p)},1,1,1,0," for p, lb in zip(ras, LABELS)),
    }
    for name, text in tables.items():
        files[name] = folder / name
        files[name].write_text(text)
    return files


FORMATS = ["lps.mrk.json", "ras.mrk.json", "default.mrk.json", "engine.json", "lps.json", "ras.json",
           "plain.json", "header.csv", "plain.csv", "spaces.txt", "slicer_ras.csv"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_and_system_lands_at_the_same_voxel(tmp_path, name):
    img = image()
    path = write_all_formats(tmp_path, img)[name]
    points = read_prompt_file(path, positive=True, image=img)
    assert len(points) == len(INDICES)
    for point, index in zip(points, INDICES):
        assert point["positive"] is True
        got = img.TransformPhysicalPointToContinuousIndex(point["position"])
        np.testing.assert_allclose(got, index, rtol=0, atol=1e-6, err_msg=name)
    expected = [None] * 3 if name == "plain.json" else LABELS
    assert [p["label"] for p in points] == expected


def test_labels_group_structures_and_negatives_refine_them(tmp_path):
    img = image()
    lps = lps_points(img)
    pos, neg = tmp_path / "pos.mrk.json", tmp_path / "neg.json"
    pos.write_text(json.dumps(_markups(lps, "LPS")))
    neg.write_text(json.dumps([{"position": list(lps[0] + 1.0), "label": "kidney"}]))
    prompts = load_prompt_files(moving=pos, moving_negative=neg)
    assert prompts["fixed"] == []
    moving = prompts["moving"]
    assert [(p["label"], p["positive"]) for p in moving] == [("liver", True), ("liver", True),
                                                             ("kidney", True), ("kidney", False)]
    check_prompts(prompts, img, img)
    # unlabelled clicks of one image form one structure, even across its positive and negative files
    pos_csv, neg_csv = tmp_path / "pos.csv", tmp_path / "neg.csv"
    pos_csv.write_text(csv_row(lps[0]))
    neg_csv.write_text(csv_row(lps[1]))
    prompts = load_prompt_files(fixed=pos_csv, fixed_negative=neg_csv)
    assert [p["label"] for p in prompts["fixed"]] == [None, None]
    check_prompts(prompts, img, img)


def test_unplaced_markup_points_are_skipped(tmp_path):
    img = image()
    path = tmp_path / "partial.mrk.json"
    path.write_text(json.dumps(_markups(lps_points(img), "LPS", ["defined", "preview", "undefined"])))
    points = read_prompt_file(path, positive=False)
    assert len(points) == 1 and points[0]["positive"] is False and points[0]["label"] == "liver"


def test_a_point_keeps_its_own_polarity(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([{"position": [1, 2, 3], "positive": False}, {"position": [4, 5, 6]}]))
    assert [p["positive"] for p in read_prompt_file(path, positive=True)] == [False, True]
    with pytest.raises(InputError, match="marked positive.*negative prompts"):
        (tmp_path / "neg.csv").write_text("1,2,3,a,true\n")
        read_prompt_file(tmp_path / "neg.csv", positive=False)


def _outside(img: sitk.Image) -> list[float]:
    return list(img.TransformContinuousIndexToPhysicalPoint((10.0, -0.8, 5.0)))   # 0.3 voxel beyond the edge


def test_a_point_outside_its_image_is_named():
    img = image()
    inside = list(img.TransformContinuousIndexToPhysicalPoint((-0.49, 39.49, 0.0)))   # still within the voxels
    prompts = {"fixed": [{"position": inside, "positive": True, "label": None}],
               "moving": [{"position": inside, "positive": True, "label": "liver"},
                          {"position": _outside(img), "positive": True, "label": "kidney"}]}
    with pytest.raises(InputError) as err:
        check_prompts(prompts, img, img)
    message = str(err.value)
    assert "moving prompt point 2" in message and "'kidney'" in message and "outside the moving image" in message


def test_outside_in_a_file_names_the_file(tmp_path):
    img = image()
    path = tmp_path / "out.json"
    path.write_text(json.dumps([_outside(img)]))
    with pytest.raises(InputError, match="outside") as err:
        read_prompt_file(path, positive=True, image=img)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("prompts, side", [
    ({"moving": [{"position": [0, 0, 0], "positive": False, "label": "liver"}]}, "moving"),
    ({"fixed": [{"position": [0, 0, 0], "positive": False, "label": None}]}, "fixed"),
])
def test_a_negative_point_only_is_a_clear_error(prompts, side):
    img = image()
    centre = list(img.TransformContinuousIndexToPhysicalPoint((20.0, 20.0, 15.0)))
    for p in prompts[side]:
        p["position"] = centre
    with pytest.raises(InputError, match="negative points only") as err:
        check_prompts(prompts, img, img)
    message = str(err.value)
    assert f"the {side} prompts" in message and "needs a positive point" in message


def test_a_negative_point_with_its_own_label_refines_the_nearest_structure():
    """Slicer names every point differently (N-1, N-2...): such a negative point is accepted."""
    img = image()
    centre = list(img.TransformContinuousIndexToPhysicalPoint((20.0, 20.0, 15.0)))
    prompts = {"moving": [{"position": centre, "positive": True, "label": "liver"},
                          {"position": centre, "positive": False, "label": "N-1"}]}
    check_prompts(prompts, img, img)


@pytest.mark.parametrize("name, text, match", [
    ("empty.csv", "", "is empty"),
    ("blank.csv", "\n  \n# only a comment\n", "is empty"),
    ("header_only.csv", "x,y,z,label\n", "contains no points"),
    ("empty.json", "", "is empty"),
    ("nopoints.json", "[]", "contains no points"),
    ("nopoints.mrk.json", json.dumps({"markups": [{"type": "Fiducial", "controlPoints": []}]}), "contains no points"),
    ("unplaced.mrk.json", json.dumps({"markups": [{"controlPoints": [
        {"position": [1, 2, 3], "positionStatus": "undefined"}]}]}), "contains no points"),
    ("badrow.csv", "x,y,z\n1,2,3\n4,abc,6\n", "line 3: non-numeric"),
    ("shortrow.csv", "1,2,3\n4,5\n", "line 2 has 2 values"),
    ("longrow.csv", "1,2,3,a,true,extra\n", "line 1 has 6 values"),
    ("nan.csv", "1,nan,3\n", "non-finite"),
    ("inf.json", "[[1, Infinity, 3]]", "non-finite"),
    ("badflag.csv", "1,2,3,a,maybe\n", "'positive' must be true or false"),
    ("badjson.json", "{not json", "not valid JSON"),
    ("badpos.json", json.dumps([{"position": [1, 2]}]), "three numbers"),
    ("typo.json", json.dumps([{"position": [1, 2, 3], "postive": True}]), "unknown field"),
    ("sys.json", json.dumps({"coordinate_system": "XYZ", "points": [[1, 2, 3]]}), "unknown coordinate system 'XYZ'"),
    ("sys.mrk.json", json.dumps({"markups": [{"coordinateSystem": "IJK", "controlPoints": [
        {"position": [1, 2, 3]}]}]}), "coordinateSystem 'IJK'"),
    ("units.mrk.json", json.dumps({"markups": [{"coordinateUnits": "cm", "controlPoints": [
        {"position": [1, 2, 3]}]}]}), "coordinateUnits"),
    ("sides.json", json.dumps({"moving": [[1, 2, 3]]}), "list of points or an object with 'points'"),
])
def test_bad_prompt_files_are_named(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        read_prompt_file(path, positive=True)
    assert str(path) in str(err.value)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        read_prompt_file(tmp_path / "nope.mrk.json", positive=True)
    assert "nope.mrk.json" in str(err.value)


def test_markups_in_micrometres_are_converted(tmp_path):
    path = tmp_path / "um.mrk.json"
    path.write_text(json.dumps({"markups": [{"coordinateSystem": "RAS", "coordinateUnits": "um",
                                             "controlPoints": [{"position": [1000, -2000, 3000]}]}]}))
    assert read_prompt_file(path, positive=True)[0]["position"] == [-1.0, 2.0, 3.0]


# ----------------------------------------------------------------------------- pipeline, worker, CLI
def test_the_load_stage_rejects_an_outside_prompt_before_encoding(tmp_path):
    from SAMRegistrationLib.pipeline import RegistrationInputs, register
    from SAMRegistrationLib.settings import Settings

    img = phantom(direction=oblique_direction())       # the geometry of image(), with content
    sitk.WriteImage(img, str(tmp_path / "f.nii.gz"))
    stages = []
    inputs = RegistrationInputs(fixed=tmp_path / "f.nii.gz", moving=tmp_path / "f.nii.gz", output_dir=tmp_path / "o",
                                prompts={"fixed": [], "moving": [{"position": _outside(img), "positive": True,
                                                                  "label": "P-1"}]})
    with pytest.raises(InputError, match="moving prompt point 1.*'P-1'.*outside the moving image"):
        register(inputs, Settings(encoder="mind"), progress=lambda stage, f, m="": stages.append(stage))
    assert set(stages) == {"load"} and not (tmp_path / "o").exists()


def test_a_job_takes_auto_prompts(tmp_path):
    from SAMRegistrationLib.worker import load_job

    sitk.WriteImage(image() + 1.0, str(tmp_path / "f.nii.gz"))
    job = {"fixed": "f.nii.gz", "moving": "f.nii.gz", "output_dir": "out", "auto_prompts": 4}
    (tmp_path / "job.json").write_text(json.dumps(job))
    assert load_job(tmp_path / "job.json")[0].auto_prompts == 4
    for bad in (0, -2, 2.5, "3", True):
        job["auto_prompts"] = bad
        (tmp_path / "job.json").write_text(json.dumps(job))
        with pytest.raises(InputError, match="auto_prompts must be a whole number >= 1"):
            load_job(tmp_path / "job.json")


def test_cli_builds_prompts_and_auto_prompts(monkeypatch, tmp_path):
    """In-process with the pipeline stubbed: the flags become RegistrationInputs.prompts/auto_prompts."""
    from SAMRegistrationLib import cli, pipeline

    img = image()
    sitk.WriteImage(img + 1.0, str(tmp_path / "f.nii.gz"))
    files = write_all_formats(tmp_path, img)
    seen = {}

    def fake_register(inputs, settings, progress=None, cancel=None, ledger=None):
        seen["inputs"] = inputs
        return {"metrics": {}}

    monkeypatch.setattr(pipeline, "register", fake_register)
    neg = tmp_path / "neg.csv"
    neg.write_text("x,y,z,label\n" + csv_row(lps_points(img)[0]) + ",kidney\n")
    status = cli.main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "f.nii.gz"), "-o", str(tmp_path / "o"),
                       "--moving-prompts", str(files["ras.mrk.json"]), "--moving-negative-prompts", str(neg),
                       "--fixed-prompts", str(files["header.csv"]), "--auto-prompts", "5", "--quiet"])
    assert status == 0
    inputs = seen["inputs"]
    assert inputs.auto_prompts == 5
    assert [p["positive"] for p in inputs.prompts["moving"]] == [True, True, True, False]
    assert len(inputs.prompts["fixed"]) == 3
    np.testing.assert_allclose(inputs.prompts["moving"][0]["position"], inputs.prompts["fixed"][0]["position"],
                               atol=1e-9)


@pytest.fixture()
def register_with(tmp_path):
    """Runs ``samreg register`` on a good phantom pair with extra options; checks that the inputs
    are unmodified and no outputs are left."""
    files = write_pair(tmp_path / "in", with_segs=False)
    out = tmp_path / "out"

    def run(*extra: str):
        before = digest(tmp_path / "in")
        result = samreg("register", files["fixed"], files["moving"], "-o", out, "--encoder", "mind", "--quiet",
                        *map(str, extra))
        assert digest(tmp_path / "in") == before, "inputs were modified"
        assert not out.exists() or not any(out.iterdir()), f"outputs left: {list(out.iterdir())}"
        return result

    run.folder = tmp_path / "in"
    return run


def test_cli_bad_prompt_file_is_one_line(register_with):
    empty = register_with.folder / "clicks.csv"
    empty.write_text("x,y,z\n")
    assert_user_error(register_with("--moving-prompts", empty), "clicks.csv", "no points")
    empty.unlink()
    assert_user_error(register_with("--fixed-negative-prompts", empty), "clicks.csv", "not found")


def test_cli_prompt_outside_the_image_fails_in_the_load_stage(register_with):
    clicks = register_with.folder / "clicks.json"
    clicks.write_text(json.dumps({"points": [{"position": [0, 0, 0], "label": "a"},
                                             {"position": [500, 0, 0], "label": "b"}]}))
    assert_user_error(register_with("--moving-prompts", clicks), "moving prompt point 2", "'b'",
                      "outside the moving image")


def test_register_help_lists_the_prompt_flags():
    result = samreg("register", "--help")
    for option in ("--moving-prompts", "--moving-negative-prompts", "--fixed-prompts",
                   "--fixed-negative-prompts", "--auto-prompts"):
        assert option in result.stdout, option


def test_cli_auto_prompts_must_be_positive(register_with):
    result = register_with("--auto-prompts", "0")
    assert result.returncode == 2 and "--auto-prompts" in result.stderr and "Traceback" not in result.stderr


def test_centre_clicks_land_inside_each_label_even_a_ring():
    from SAMRegistrationLib.prompting.from_labels import centre_clicks
    seg = image()
    z, y, x = np.meshgrid(*(np.arange(n) for n in (30, 40, 44)), indexing="ij")
    r = np.hypot((x - 22) * 1.6, (y - 20) * 1.4)
    slab = (z > 5) & (z < 24)
    labels = np.zeros(r.shape, np.int32)
    labels[slab & (r < 8)] = 1                       # a disc ...
    labels[slab & (r >= 12) & (r < 20)] = 2          # ... inside a ring, like LV and myocardium
    seg = sitk.GetImageFromArray(labels)
    seg.CopyInformation(image())
    clicks = centre_clicks(seg, [1, 2], {"1": "LV"})
    assert [c["label"] for c in clicks] == ["LV", "2"] and all(c["positive"] for c in clicks)
    for click, label in zip(clicks, (1, 2)):
        index = seg.TransformPhysicalPointToIndex(click["position"])
        assert seg[index] == label                   # inside, although the ring's centroid is not
    disc = seg.TransformPhysicalPointToIndex(clicks[0]["position"])
    assert abs(disc[0] - 22) <= 1 and abs(disc[1] - 20) <= 1 and 12 <= disc[2] <= 17
    with pytest.raises(InputError, match="label 3 does not occur"):
        centre_clicks(seg, [3])
