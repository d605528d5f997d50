"""Tests for SAMRegistrationLib.bench.report (results.md and benchmark plots)."""
from __future__ import annotations

import copy
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from SAMRegistrationLib.bench.plots import write_plots
from SAMRegistrationLib.bench.report import headline, write_markdown

OURS = "samreg/convexadam/litemedsam+mind"
WARM = OURS + "@warm"
ELASTIX_ERROR = "ITK ERROR: ElastixRegistrationMethod: parameter file not found"


def _run(case: str, method: str, variant: str = "standard", status: str = "ok",
         error: str | None = None, reg: float | None = None, e2e: float | None = None,
         rss: float | None = 800.0, note: str = "", **metrics) -> dict:
    return {"case": case, "variant": variant, "method": method, "status": status, "error": error,
            "registration_s": reg, "end_to_end_s": e2e, "peak_rss_mb": rss, "note": note,
            "metrics": metrics if status == "ok" else {}}


def _dice(rv: float, myo: float, lv: float) -> dict:
    return {"dice": {"1": rv, "2": myo, "3": lv}, "dice_mean": round((rv + myo + lv) / 3, 4),
            "hd95_mean_mm": 4.0, "sdlogj": 0.35, "fold_percent": 0.012}


def _results() -> dict:
    """Two standard cases (cardiac: 3 labels, lung: landmarks), a failed run, reoriented runs,
    one synthetic case."""
    methods = {
        "identity": {"label": "Identity", "family": "baseline", "note": "no registration"},
        OURS: {"label": "SAMReg litemedsam+mind", "family": "samreg", "note": "default"},
        WARM: {"label": "SAMReg (warm cache)", "family": "samreg", "note": "feature cache warm"},
        "ants-syn": {"label": "ANTs SyN", "family": "peer", "note": "antspyx SyN"},
        "elastix": {"label": "Elastix", "family": "peer", "note": "B-spline"},
        "convexadam-mind": {"label": "ConvexAdam-MIND", "family": "peer", "note": "MIND-SSC"},
    }
    cases = {
        "cardiac": {"kind": "MR cine ED->ES", "labels": [1, 2, 3],
                    "label_names": {"1": "RV", "2": "MYO", "3": "LV"}, "landmarks": False,
                    "variant": "standard"},
        "lung": {"kind": "CT inhale/exhale", "labels": [], "label_names": {}, "landmarks": True,
                 "variant": "standard"},
        "synth": {"kind": "known B-spline warp", "labels": [1, 2],
                  "label_names": {"1": "A", "2": "B"}, "landmarks": False, "variant": "synthetic"},
    }
    tre = lambda m, sd: {"tre_mean_mm": m, "tre_sd_mm": sd, "sdlogj": 0.2,  # noqa: E731
                         "fold_percent": 0.0}
    runs = [
        # cardiac: ours best (0.812 mean), identity lowest, elastix failed
        _run("cardiac", "identity", reg=0.0, e2e=1.0, **_dice(0.50, 0.40, 0.60)),
        _run("cardiac", OURS, reg=30.0, e2e=35.0, rss=2048.4, **_dice(0.80, 0.766, 0.87)),
        _run("cardiac", WARM, reg=6.0, e2e=9.0, **_dice(0.80, 0.766, 0.87)),
        _run("cardiac", "ants-syn", reg=15.0, e2e=16.0, **_dice(0.78, 0.74, 0.85)),
        _run("cardiac", "elastix", status="failed", error=ELASTIX_ERROR, e2e=2.0),
        _run("cardiac", "convexadam-mind", reg=4.0, e2e=5.0, note="affine given: none",
             **_dice(0.76, 0.72, 0.845)),
        # lung: ANTs has the lowest TRE
        _run("lung", "identity", reg=0.0, e2e=1.0, **tre(10.5, 4.0)),
        _run("lung", OURS, reg=20.0, e2e=24.0, **tre(1.85, 1.2)),
        _run("lung", WARM, reg=5.0, e2e=8.0, **tre(1.85, 1.2)),
        _run("lung", "ants-syn", reg=80.0, e2e=82.0, **tre(1.62, 1.1)),
        _run("lung", "elastix", reg=40.0, e2e=41.0, **tre(2.40, 1.5)),
        _run("lung", "convexadam-mind", reg=5.0, e2e=6.0, **tre(1.95, 1.3)),
        # reoriented robustness runs
        _run("cardiac", OURS, variant="reoriented", reg=31.0, e2e=36.0, **_dice(0.79, 0.76, 0.86)),
        _run("cardiac", "ants-syn", variant="reoriented", reg=15.0, e2e=16.0,
             **_dice(0.70, 0.65, 0.80)),
        _run("lung", OURS, variant="reoriented", status="unavailable",
             error="no reoriented copy of lung"),
        # synthetic case
        _run("synth", "identity", variant="synthetic", reg=0.0,
             epe_mean_mm=3.5, epe_p95_mm=7.0, dice_mean=0.6),
        _run("synth", OURS, variant="synthetic", reg=12.0, e2e=14.0,
             epe_mean_mm=0.8, epe_p95_mm=2.1, dice_mean=0.9, fold_percent=0.001),
        _run("synth", "ants-syn", variant="synthetic", reg=10.0, e2e=11.0,
             epe_mean_mm=1.2, epe_p95_mm=3.0, dice_mean=0.85, fold_percent=0.0),
    ]
    meta = {"date": "2026-11-22 21:40", "machine": "x86_64, 2 CPU cores, 24 GB RAM",
            "command": "samreg bench --cases cardiac lung synth --out bench-out", "threads": 2,
            "versions": {"samregistration": "0.1.0", "torch": "2.13.0", "antspyx": "0.6.3"},
            "quick": False, "default_method": OURS}
    return {"meta": meta, "methods": methods, "cases": cases, "runs": runs}


