"""Property-based fuzzing of every input parser (hypothesis).

The contract: a bad input file or value gives :class:`~SAMRegistrationLib.errors.InputError` with
one line naming the file; never another exception type, never a hang. Valid files written in
each supported format read back the same (within float tolerance).

Parsers covered: prompt files (``prompt_files``), landmark files (``landmarks.read_points``),
worker job files (``worker.load_job``), ``Settings.from_dict``, the batch pairs table
(``batch.table.read_table``) and the point files of ``samreg apply`` (read, mapped, written
back in their own format).

No example database is kept (``database=None``), so nothing is written into the repository.
"""
from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from phantom import small_reference

from SAMRegistrationLib.apply import apply, write_points
from SAMRegistrationLib.batch.table import read_table
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.landmarks import read_points
from SAMRegistrationLib.prompt_files import load_prompt_files, read_prompt_file
from SAMRegistrationLib.settings import Settings
from SAMRegistrationLib.worker import load_job


# hypothesis keeps caches (not examples) in its home folder: a temporary one, not ./.hypothesis
_HOME = tempfile.mkdtemp(prefix="samreg-hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)


#: SAMREG_FUZZ_SCALE=10 runs ten times the examples (a deeper search than the ~40 s default)
SCALE = max(1, int(os.environ.get("SAMREG_FUZZ_SCALE", "1")))


def fuzz(examples: int):
    """Hypothesis settings for one property: no deadline, no example database on disk."""
    return settings(max_examples=examples * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def refused_or(call: Callable[[], Any], *names: str) -> Any:
    """``call()``'s result, or None when it raised InputError on one line naming all of ``names``.
    Any other exception propagates and fails the property."""
    try:
        result = call()
        event("accepted")
        return result
    except InputError as exc:
        event("refused")
        message = str(exc)
        assert message and len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message, \
            repr(message)
        for name in names:
            assert name in message, f"{name!r} not named in {message!r}"
        return None


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# ----------------------------------------------------------------------------- strategies
HUGE = st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), HUGE,
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
#: texts that once broke JSON readers: deep nesting, a 5000-digit integer, NaN, a BOM, NUL
NASTY = st.sampled_from(["[" * 5000 + "]" * 5000, "{\"a\":" * 3000 + "1" + "}" * 3000, "1" * 5000,
                         "[" + "9" * 5000 + "]", "NaN", "[Infinity, -Infinity, NaN]", "\ufeff{}", "{}\x00",
                         "[1e999, 2, 3]", "\"\\ud800\"", "[[1, 2, 3]]", "{\"points\": [[1, 2, 3]], \"x\": 1}"])


def json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


FINITE = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False)
COORDINATE = st.one_of(FINITE, st.floats(allow_nan=True, allow_infinity=True), st.integers(), HUGE,
                       st.booleans(), st.none(), st.text(max_size=4))
LABEL = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=8)
#: half of the positions are plausible (three finite numbers), so the parsers get past them
POSITION = st.one_of(st.lists(FINITE, min_size=3, max_size=3), st.lists(COORDINATE, min_size=0, max_size=4),
                     JSON_VALUES)

CONTROL_POINT = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=3),
    "label": st.one_of(LABEL, JSON_VALUES),
    "position": POSITION,
    "positionStatus": st.one_of(st.sampled_from(["defined", "preview", "undefined", "missing", ""]), JSON_VALUES),
})
MARKUP = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["Fiducial", "Curve", "ROI"]),
    "coordinateSystem": st.one_of(st.sampled_from(["LPS", "RAS", "ras", "IJK", ""]), JSON_VALUES),
    "coordinateUnits": st.one_of(st.sampled_from(["mm", "um", "cm", ["mm"], ["um", "UCUM", "micrometer"], [["mm"]],
                                                  {"mm": 1}, []]), JSON_VALUES),
    "controlPoints": st.one_of(st.lists(st.one_of(CONTROL_POINT, CONTROL_POINT, JSON_VALUES), max_size=4),
                               JSON_VALUES),
})
#: markups that are nearly right: a position on every control point, known systems and units
PLAUSIBLE_MARKUP = st.fixed_dictionaries(
    {"controlPoints": st.lists(st.fixed_dictionaries({"position": POSITION}, optional={
        "label": st.one_of(LABEL, JSON_VALUES),
        "positionStatus": st.sampled_from(["defined", "defined", "preview", "undefined", "missing"])}),
        min_size=1, max_size=4)},
    optional={"coordinateSystem": st.sampled_from(["LPS", "RAS", "ras"]),
              "coordinateUnits": st.sampled_from(["mm", "um", ["mm"], ["um", "UCUM", "micrometer"]])})
