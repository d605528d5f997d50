"""``samreg bench``: method selection, case loading, the peers' field conversion and the quick run.

The quick run is the CI check of the benchmark: every configured method (ours and the peer
packages, installed by ``make test``) must run and give finite metrics, the identity run must
reproduce the directly computed initial metrics, and every method must recover a known
translation, which proves each peer's output was converted to our field convention.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from SAMRegistrationLib.bench.cases import Case, _translation_pair, load_cases
from SAMRegistrationLib.bench.ours import OurMethod
from SAMRegistrationLib.bench.runner import BenchOptions, all_methods, resolve_methods, run_bench, run_one
from SAMRegistrationLib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PEERS = ("ants-syn", "elastix", "convexadam-mind", "fireants")


def test_method_ids_parse_and_groups_resolve():
    spec = OurMethod.parse("samreg/convexadam/litemedsam+mind@warm")
    assert spec == OurMethod("convexadam", "litemedsam+mind", warm=True)
    assert spec.cold_id == "samreg/convexadam/litemedsam+mind"
    assert OurMethod.parse("ants-syn") is None and OurMethod.parse("samreg/x") is None
    known = all_methods()
    assert list(known)[0] == "identity" and set(PEERS) <= set(known)
    assert resolve_methods(["peers"]) == ["identity", *PEERS]
    # a warm run brings its cold run along, before it
    warm = resolve_methods(["samreg/pyramid/auto@warm"])            # the default is re-run warm
    assert warm == ["identity", "samreg/pyramid/auto", "samreg/pyramid/auto@warm"]
    # an encoder name means every method that needs no prompts and takes an encoder, with that
    # encoder; a method on its own features (samir) runs once, under its own encoder's name
    from SAMRegistrationLib.plugins import method_names, method_plugin, prompt_methods
    unprompted = sorted(m for m in set(method_names()) - prompt_methods() if not method_plugin(m).own_features)
    assert "convexadam" in unprompted and "promptreg" not in unprompted and "samir" not in unprompted
    assert resolve_methods(["mind"]) == ["identity", *(f"samreg/{m}/mind" for m in unprompted)]
    assert "samreg/samir/litemedsam" in all_methods() and "samreg/samir/mind" not in all_methods()
    with pytest.raises(InputError, match="unknown benchmark method 'nosuch'"):
        resolve_methods(["nosuch"])


def test_method_ids_carry_settings_to_the_right_sections():
    """``?name=value`` settings of an id reach the encoder's, the method's or the run's section,
    values read as JSON; the id round-trips and a warm run keeps them."""
    from SAMRegistrationLib.settings import Settings
    spec = OurMethod.parse("samreg/pyramid/auto?precision=fp32&canvas=192&iterations=7&spacing=2.5@warm")
    assert spec.warm and spec.id == "samreg/pyramid/auto?precision=fp32&canvas=192&iterations=7&spacing=2.5@warm"
    settings = Settings.from_dict(spec.settings(threads=1))
    assert settings.encoder_params.precision == "fp32" and settings.encoder_params.canvas == 192
    assert settings.method_params.iterations == 7 and settings.spacing == 2.5
    assert "precision=fp32" in spec.label and "warm" in spec.label
    assert resolve_methods(["samreg/pyramid/auto?precision=fp32"]) == ["identity", "samreg/pyramid/auto?precision=fp32"]
    assert OurMethod.parse("samreg/pyramid/auto?precision") is None
    with pytest.raises(InputError, match="unknown benchmark method"):
        resolve_methods(["samreg/nosuch/auto?precision=fp32"])
    with pytest.raises(InputError, match="precision"):                   # a bad value, before any run
        resolve_methods(["samreg/pyramid/auto?precision=fp8"])
    with pytest.raises(InputError, match="nosuch"):
        resolve_methods(["samreg/pyramid/auto?nosuch=1"])


def test_case_loading_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="cases.json does not exist"):
        load_cases(tmp_path)
    (tmp_path / "cases.json").write_text(json.dumps({"a": {"fixed": "f.nii.gz", "moving": "m.nii.gz"}}))
    with pytest.raises(InputError, match="unknown case"):
        load_cases(tmp_path, ["b"])
    with pytest.raises(InputError, match="fixed file .*f.nii.gz does not exist"):
        load_cases(tmp_path, ["a"])


def test_shared_cases_load_with_their_ground_truth():
    if not (DATA / "cases.json").is_file():
        pytest.skip(f"shared benchmark data not found at {DATA}")
    cases = {c.name: c for c in load_cases(DATA)}
    assert list(cases) == ["brain", "acdc067", "lung", "spine"]
    assert len(cases["brain"].labels) == 30 and cases["brain"].has_labels
    assert cases["acdc067"].label_names == {"1": "RV", "2": "Myo", "3": "LV"}
    assert cases["lung"].has_landmarks and cases["lung"].needs_affine and not cases["lung"].has_labels
    assert not cases["brain"].needs_affine
    assert Case.from_dict(cases["lung"].to_dict()) == cases["lung"]


def test_cli_rejects_an_unknown_case_in_one_line(tmp_path):
    (tmp_path / "cases.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "SAMRegistrationLib.cli", "bench", "--data", str(tmp_path),
                           "--cases", "nosuch", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("samreg: error: unknown case(s) nosuch")


@pytest.mark.slow
def test_quick_bench_runs_every_method_and_proves_the_conversions(tmp_path):
    lines: list[str] = []
    results = run_bench(BenchOptions(output_dir=tmp_path, quick=True, threads=2, command="samreg bench --quick"),
                        say=lines.append)
    assert "expected duration" in lines[0]
    methods = set(results["methods"])
    assert set(PEERS) <= methods and {m for m in methods if m.startswith("samreg/")}
    runs = results["runs"]
    for case in ("shift", "demo6mm"):
        ran = {r["method"] for r in runs if r["case"] == case and r["variant"] == "synthetic"}
        assert ran == methods, f"{case}: methods missing: {methods - ran}"
    for run in runs:
        assert run["status"] == "ok", f"{run['case']}/{run['method']}: {run['error']}"
        m = run["metrics"]
        for key in ("dice_mean", "hd95_mean_mm", "sdlogj", "fold_percent", "epe_mean_mm"):
            assert m.get(key) is not None and math.isfinite(m[key]), f"{run['case']}/{run['method']}: {key}={m.get(key)}"
        assert run["registration_s"] >= 0 and run["end_to_end_s"] > 0 and run["peak_rss_mb"] > 50
    # identity reproduces the directly computed initial metrics, every method recovers the translation
    sanity = results["sanity"]
    assert any("identity dice_mean" in k for k in sanity)
    translation_checks = [k for k in sanity if "recovers the known translation" in k]
    assert len(translation_checks) >= len(methods) - 1
    assert all(v["ok"] for v in sanity.values()), {k: v for k, v in sanity.items() if not v["ok"]}
    # one robustness run with the moving image stored re-oriented
    assert any(r["variant"] == "reoriented" and r["method"] == results["meta"]["default_method"] for r in runs)
    # outputs: machine-readable results, the markdown tables and at least one plot
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["runs"]) == len(runs)
    text = (tmp_path / "results.md").read_text()
    assert "ANTs SyN" in text and "ConvexAdam-MIND" in text and "FireANTs" in text and "samreg bench --quick" in text
    assert list((tmp_path / "plots").glob("*.png"))


def test_our_run_takes_its_timing_from_the_report(tmp_path, phantom_images):
    """run_ours reads report.json through its schema: registration time = affine + encode + optimise."""
    from SAMRegistrationLib.bench.ours import run_ours
    case = Case(name="phantom", fixed=str(phantom_images["fixed"]), moving=str(phantom_images["moving"]))
    result = run_ours(OurMethod("convexadam", "mind"), case, tmp_path / "work", 1, tmp_path / "cache",
                      overrides={"method_params": {"iterations": 5}})
    timings = json.loads((tmp_path / "work" / "samreg-output" / "report.json").read_text())["timings"]
    assert result.registration_s == pytest.approx(timings["affine_s"] + timings["encode_s"] + timings["optimise_s"])
    assert f"optimise {timings['optimise_s']:.1f} s" in result.note
    assert result.field.GetNumberOfComponentsPerPixel() == 3


def test_fireants_peer_recovers_a_known_translation_through_the_bench_child(tmp_path):
    """FireANTs' field, converted from its normalised moving-grid coordinates, on the phantom with
    rotated axes and anisotropic spacing: the bench's own tolerance (EPE < 1 mm), right sign and axis."""
    import numpy as np
    import SimpleITK as sitk

    from SAMRegistrationLib.bench.peers import package_available
    from SAMRegistrationLib.bench.score import score_field
    if not package_available("fireants"):
        pytest.skip("fireants is not installed (make installs it with --no-deps)")
    shift = (6.0, -4.0, 5.0)
    case = _translation_pair(tmp_path / "shift", shift)
    outcome = run_one(case, "fireants", tmp_path / "run", 1, tmp_path / "cache", timeout_s=300)
    assert outcome["status"] == "ok", outcome.get("error")
    assert "CPU" in outcome["note"] and "resampled" not in outcome["note"]
    field = sitk.ReadImage(str(tmp_path / "run" / "displacement.nrrd"), sitk.sitkVectorFloat64)
    fixed = sitk.ReadImage(case.fixed)
    assert field.GetSize() == fixed.GetSize() and np.allclose(field.GetDirection(), fixed.GetDirection())
    metrics = score_field(case, field)
    assert metrics["epe_mean_mm"] < 1.0, metrics
    labelled = sitk.GetArrayFromImage(sitk.ReadImage(case.fixed_seg)) > 0
    mean = sitk.GetArrayFromImage(field)[labelled].mean(0)
    assert np.allclose(mean, shift, atol=0.3), mean