def _section(md: str, heading: str) -> str:
    """Text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = md.index(heading + "\n")
    rest = md[start + len(heading) + 1:]
    ends = [i for i in range(len(rest)) if rest.startswith("\n#", i)
            and len(rest[i + 1:].split(" ")[0]) <= len(level)]
    return rest[: ends[0]] if ends else rest


def _split_row(line: str) -> list[str]:
    inner = line.strip()[1:-1].replace("\\|", "\x00")
    return [c.strip().replace("\x00", "|") for c in inner.split("|")]


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """All markdown tables of ``text`` as (header, rows)."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            out.append((_split_row(block[0]), [_split_row(b) for b in block[2:]]))
            block = []
    return out


def _row_of(rows: list[list[str]], method_id: str) -> list[str]:
    hits = [r for r in rows if f"(`{method_id}`)" in r[0]]
    assert len(hits) == 1, (method_id, rows)
    return hits[0]


@pytest.fixture()
def report(tmp_path) -> tuple[dict, str, Path]:
    results = _results()
    path = tmp_path / "out" / "results.md"
    write_markdown(results, path)
    return results, path.read_text(encoding="utf-8"), path


def test_headline():
    assert headline({"landmarks": True}, {"tre_mean_mm": 1.5, "dice_mean": 0.8}) == \
        ("tre_mean_mm", 1.5, False)
    assert headline({"labels": [1], "landmarks": False}, {"dice_mean": 0.8}) == \
        ("dice_mean", 0.8, True)
    assert headline({"variant": "synthetic", "labels": [1]}, {"epe_mean_mm": 0.7}) == \
        ("epe_mean_mm", 0.7, False)
    assert headline({"landmarks": True}, {}) == ("tre_mean_mm", None, False)
    assert headline({}, {"dice_mean": float("nan")}) == ("dice_mean", None, True)


def test_markdown_header_and_atomic_write(report):
    results, md, path = report
    assert [p.name for p in path.parent.iterdir()] == ["results.md"]  # no temp leftovers
    assert "2026-11-22 21:40" in md and "x86_64, 2 CPU cores, 24 GB RAM" in md
    assert "```\n" + results["meta"]["command"] + "\n```" in md
    assert "torch 2.13.0" in md and "Threads: 2" in md


def test_one_table_per_case_with_one_row_per_method(report):
    results, md, _ = report
    for case in ("cardiac", "lung"):
        tables = _tables(_section(md, f"## Case `{case}`"))
        assert len(tables) == 1
        header, rows = tables[0]
        assert len(rows) == len(results["methods"])
        for m in results["methods"]:
            _row_of(rows, m)
        assert all(len(r) == len(header) for r in rows)
    card_header = _tables(_section(md, "## Case `cardiac`"))[0][0]
    assert {"Dice mean", "Dice RV", "Dice MYO", "Dice LV", "HD95 mm"} <= set(card_header)
    assert not any("TRE" in h for h in card_header)
    lung_header = _tables(_section(md, "## Case `lung`"))[0][0]
    assert "TRE mm (mean ± sd)" in lung_header and "Dice mean" not in lung_header