MARKUP = st.one_of(PLAUSIBLE_MARKUP, MARKUP)
MARKUPS_DOC = st.fixed_dictionaries(
    {"markups": st.one_of(st.lists(st.one_of(MARKUP, MARKUP, JSON_VALUES), max_size=3), JSON_VALUES)},
    optional={"@schema": st.text(max_size=5)})

ENGINE_POINT = st.one_of(
    POSITION,
    st.fixed_dictionaries({"position": POSITION}, optional={
        "label": st.one_of(LABEL, JSON_VALUES),
        "positive": st.one_of(st.booleans(), st.sampled_from(["yes", "no", "", "maybe"]), JSON_VALUES)}),
    st.fixed_dictionaries({}, optional={"position": POSITION, "label": JSON_VALUES, "positive": JSON_VALUES,
                                        "size": st.integers()}))
POINTS_JSON = st.one_of(
    st.lists(ENGINE_POINT, max_size=4),
    st.fixed_dictionaries({}, optional={"points": st.one_of(st.lists(ENGINE_POINT, max_size=4), JSON_VALUES),
                                        "coordinate_system": st.one_of(st.sampled_from(["LPS", "RAS", "ijk"]),
                                                                       JSON_VALUES),
                                        "extra": JSON_VALUES}))

CELL = st.one_of(st.sampled_from(["", "1", "-2.5", "nan", "inf", "-inf", "1e999", "true", "false", "yes",
                                  "0", "1e308", "-1.7e308", "x", "y", "z", "r", "a", "s", "l", "p", "label", "positive", "defined",
                                  "\"", "\"1,2\"", "#", " ", "1" * 400]),
                 FINITE.map(repr), st.text(max_size=6))


@st.composite
def tables(draw) -> str:
    """Delimited text: an optional header of column names, then rows of random cells."""
    delimiter = draw(st.sampled_from([",", ";", "\t", " "]))
    numeric = st.lists(FINITE.map(repr), min_size=3, max_size=3).flatmap(
        lambda xyz: st.lists(CELL, max_size=3).map(lambda more: xyz + more))
    rows = draw(st.lists(st.one_of(numeric, st.lists(CELL, min_size=0, max_size=6)), min_size=0, max_size=6))
    if draw(st.booleans()):
        names = st.sampled_from(["x", "y", "z", "l", "p", "s", "r", "a", "label", "positive", "defined", "id"])
        rows.insert(0, draw(st.lists(names, min_size=1, max_size=7)))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return ending.join(delimiter.join(row) for row in rows) + draw(st.sampled_from(["", ending]))