def test_fireants_small_grids_are_resampled_over_the_same_extent():
    """A grid under FireANTs' 32 voxels per axis gets finer along that axis, covering every original
    voxel centre, so a field on it comes back onto the original grid without zero padding."""
    import numpy as np
    import SimpleITK as sitk

    from SAMRegistrationLib.bench.peers import FIREANTS_MIN_SIZE, at_least_voxels, on_fixed_grid
    image = sitk.Image([40, 36, 8], sitk.sitkFloat32)
    image.SetSpacing((1.4, 1.4, 10.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    image.SetOrigin((5.0, -7.0, 3.0))
    fine = at_least_voxels(image, FIREANTS_MIN_SIZE)
    assert fine.GetSize() == (40, 36, 32)
    assert np.allclose(fine.GetSpacing(), (1.4, 1.4, 2.5))

    def extent(img: sitk.Image) -> list:
        return [img.TransformContinuousIndexToPhysicalPoint([-0.5] * 3),
                img.TransformContinuousIndexToPhysicalPoint([n - 0.5 for n in img.GetSize()])]
    assert np.allclose(extent(fine), extent(image))
    constant = sitk.GetImageFromArray(np.broadcast_to([1.0, -2.0, 3.0], (32, 36, 40, 3)).copy(), isVector=True)
    constant.CopyInformation(fine)
    back = sitk.GetArrayFromImage(on_fixed_grid(constant, image))
    assert np.allclose(back, [1.0, -2.0, 3.0])
    big = sitk.Image([32, 33, 34], sitk.sitkFloat32)
    assert at_least_voxels(big, FIREANTS_MIN_SIZE) is big


def test_elastix_peer_writes_only_into_its_own_folder(tmp_path, phantom_images, monkeypatch):
    """Transformix's deformation field file lands in the run's folder, never in the caller's
    working directory (an in-process run, as the cardiac acceptance test makes, left one there)."""
    pytest.importorskip("itk", reason="the Elastix peer needs the bench extra")
    from SAMRegistrationLib.bench.peers import run_elastix
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    case = Case(name="phantom", fixed=str(phantom_images["fixed"]), moving=str(phantom_images["moving"]))
    result = run_elastix(case, tmp_path / "work", threads=1)
    assert result.field.GetNumberOfComponentsPerPixel() == 3
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "work" / "deformationField.nii").is_file()
