"""``samreg train`` on the command line: its options, and bad input as one line with exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO, assert_user_error, samreg
from training_data import write_dataset

LAUNCHER = Path(__file__).resolve().parent / "train_cli.py"


def _with_tiny(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(LAUNCHER), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_train_help_lists_the_training_options():
    result = samreg("train", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--data", "--output", "--steps", "--batch", "--lr", "--weight-decay", "--val-every",
                   "--checkpoint-every", "--seed", "--device", "--restart", "--grid-size", "--grid-spacing",
                   "--deform-voxels", "--reencode-features", "--threads", "--quiet"):
        assert option in result.stdout, option
    tiny = _with_tiny("train", "--help")
    assert tiny.returncode == 0 and "--channels" in tiny.stdout and "--lambda-diffusion" in tiny.stdout
    assert "tiny-net" in tiny.stdout                      # the help says which methods take it


def test_unknown_method_is_one_line(tmp_path):
    data = write_dataset(tmp_path, label_maps=0, pairs=0, validation=0, volumes=1)
    assert_user_error(samreg("train", "no-such-method", "--data", data, "-o", tmp_path / "run"),
                      "unknown method", "no-such-method")
    assert not (tmp_path / "run").exists()


def test_a_method_without_train_is_one_line(tmp_path):
    data = write_dataset(tmp_path, label_maps=0, pairs=0, validation=0, volumes=1)
    message = assert_user_error(samreg("train", "convexadam", "--data", data, "-o", tmp_path / "run"),
                                "convexadam", "cannot be trained")
    assert "trainable methods: assisted, samir" in message
    message = assert_user_error(_with_tiny("train", "convexadam", "--data", data, "-o", tmp_path / "run"),
                                "cannot be trained")
    assert "trainable methods: assisted, samir, tiny-net" in message


def test_a_bad_dataset_or_setting_is_one_line(tmp_path):
    data = write_dataset(tmp_path, label_maps=0, pairs=0, validation=0, volumes=1)
    (tmp_path / "volume0_seg.nii.gz").unlink()
    assert_user_error(_with_tiny("train", "tiny-net", "--data", data, "-o", tmp_path / "run"),
                      f"{data}: volumes[0].label: no such file volume0_seg.nii.gz")
    assert_user_error(_with_tiny("train", "tiny-net", "--data", tmp_path / "none.json", "-o", tmp_path / "run"),
                      "none.json", "no such dataset file")
    good = write_dataset(tmp_path / "good", label_maps=0, pairs=0, validation=0, volumes=1)
    assert_user_error(_with_tiny("train", "tiny-net", "--data", good, "-o", tmp_path / "run", "--lr", "-1"),
                      "train.lr")
    assert_user_error(_with_tiny("train", "tiny-net", "--data", good, "-o", tmp_path / "run", "--grid-size", "8,8"),
                      "grid_size", "three sizes")
    assert_user_error(_with_tiny("train", "tiny-net", "--data", good, "-o", tmp_path / "run", "--channels", "0"),
                      "tiny-net.channels")
    (tmp_path / "file").write_text("x")
    assert_user_error(_with_tiny("train", "tiny-net", "--data", good, "-o", tmp_path / "file"),
                      "not a folder")
    assert not (tmp_path / "run").exists()