ANY_TEXT = st.one_of(st.text(max_size=200), NASTY, JSON_VALUES.map(json_text), tables())
ANY_BYTES = st.one_of(st.binary(max_size=200), ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def reference_image() -> sitk.Image:
    return small_reference((6, 5, 4))


def index_to_lps(image: sitk.Image, index: np.ndarray) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (direction @ (np.array(image.GetSpacing()) * index).T).T


# ----------------------------------------------------------------------------- 1. prompt files
PROMPT_NAMES = st.sampled_from(["p.mrk.json", "p.json", "p.csv", "p.txt", "p"])


def _read_prompts(path: Path, positive: bool) -> Optional[list]:
    points = refused_or(lambda: read_prompt_file(path, positive), str(path))
    if points is not None:
        assert points, "a prompt file read without error has points"
        for p in points:
            assert len(p["position"]) == 3 and all(math.isfinite(c) for c in p["position"])
            assert isinstance(p["positive"], bool) and (p["label"] is None or isinstance(p["label"], str))
    return points


@fuzz(800)
@given(content=st.one_of(ANY_BYTES, ANY_TEXT, MARKUPS_DOC.map(json_text), POINTS_JSON.map(json_text), tables()),
       name=PROMPT_NAMES, positive=st.booleans())
def test_prompt_file_garbage_is_refused_on_one_line(folder, content, name, positive):
    path = write(folder / name, content)
    _read_prompts(path, positive)
    refused_or(lambda: load_prompt_files(moving=path), str(path))


@fuzz(600)
@given(doc=MARKUPS_DOC, positive=st.booleans())
def test_prompt_markups_of_the_wrong_shape_are_refused(folder, doc, positive):
    _read_prompts(write(folder / "m.mrk.json", json_text(doc)), positive)


@fuzz(600)
@given(doc=POINTS_JSON, positive=st.booleans())
def test_prompt_point_lists_of_the_wrong_shape_are_refused(folder, doc, positive):
    _read_prompts(write(folder / "points.json", json_text(doc)), positive)


@fuzz(450)
@given(text=tables(), positive=st.booleans(), name=st.sampled_from(["t.csv", "t.txt"]))
def test_prompt_tables_with_random_cells_are_refused(folder, text, positive, name):
    _read_prompts(write(folder / name, text), positive)


PROMPTS = st.lists(st.tuples(st.tuples(FINITE, FINITE, FINITE), st.one_of(st.none(), LABEL), st.booleans()),
                   min_size=1, max_size=6)


def _prompt_file(kind: str, points: list) -> tuple[str, str]:
    """(file name, text) of ``points`` [(xyz LPS, label, positive)] in format ``kind``."""
    ras = [(-x, -y, z) for (x, y, z), _, _ in points]
    if kind in ("markups-lps", "markups-ras", "markups-default"):
        system = "RAS" if kind == "markups-ras" else "LPS"
        cps = [{"id": str(i), "position": list(ras[i] if system == "RAS" else xyz), "positionStatus": "defined",
                **({"label": label} if label is not None else {})} for i, (xyz, label, _) in enumerate(points)]
        markup = {"type": "Fiducial", "controlPoints": cps,
                  **({} if kind == "markups-default" else {"coordinateSystem": system})}
        return "prompts.mrk.json", json.dumps({"markups": [markup]})
    if kind in ("json-list", "json-lps", "json-ras"):
        ras_file = kind == "json-ras"
        items = [{"position": list(ras[i] if ras_file else xyz), "positive": positive,
                  **({"label": label} if label is not None else {})} for i, (xyz, label, positive) in enumerate(points)]
        if kind == "json-list":
            return "prompts.json", json.dumps(items)
        return "prompts.json", json.dumps({"points": items, "coordinate_system": "RAS" if ras_file else "LPS"})
    if kind == "csv-plain":
        return "prompts.csv", "".join(f"{x!r},{y!r},{z!r},{label or ''},{str(positive).lower()}\n"
                                      for (x, y, z), label, positive in points)
    if kind == "txt-spaces":   # split on whitespace: an empty label cannot hold its column, so 'none'
        return "prompts.txt", "# x y z label positive\n" + "".join(
            f"{x!r} {y!r} {z!r} {label or 'none'} {'yes' if positive else 'no'}\n" for (x, y, z), label, positive in points)
    if kind == "csv-ras-header":
        return "prompts.csv", "label;r;a;s;defined;positive\n" + "".join(
            f"{label or ''};{r!r};{a!r};{s!r};true;{int(positive)}\n"
            for ((r, a, s), (_, label, positive)) in zip(ras, points))
    raise AssertionError(kind)


PROMPT_KINDS = ["markups-lps", "markups-ras", "markups-default", "json-list", "json-lps", "json-ras",
                "csv-plain", "txt-spaces", "csv-ras-header"]


@fuzz(450)
@given(points=PROMPTS, kind=st.sampled_from(PROMPT_KINDS))
def test_prompt_files_round_trip(folder, points, kind):
    name, text = _prompt_file(kind, points)
    path = write(folder / name, text)
    read = read_prompt_file(path, positive=True)
    assert len(read) == len(points)
    for got, (xyz, label, positive) in zip(read, points):
        assert np.allclose(got["position"], xyz, rtol=1e-12, atol=1e-9)
        if kind == "txt-spaces":
            label = label or "none"
        assert got["label"] == label
        assert got["positive"] is (True if kind.startswith("markups") else positive)
    prompt_set = load_prompt_files(fixed=path)
    assert prompt_set is not None and [p["position"] for p in prompt_set["fixed"]] == [p["position"] for p in read]


# ----------------------------------------------------------------------------- 2. landmark files
LANDMARK_NAMES = st.sampled_from(["l.txt", "l.csv", "l.pts", "l.json", "l.mrk.json", "l"])


@st.composite
def elastix_texts(draw) -> str:
    kind = draw(st.sampled_from(["point", "index", "POINT", "Index", "points"]))
    count = draw(st.one_of(st.integers(-2, 6).map(str), CELL))
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=4), max_size=5))
    separator = draw(st.sampled_from([" ", ",", "\t", ";"]))
    return "\n".join([kind, count, *(separator.join(r) for r in rows)]) + "\n"


