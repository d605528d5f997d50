"""The ``samreg`` command line, driven as a subprocess on small synthetic volumes (MIND encoder)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import OUTPUT_FILES, REPO, digest, samreg

sitk = pytest.importorskip("SimpleITK")


# ----------------------------------------------------------------------------- cheap commands
def test_help_is_fast_and_does_not_import_torch():
    start = time.perf_counter()
    result = samreg("--help")
    assert result.returncode == 0
    assert "register" in result.stdout and "demo" in result.stdout and "worker" in result.stdout
    assert time.perf_counter() - start < 10
    probe = subprocess.run([sys.executable, "-c", "import sys, SAMRegistrationLib.cli as c; "
                            "c.build_parser(); print('torch' in sys.modules, 'numpy' in sys.modules)"],
                           capture_output=True, text=True, cwd=REPO)
    assert probe.stdout.split() == ["False", "False"], probe.stderr


def test_register_help_lists_options():
    result = samreg("register", "--help")
    assert result.returncode == 0
    for option in ("--encoder", "--method", "--spacing", "--slice-step", "--slice-axis", "--pca-dims",
                   "--device", "--checkpoint", "--no-affine", "--fixed-seg", "--moving-seg", "--labels",
                   "--fixed-landmarks", "--moving-landmarks", "--fixed-modality", "--moving-modality",
                   "--iterations", "--lambda-reg", "--no-cache", "--cache-dir", "--threads", "--quiet"):
        assert option in result.stdout, option


def test_encoders_and_methods_are_listed():
    encoders = samreg("encoders")
    assert encoders.returncode == 0, encoders.stderr
    assert "mind" in encoders.stdout.split()
    methods = samreg("methods")
    assert methods.returncode == 0, methods.stderr
    assert "convexadam" in methods.stdout.split()


def test_bad_labels_rejected_before_running(tmp_path, phantom_pair):
    files = phantom_pair
    result = samreg("register", files["fixed"], files["moving"], "-o", tmp_path / "out",
                    "--fixed-seg", files["fixed_seg"], "--moving-seg", files["moving_seg"], "--labels", "1,x")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("samreg: error:") and "labels" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, words", [
    (["--iterations", "-1"], ("setting 'method_params.iterations'", "greater than or equal to 0", "-1")),
    (["--method", "pyramid", "--grid-sp", "2"], ("unknown setting 'method_params.grid_sp'", "known:", "radii")),
    (["--method", "pyramid", "--factors", "1,2,4", "--radii", "2,3,3"], ("coarse to fine",)),
    (["--prompt-views", "mirror"], ("setting 'prompt_params.views.0'", "'mirror'")),
])
def test_bad_parameter_options_are_one_line(tmp_path, phantom_images, options, words):
    result = samreg("register", phantom_images["fixed"], phantom_images["moving"], "-o", tmp_path / "out",
                    "--encoder", "mind", *options)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("samreg: error:"), result.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()


def test_settings_only_given_options_override(monkeypatch, tmp_path, phantom_images):
    """In-process: the CLI passes exactly the given options to Settings (pipeline stubbed)."""
    from SAMRegistrationLib import cli, pipeline
    from SAMRegistrationLib.settings import Settings

    files = phantom_images
    seen = {}

    def fake_register(inputs, settings, progress=None, cancel=None, ledger=None):
        seen["inputs"], seen["settings"] = inputs, settings
        progress("load", 1.0, "")
        return {"metrics": {"dice_mean": 0.9, "initial": {"dice_mean": 0.5}}}

    monkeypatch.setattr(pipeline, "register", fake_register)
    status = cli.main(["register", str(files["fixed"]), str(files["moving"]), "-o", str(tmp_path / "o"),
                       "--encoder", "mind", "--spacing", "3", "--no-affine", "--iterations", "5", "--quiet"])
    assert status == 0
    expected = Settings(encoder="mind", spacing=3.0, affine=False, method_params={"iterations": 5})
    assert seen["settings"] == expected
    assert seen["inputs"].fixed == files["fixed"] and seen["inputs"].labels is None


# ----------------------------------------------------------------------------- real pipeline
def test_register_end_to_end(tmp_path, phantom_pair):
    files = phantom_pair
    before = digest(tmp_path / "in")
    out = tmp_path / "out"
    result = samreg("register", files["fixed"], files["moving"], "-o", out, "--encoder", "mind",
                    "--fixed-seg", files["fixed_seg"], "--moving-seg", files["moving_seg"], "--labels", "1,2,3")
    assert result.returncode == 0, result.stderr
    for name in OUTPUT_FILES + ("warped_seg.nii.gz",):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert isinstance(report, dict)
    # progress bars per stage on stderr, summary on stdout
    for stage in ("load", "affine", "encode", "optimise", "write"):
        assert stage in result.stderr, stage
    assert str(out.absolute()) in result.stdout
    assert "time" in result.stdout.lower()
    assert "Dice" in result.stdout and "initial" in result.stdout
    assert digest(tmp_path / "in") == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging left behind"


def test_register_quiet_has_no_progress_bars(tmp_path, phantom_images):
    files = phantom_images
    out = tmp_path / "out"
    result = samreg("register", files["fixed"], files["moving"], "-o", out, "--encoder", "mind",
                    "--iterations", "10", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr
    assert (out / "report.json").is_file()


# ----------------------------------------------------------------------------- error mapping (in-process)
@pytest.mark.parametrize("exc, status, words", [
    (MemoryError("cannot allocate 9 GB"), 3, ("not enough memory",)),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), 3, ("not enough memory",)),
    ("ResourceError", 3, ("working grid too large",)),
    ("Cancelled", 130, ("cancelled",)),
    ("CheckpointError", 2, ("samreg: error:", "bad checksum")),
])
def test_error_mapping(monkeypatch, tmp_path, capsys, exc, status, words, phantom_images):
    from SAMRegistrationLib import cli, errors, pipeline

    if isinstance(exc, str):
        exc = getattr(errors, exc)({"ResourceError": "working grid too large", "Cancelled": "cancelled",
                                    "CheckpointError": "bad checksum"}[exc])
    files = phantom_images

    def fake_register(inputs, settings, progress=None, cancel=None, ledger=None):
        ledger.make_dirs(inputs.output_dir)
        (Path(inputs.output_dir) / "partial.nii.gz").write_bytes(b"x")
        ledger.record_file(Path(inputs.output_dir) / "partial.nii.gz")
        (tmp_path / "out-by-someone-else.txt").write_text("not the run's")   # not recorded: stays
        raise exc

    monkeypatch.setattr(pipeline, "register", fake_register)
    out = tmp_path / "out"
    assert cli.main(["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), "--quiet"]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samreg:")
    assert all(w in err[0] for w in words), err
    assert not out.exists(), "partial outputs must be removed"
    assert (tmp_path / "out-by-someone-else.txt").read_text() == "not the run's"


def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path, phantom_images):
    from SAMRegistrationLib import cli, pipeline

    files = phantom_images

    def fake_register(inputs, settings, progress=None, cancel=None, ledger=None):
        ledger.make_dirs(inputs.output_dir)
        (Path(inputs.output_dir) / "partial.nii.gz").write_bytes(b"x")
        ledger.record_file(Path(inputs.output_dir) / "partial.nii.gz")
        (tmp_path / "o-by-someone-else.txt").write_text("not the run's")     # not recorded: stays
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "register", fake_register)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["register", str(files["fixed"]), str(files["moving"]), "-o", str(tmp_path / "o"), "--quiet"])
    assert not (tmp_path / "o").exists(), "partial outputs must be removed"
    assert (tmp_path / "o-by-someone-else.txt").read_text() == "not the run's"


def test_sigint_cancels_register(tmp_path, phantom_images):
    import signal
    import threading

    files = phantom_images
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "SAMRegistrationLib.cli", "register", str(files["fixed"]),
                             str(files["moving"]), "-o", str(out), "--encoder", "mind", "--iterations", "100000",
                             "--no-cache"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    seen = threading.Event()
    chunks: list[str] = []

    def read() -> None:
        while True:
            chunk = proc.stderr.read(64)
            if not chunk:
                break
            chunks.append(chunk)
            if "optimise" in "".join(chunks[-4:]):
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(300)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(chunks)[-2000:]
    assert "cancelled" in "".join(chunks)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_demo_recovers_known_field(tmp_path):
    """The demo end to end at 4 mm with MIND: the recovered field beats the identity."""
    pytest.importorskip("nilearn")
    from SAMRegistrationLib.demo import run_demo
    from SAMRegistrationLib.settings import Settings

    results = run_demo(tmp_path / "demo", settings=Settings(encoder="mind", method_params={"iterations": 30}),
                       spacing=4.0, verbose=False)
    for name in ("fixed.nii.gz", "moving.nii.gz", "fixed_seg.nii.gz", "moving_seg.nii.gz",
                 "true_displacement.nrrd"):
        assert (tmp_path / "demo" / "inputs" / name).is_file()
    for name in OUTPUT_FILES + ("demo.json",):
        assert (tmp_path / "demo" / name).is_file()
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["epe_mean_mm_after"] == results["epe_mean_mm_after"]
    assert results["true_field_inverse_residual_mm"] < 1e-3
    assert results["epe_mean_mm_before"] > 3.0
    assert results["epe_mean_mm_after"] < 0.7 * results["epe_mean_mm_before"]
    assert results["dice_wm_after"] > results["dice_wm_before"] + 0.05
    assert results["dice_gm_after"] > results["dice_gm_before"]
    assert results["fold_percent"] < 5.0        # sanity only: 4 mm is coarse