def test_failed_run_shows_status_and_error(report):
    _, md, _ = report
    header, rows = _tables(_section(md, "## Case `cardiac`"))[0]
    row = _row_of(rows, "elastix")
    note = row[header.index("Note")]
    assert "FAILED" in note and ELASTIX_ERROR in note
    assert row[header.index("Dice mean")] == "—"


def test_formats_and_best_value_bolded(report):
    _, md, _ = report
    header, rows = _tables(_section(md, "## Case `cardiac`"))[0]
    col = header.index("Dice mean")
    # ours: mean(0.80, 0.766, 0.87) = 0.812 is the best non-identity Dice
    assert _row_of(rows, OURS)[col] == "**0.812**"
    assert _row_of(rows, WARM)[col] == "**0.812**"  # tie: both bolded
    assert _row_of(rows, "ants-syn")[col] == "0.790"
    assert _row_of(rows, "identity")[col] == "0.500"
    ours = _row_of(rows, OURS)
    assert ours[header.index("Dice MYO")] == "0.766"
    assert ours[header.index("HD95 mm")] == "4.00"
    assert ours[header.index("% fold")] == "0.012"
    assert ours[header.index("Reg. s")] == "30.0"
    assert ours[header.index("Peak RSS MB")] == "2048"
    assert "affine given: none" in _row_of(rows, "convexadam-mind")[header.index("Note")]

    header, rows = _tables(_section(md, "## Case `lung`"))[0]
    col = header.index("TRE mm (mean ± sd)")
    assert _row_of(rows, "ants-syn")[col] == "**1.62 ± 1.10**"  # lowest TRE is best
    assert _row_of(rows, OURS)[col] == "1.85 ± 1.20"
    assert _row_of(rows, "identity")[col] == "10.50 ± 4.00"


def test_identity_is_never_bolded(tmp_path):
    results = _results()
    for r in results["runs"]:
        if r["case"] == "cardiac" and r["method"] == "identity":
            r["metrics"]["dice_mean"] = 0.99
    path = tmp_path / "results.md"
    write_markdown(results, path)
    header, rows = _tables(_section(path.read_text(encoding="utf-8"), "## Case `cardiac`"))[0]
    col = header.index("Dice mean")
    assert _row_of(rows, "identity")[col] == "0.990"
    assert _row_of(rows, OURS)[col] == "**0.812**"


def _reg_s(results: dict, case: str, method: str) -> float:
    (run,) = [r for r in results["runs"] if r["case"] == case and r["method"] == method
              and r["variant"] == "standard"]
    return run["registration_s"]


def test_summary_table(report):
    results, md, _ = report
    section = _section(md, "## Summary")
    (header, rows), = _tables(section)
    by_case = {r[0]: r for r in rows}
    assert set(by_case) == {"`cardiac`", "`lung`"}
    card, lung = by_case["`cardiac`"], by_case["`lung`"]

    # ratios computed from the numbers in the dict: 30.0 / 15.0 -> "2.0x" etc.
    ants_ratio = _reg_s(results, "cardiac", OURS) / _reg_s(results, "cardiac", "ants-syn")
    assert card[header.index("Time ours/ANTs SyN")] == f"{ants_ratio:.1f}×" == "2.0×"
    cam_ratio = _reg_s(results, "cardiac", OURS) / _reg_s(results, "cardiac", "convexadam-mind")
    assert card[header.index("Time ours/ConvexAdam-MIND")] == f"{cam_ratio:.1f}×"
    warm_ratio = _reg_s(results, "cardiac", WARM) / _reg_s(results, "cardiac", "convexadam-mind")
    assert card[header.index("Time warm/ConvexAdam-MIND")] == f"{warm_ratio:.1f}×" == "1.5×"
    assert card[header.index("Time ours/Elastix")] == "—"  # elastix failed on cardiac
    ratio = _reg_s(results, "lung", OURS) / _reg_s(results, "lung", "ants-syn")  # 0.25
    assert lung[header.index("Time ours/ANTs SyN")] == f"{ratio:.2g}×"

    # headline: cardiac Dice (ours 0.812 vs ANTs 0.790), lung TRE (ours 1.85 vs ANTs 1.62)
    assert card[header.index("Best peer")] == "0.790 (ANTs SyN)"
    assert card[header.index("Ours − best peer")] == "+0.022 (ours better)"
    assert lung[header.index("Best peer")] == "1.62 (ANTs SyN)"
    assert lung[header.index("Ours − best peer")] == "+0.23 (peer better)"
    assert "positive difference means ours is better" in section
    assert "negative difference means ours is better" in section