def _read_landmarks(path: Path, reference: Optional[sitk.Image]) -> Optional[np.ndarray]:
    points = refused_or(lambda: read_points(path, reference), str(path))
    if points is not None:
        assert points.ndim == 2 and points.shape[1] == 3 and len(points) >= 1 and np.all(np.isfinite(points))
    return points


@fuzz(800)
@given(content=st.one_of(ANY_BYTES, ANY_TEXT, elastix_texts(), MARKUPS_DOC.map(json_text)),
       name=LANDMARK_NAMES, with_reference=st.booleans())
def test_landmark_garbage_is_refused_on_one_line(folder, content, name, with_reference):
    _read_landmarks(write(folder / name, content), reference_image() if with_reference else None)


@fuzz(450)
@given(doc=MARKUPS_DOC)
def test_landmark_markups_of_the_wrong_shape_are_refused(folder, doc):
    _read_landmarks(write(folder / "l.mrk.json", json_text(doc)), None)


@fuzz(450)
@given(text=elastix_texts(), with_reference=st.booleans())
def test_elastix_point_sets_of_the_wrong_shape_are_refused(folder, text, with_reference):
    _read_landmarks(write(folder / "l.txt", text), reference_image() if with_reference else None)


LANDMARKS = st.lists(st.tuples(FINITE, FINITE, FINITE), min_size=1, max_size=6).map(np.array)
LANDMARK_KINDS = ["elastix-point", "elastix-index", "csv-header", "csv-plain", "whitespace",
                  "markups-lps", "markups-ras", "markups-um", "markups-um-code"]


def _landmark_file(kind: str, points: np.ndarray, image: sitk.Image) -> tuple[str, str, np.ndarray]:
    """(file name, text, the LPS mm points it holds) for ``points`` in format ``kind``."""
    rows = [" ".join(repr(float(c)) for c in p) for p in points]
    if kind == "elastix-point":
        return "l.txt", "point\n" + f"{len(points)}\n" + "\n".join(rows) + "\n", points
    if kind == "elastix-index":
        index = points / 1e3           # continuous indices, in or near the image
        text = "index\n" + f"{len(points)}\n" + "".join(" ".join(repr(float(c)) for c in p) + "\n" for p in index)
        return "l.pts", text, index_to_lps(image, index)
    if kind == "csv-header":
        return "l.csv", "x,y,z\n" + "\n".join(r.replace(" ", ",") for r in rows), points
    if kind == "csv-plain":
        return "l.csv", "# fixed landmarks\n" + "\n".join(r.replace(" ", ", ") for r in rows) + "\n", points
    if kind == "whitespace":
        return "l.txt", "\n".join(r.replace(" ", "\t") for r in rows) + "\n", points
    ras = kind == "markups-ras"
    scale = 1e3 if kind.startswith("markups-um") else 1.0
    units = {"markups-um": "um", "markups-um-code": ["um", "UCUM", "micrometer"]}.get(kind, "mm")
    positions = points * (np.array([-1.0, -1.0, 1.0]) if ras else 1.0) * scale
    markup = {"type": "Fiducial", "coordinateSystem": "RAS" if ras else "LPS", "coordinateUnits": units,
              "controlPoints": [{"id": str(i), "label": f"F-{i}", "position": [float(c) for c in p],
                                 "positionStatus": "defined"} for i, p in enumerate(positions)]}
    return "l.mrk.json", json.dumps({"markups": [markup]}), points


@fuzz(450)
@given(points=LANDMARKS, kind=st.sampled_from(LANDMARK_KINDS), shift=st.tuples(FINITE, FINITE, FINITE))
def test_landmark_files_round_trip_also_through_apply_writer(folder, points, kind, shift):
    image = reference_image()
    name, text, expected = _landmark_file(kind, points, image)
    source = write(folder / name, text)
    read = read_points(source, image)
    assert np.allclose(read, expected, rtol=1e-12, atol=1e-9)
    # ``samreg apply`` writes mapped points back in the source's format (6 decimals)
    moved = read + np.array(shift)
    target = folder / ("out-" + name)
    write_points(moved, source, target)
    assert np.allclose(read_points(target, image), moved, rtol=1e-9, atol=2e-6)


