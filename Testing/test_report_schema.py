"""report.json's schema: the committed JSON Schema is the classes', real reports fit the classes,
and the key metrics are read from their places in it (no guessing by name)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from SAMRegistrationLib import report_schema
from SAMRegistrationLib.report_schema import KEY_METRIC_PATHS, Metrics, Report, StageMetrics, key_metrics

LANDMARKS = np.array([[0.0, 0.0, 0.0], [10.0, 5.0, -3.0], [-8.0, 4.0, 6.0], [4.0, -6.0, 2.0]])


def write_points(path: Path, points: np.ndarray) -> Path:
    """An elastix point file (LPS mm)."""
    path.write_text(f"point\n{len(points)}\n" + "\n".join(" ".join(f"{c:g}" for c in p) for p in points) + "\n")
    return path


def test_committed_schema_is_the_classes_schema():
    committed = json.loads(report_schema.SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == report_schema.json_schema(), \
        "docs/report.schema.json is stale: regenerate it with python -m SAMRegistrationLib.report_schema"
    assert report_schema.SCHEMA_FILE.read_text(encoding="utf-8") == report_schema.schema_text()
    # the documented blocks are there, with the final metrics at the top level of metrics
    metrics = committed["$defs"]["Metrics"]
    assert {"initial", "affine", "dice_mean", "tre_mean_mm", "fold_percent", "region_pairs"} <= set(metrics["properties"])
    assert set(committed["required"]) == {"version", "inputs", "settings", "resolved", "device", "timings",
                                          "peak_rss_mb", "metrics"}


def test_key_metric_paths_are_schema_fields():
    """Every place the key-metric reader looks is a field of the report classes."""
    for name, path in KEY_METRIC_PATHS.items():
        model = Report
        for key in path[:-1]:
            model = model.model_fields[key].annotation
        assert path[-1] in model.model_fields, (name, path)
        assert path[-1] == name.removesuffix("_initial")


def test_a_real_run_fits_the_schema(tmp_path, phantom_pair):
    from SAMRegistrationLib.pipeline import RegistrationInputs, register
    from SAMRegistrationLib.settings import Settings
    files = phantom_pair
    out = tmp_path / "out"
    inputs = RegistrationInputs(files["fixed"], files["moving"], out, fixed_seg=files["fixed_seg"],
                                moving_seg=files["moving_seg"], labels=[1, 2, 3],
                                fixed_landmarks=write_points(tmp_path / "f.txt", LANDMARKS),
                                moving_landmarks=write_points(tmp_path / "m.txt", LANDMARKS + [3.0, 0.0, 0.0]))
    returned = register(inputs, Settings(encoder="mind", method_params={"iterations": 10}))
    written = json.loads((out / "report.json").read_text())
    report = Report.read(out / "report.json")
    assert report.to_dict() == written                      # the file's layout survives a round trip
    assert Report.from_dict(returned).to_dict().keys() == written.keys()
    m = report.metrics
    assert m.affine is not None and m.affine.dice_mean is not None and m.affine.tre_mean_mm is not None
    assert m.initial.fold_percent == 0.0 and math.isclose(m.initial.tre_mean_mm, 3.0)
    assert set(m.dice) == {"1", "2", "3"} and m.tre_median_mm is not None
    assert m.regions is None and m.region_pairs is None and "regions" not in written["metrics"]
    assert report.timings.prompts_s is None and "prompts_s" not in written["timings"]
    assert report.timings.registration_s == pytest.approx(
        written["timings"]["affine_s"] + written["timings"]["encode_s"] + written["timings"]["optimise_s"])
    assert key_metrics(written) == report.key_metrics() == {
        "dice_mean": m.dice_mean, "dice_mean_initial": m.initial.dice_mean,
        "tre_mean_mm": m.tre_mean_mm, "tre_mean_mm_initial": m.initial.tre_mean_mm,
        "fold_percent": m.fold_percent, "fold_percent_initial": 0.0}


def test_a_bare_run_fits_the_schema_with_only_what_applies(tmp_path, phantom_images):
    from SAMRegistrationLib.pipeline import RegistrationInputs, register
    from SAMRegistrationLib.settings import Settings
    files = phantom_images
    register(RegistrationInputs(files["fixed"], files["moving"], tmp_path / "out"),
             Settings(encoder="mind", affine=False, method_params={"iterations": 5}))
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    report = Report.from_dict(written)
    assert report.to_dict() == written
    assert set(written["metrics"]) == {"sdlogj", "fold_percent", "initial"}
    assert written["metrics"]["initial"] == {"sdlogj": 0.0, "fold_percent": 0.0}
    assert written["resolved"]["affine"] == {"chosen": "disabled"}
    assert key_metrics(written) == {"fold_percent": written["metrics"]["fold_percent"], "fold_percent_initial": 0.0}


def test_reports_that_do_not_fit_are_refused():
    good = {"sdlogj": 0.1, "fold_percent": 0.0, "initial": {"sdlogj": 0.0, "fold_percent": 0.0}}
    assert Metrics.from_dict(good).to_dict() == good
    with pytest.raises(ValidationError, match="dice_mean_std"):
        Metrics.from_dict({**good, "dice_mean_std": 0.1})              # an undocumented key
    with pytest.raises(ValidationError, match="initial"):
        Metrics.from_dict({"sdlogj": 0.1, "fold_percent": 0.0})         # the initial block is always there
    with pytest.raises(ValidationError, match="tre_mean"):
        StageMetrics.from_dict({"tre_mean": 1.0})


@pytest.mark.parametrize("report, expected", [
    ({"metrics": {"dice_mean": 0.8, "tre_mean_mm": 2.0, "fold_percent": 0.1,
                  "initial": {"dice_mean": 0.5, "tre_mean_mm": 9.0, "fold_percent": 0.0}}},
     {"dice_mean": 0.8, "dice_mean_initial": 0.5, "tre_mean_mm": 2.0, "tre_mean_mm_initial": 9.0,
      "fold_percent": 0.1, "fold_percent_initial": 0.0}),
    # other quantities with similar names, the affine stage's values and misplaced blocks are not key metrics
    ({"metrics": {"dice_mean_std": 0.1, "hd95_mean_mm": 3.0, "affine": {"dice_mean": 0.7},
                  "initial": {"dice_mean": 0.6, "dice_mean_before": 0.1}},
      "initial": {"tre_mean_mm": 5.0}, "dice_mean": 0.9, "before": {"fold_percent": 1.0}},
     {"dice_mean_initial": 0.6}),
    # not computed: null, NaN, not a number
    ({"metrics": {"dice_mean": None, "tre_mean_mm": float("nan"), "fold_percent": True,
                  "initial": {"dice_mean": "0.5", "fold_percent": 0}}},
     {"fold_percent_initial": 0.0}),
    ({"metrics": [1, 2]}, {}),
    ({}, {}),
    (None, {}),
])
def test_key_metrics_read_their_places(report, expected):
    assert key_metrics(report) == expected
    assert list(key_metrics(report)) == sorted(expected)