def test_robustness_and_synthetic_sections(report):
    _, md, _ = report
    (header, rows), = _tables(_section(md, "## Robustness"))
    assert len(rows) == 3
    card_ours = [r for r in rows if r[0] == "`cardiac`" and r[1] == "SAMReg litemedsam+mind"][0]
    assert card_ours[header.index("Standard")] == "0.812"
    assert card_ours[header.index("Reoriented")] == "0.803"
    assert card_ours[header.index("Reoriented − standard")] == "-0.009"
    lung_ours = [r for r in rows if r[0] == "`lung`"][0]
    assert "unavailable" in lung_ours[header.index("Reoriented")]

    synth = _section(md, "## Synthetic")
    (header, rows), = _tables(synth)
    assert len(rows) == 3
    assert _row_of(rows, OURS)[header.index("EPE mean mm")] == "**0.80**"
    assert _row_of(rows, OURS)[header.index("EPE p95 mm")] == "2.10"
    assert _row_of(rows, "identity")[header.index("EPE mean mm")] == "3.50"
    assert "## Case `synth`" not in md


def test_no_robustness_or_synthetic_without_such_runs(tmp_path):
    results = _results()
    results["runs"] = [r for r in results["runs"] if r["variant"] == "standard"]
    del results["cases"]["synth"]
    path = tmp_path / "results.md"
    write_markdown(results, path)
    md = path.read_text(encoding="utf-8")
    assert "## Robustness" not in md and "## Synthetic" not in md
    assert "Time warm/" in md


def _check_pngs(paths: list[Path], expected: set[str]) -> None:
    assert {p.name for p in paths} == expected
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        img = mpimg.imread(str(p))
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".tmp-")]


def test_write_plots(tmp_path):
    paths = write_plots(_results(), tmp_path / "plots")
    _check_pngs(paths, {"dice_per_method.png", "accuracy_vs_time.png",
                        "per_label_dice_cardiac.png", "synthetic_epe.png"})


def test_write_plots_heatmap_for_many_labels(tmp_path):
    results = _results()
    n = 8
    results["cases"]["cardiac"]["labels"] = list(range(1, n + 1))
    results["cases"]["cardiac"]["label_names"] = {str(i): f"struct{i}" for i in range(1, n + 1)}
    for r in results["runs"]:
        if r["case"] == "cardiac" and r["status"] == "ok":
            r["metrics"]["dice"] = {str(i): 0.5 + 0.05 * i for i in range(1, n + 1)}
            r["metrics"]["dice"]["3"] = None  # missing value: grey cell
    paths = write_plots(results, tmp_path)
    assert "per_label_dice_cardiac.png" in {p.name for p in paths}
    _check_pngs(paths, {p.name for p in paths})
    # >5 labels: no per-label columns in the markdown table, only the mean
    write_markdown(results, tmp_path / "results.md")
    header, _ = _tables(_section((tmp_path / "results.md").read_text(), "## Case `cardiac`"))[0]
    assert "Dice mean" in header and not any(h.startswith("Dice struct") for h in header)


def test_all_runs_failed(tmp_path):
    results = _results()
    for r in results["runs"]:
        r.update(status="failed", error=f"boom in {r['method']}", metrics={},
                 registration_s=None)
    path = tmp_path / "results.md"
    write_markdown(results, path)
    md = path.read_text(encoding="utf-8")
    header, rows = _tables(_section(md, "## Case `cardiac`"))[0]
    assert len(rows) == len(results["methods"])
    assert "boom in ants-syn" in _row_of(rows, "ants-syn")[header.index("Note")]
    assert "**" not in "".join(r[header.index("Dice mean")] for r in rows)
    assert "## Summary" in md
    paths = write_plots(results, tmp_path / "plots")
    assert paths == []  # nothing to draw, but no crash


def test_sparse_results_do_not_crash(tmp_path):
    """Missing sections/fields, unknown methods and cases, None everywhere."""
    results = copy.deepcopy(_results())
    results["meta"] = {}
    results["methods"] = {}
    results["cases"] = {}
    results["runs"].append({"case": "extra", "method": "mystery", "status": "ok",
                            "metrics": None})
    write_markdown(results, tmp_path / "results.md")
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## Case `extra`" in md and "mystery" in md
    write_plots(results, tmp_path / "plots")
    write_markdown({}, tmp_path / "empty.md")
    assert write_plots({}, tmp_path / "empty") == []