# ----------------------------------------------------------------------------- 3. job files
@pytest.fixture(scope="module")
def job_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("job")
    image = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    for name in ("fixed.nii.gz", "moving.nii.gz", "fixed_seg.nii.gz", "moving_seg.nii.gz"):
        sitk.WriteImage(image, str(folder / name))
    (folder / "fixed.csv").write_text("1,2,3\n")
    (folder / "moving.csv").write_text("1,2,3\n")
    return folder


VALID_JOB = {"fixed": "fixed.nii.gz", "moving": "moving.nii.gz", "output_dir": "out",
             "settings": {"encoder": "mind", "method": "pyramid", "spacing": 2.0},
             "fixed_seg": "fixed_seg.nii.gz", "moving_seg": "moving_seg.nii.gz", "labels": [1, 2],
             "fixed_landmarks": "fixed.csv", "moving_landmarks": "moving.csv",
             "prompts": {"moving": [{"position": [1, 2, 3], "positive": True, "label": "a"}]},
             "auto_prompts": 4}
JOB_KEYS = sorted(VALID_JOB)
PATHS = st.one_of(st.sampled_from(["", "missing.nii.gz", ".", "~", "~nosuchuser-samreg/x", "a" * 300,
                                   "/" + "b/" * 3000, "x\x00y", "fixed.nii.gz/..", "\u2028"]),
                  st.text(max_size=20))
LABELS = st.one_of(st.sampled_from(["1,2", " ", ",,", "1;2", "1.5", "0x10", "nan", "1e3", "-1", "١٢",
                                    "1" * 5000, [1.0, 2.5], [True], [[1]], [None], [float("inf")]]),
                   st.text(max_size=10), JSON_VALUES)


@st.composite
def mutated_jobs(draw) -> Any:
    job = json.loads(json.dumps(VALID_JOB))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "set", "unknown", "path", "labels", "prompts", "settings"]))
        key = draw(st.sampled_from(JOB_KEYS))
        if action == "drop":
            job.pop(key, None)
        elif action == "set":
            job[key] = draw(JSON_VALUES)
        elif action == "unknown":
            job[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif action == "path":
            job[draw(st.sampled_from([k for k in JOB_KEYS if k not in ("labels", "prompts", "settings",
                                                                          "auto_prompts")]))] = draw(PATHS)
        elif action == "labels":
            job["labels"] = draw(LABELS)
        elif action == "prompts":
            job["prompts"] = draw(st.one_of(
                st.fixed_dictionaries({}, optional={"fixed": st.lists(ENGINE_POINT, max_size=3),
                                                    "moving": st.one_of(st.lists(ENGINE_POINT, max_size=3),
                                                                        JSON_VALUES),
                                                    "other": JSON_VALUES}),
                JSON_VALUES))
        else:
            job["settings"] = draw(settings_dicts())
    return job


def _load_job(path: Path) -> None:
    result = refused_or(lambda: load_job(path), str(path))
    if result is not None:
        inputs, chosen = result
        # an image is a file or a folder (of one DICOM series, checked when it is read)
        assert isinstance(chosen, Settings) and Path(inputs.fixed).exists() and Path(inputs.moving).exists()


@fuzz(200)
@given(content=st.one_of(ANY_BYTES, ANY_TEXT, JSON_VALUES.map(json_text)))
def test_job_file_garbage_is_refused_on_one_line(job_folder, content):
    _load_job(write(job_folder / "job.json", content))


@fuzz(400)
@given(job=mutated_jobs())
def test_job_files_with_a_mutated_field_are_refused_on_one_line(job_folder, job):
    _load_job(write(job_folder / "job.json", json_text(job)))


def test_a_job_prompt_too_large_for_a_float(job_folder):
    job = {**VALID_JOB, "prompts": {"moving": [{"position": [10 ** 400, 2, 3]}]}}
    path = write(job_folder / "job.json", json.dumps(job))
    with pytest.raises(InputError) as refused:
        load_job(path)
    assert "\n" not in str(refused.value) and str(path) in str(refused.value) and "too large" in str(refused.value)


def test_the_valid_job_loads(job_folder):
    inputs, chosen = load_job(write(job_folder / "job.json", json.dumps(VALID_JOB)))
    assert inputs.labels == [1, 2] and inputs.auto_prompts == 4 and chosen.encoder == "mind"


# ----------------------------------------------------------------------------- 4. settings
def _plugin_fields() -> dict[str, list[str]]:
    from SAMRegistrationLib.plugins import encoder_names, encoder_plugin, method_names, method_plugin
    fields = {"encoder_params": sorted({f for n in encoder_names() for f in encoder_plugin(n).Params.model_fields}),
              "method_params": sorted({f for n in method_names() for f in method_plugin(n).Params.model_fields})}
    return {**fields, "encoders": encoder_names() + ["auto", "no-such-encoder"],
            "methods": method_names() + ["no-such-method"]}


PLUGINS = _plugin_fields()
SETTING_VALUES = st.one_of(JSON_VALUES, st.floats(0.01, 30.0), st.integers(-2, 2000),
                           st.sampled_from(["auto", "cpu", "cuda", "ct", "mr", "flip-cols", ["zoom-out", "nope"]]))


def _params(names: list[str]) -> st.SearchStrategy:
    return st.one_of(st.dictionaries(st.sampled_from(names + ["no_such_parameter"]), SETTING_VALUES, max_size=4),
                     JSON_VALUES)


@st.composite
def settings_dicts(draw) -> dict:
    known = {"encoder": st.one_of(st.sampled_from(PLUGINS["encoders"]), JSON_VALUES),
             "method": st.one_of(st.sampled_from(PLUGINS["methods"]), JSON_VALUES),
             "encoder_params": _params(PLUGINS["encoder_params"]),
             "method_params": _params(PLUGINS["method_params"]),
             "prompt_params": _params(sorted(Settings.model_fields["prompt_params"].annotation.model_fields))}
    names = sorted(set(Settings.model_fields) | {"no_such_setting", "Encoder"})
    keys = draw(st.lists(st.sampled_from(names), max_size=6, unique=True))
    return {key: draw(known.get(key, SETTING_VALUES)) for key in keys}


@fuzz(1000)
@given(values=st.one_of(settings_dicts(), JSON_VALUES))
def test_settings_from_random_dicts_are_valid_or_one_line(values):
    result = refused_or(lambda: Settings.from_dict(values))
    if result is not None:
        assert isinstance(result, Settings)
        assert Settings.from_dict(result.to_dict()) == result


# ----------------------------------------------------------------------------- 5. batch pairs table
TABLE_CELLS = st.one_of(CELL, st.sampled_from(["fixed", "moving", "id", "labels", "options", "Fixed-Seg",
                                               "fixed_prompts", "spacing", "method", "\"a\nb\"", "\"\""]))


@st.composite
def pair_tables(draw) -> str:
    rows = draw(st.lists(st.lists(TABLE_CELLS, max_size=5), max_size=5))
    if draw(st.booleans()):
        rows.insert(0, draw(st.permutations(["fixed", "moving", "id", "labels"]).map(
            lambda names: names[:draw(st.integers(1, 4))])))
    return draw(st.sampled_from(["\n", "\r\n"])).join(",".join(r) for r in rows)


@fuzz(600)
@given(content=st.one_of(ANY_BYTES, ANY_TEXT, pair_tables()))
def test_pairs_table_garbage_is_refused_on_one_line(folder, content):
    path = write(folder / "pairs.csv", content)
    rows = refused_or(lambda: read_table(path), str(path))
    if rows is not None:
        assert rows and all({"fixed", "moving"} <= set(row) for row in rows)
        assert all(isinstance(v, str) for row in rows for v in row.values())


# ----------------------------------------------------------------------------- 6. ``samreg apply`` point files
@pytest.fixture(scope="module")
def zero_field(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("field")
    field = sitk.Image([5, 5, 5], sitk.sitkVectorFloat32, 3)
    field.SetOrigin((-40.0, 10.0, 3.0))
    sitk.WriteImage(field, str(folder / "displacement.nrrd"))
    return folder


@fuzz(250)
@given(content=st.one_of(ANY_BYTES, ANY_TEXT, elastix_texts(), MARKUPS_DOC.map(json_text)),
       name=st.sampled_from(["pts.csv", "pts.txt", "pts.pts", "pts.json", "pts.mrk.json"]))
def test_apply_refuses_garbage_point_files_on_one_line(folder, zero_field, content, name):
    source = write(folder / name, content)
    result = refused_or(lambda: apply(zero_field, [source], folder / "applied", space="fixed"), str(source))
    if result is not None:       # a zero field maps the points onto themselves
        assert np.allclose(read_points(folder / "applied" / name), read_points(source), atol=2e-6)
