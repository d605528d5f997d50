"""Every bad input gives exit code 2, one ``samreg: error:`` line naming the problem, no traceback,
no outputs, and unmodified inputs. Drives the CLI as a subprocess with the MIND encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import SIZE, SPACING, assert_user_error, digest, head_phantom, samreg, write_image, write_pair


@pytest.fixture()
def case(tmp_path):
    """A good fixed/moving pair in ``tmp_path/in``; yields a runner that checks inputs and output."""
    files = write_pair(tmp_path / "in", with_segs=False)
    out = tmp_path / "out"

    def run(fixed: Path = files["fixed"], moving: Path = files["moving"], *extra: str):
        before = digest(tmp_path / "in")
        result = samreg("register", fixed, moving, "-o", out, "--encoder", "mind", "--quiet", *extra)
        assert digest(tmp_path / "in") == before, "inputs were modified"
        assert not out.exists() or not any(out.iterdir()), f"outputs left: {list(out.iterdir())}"
        return result

    run.files, run.folder = files, tmp_path / "in"
    return run


def test_missing_file(case):
    result = case(case.folder / "nothere.nii.gz")
    assert_user_error(result, "nothere.nii.gz", any_of=("not found", "no such", "does not exist", "missing"))


def test_unreadable_file(case):
    garbage = case.folder / "garbage.nii.gz"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    assert_user_error(case(case.files["fixed"], garbage), "garbage.nii.gz",
                      any_of=("read", "unreadable", "not an image", "format", "corrupt"))


def test_2d_image(case):
    flat = write_image(head_phantom()[0][SIZE[2] // 2], case.folder / "flat2d.nii.gz")
    assert_user_error(case(flat, case.files["moving"]), any_of=("2d", "3d", "dimension"))


def test_single_slice_volume(case):
    one = write_image(head_phantom()[0][SIZE[2] // 2:SIZE[2] // 2 + 1], case.folder / "oneslice.nii.gz")
    assert_user_error(case(case.files["fixed"], one), any_of=("slice", "3d", "dimension", "too small", "thin"))


def test_empty_volume(case):
    empty = write_image(np.zeros(head_phantom()[0].shape, np.float32), case.folder / "empty.nii.gz")
    assert_user_error(case(case.files["fixed"], empty), any_of=("empty", "zero", "blank", "constant"))


def test_constant_volume(case):
    const = write_image(np.full(head_phantom()[0].shape, 42.0, np.float32), case.folder / "const.nii.gz")
    assert_user_error(case(const, case.files["moving"]), any_of=("constant", "uniform", "no contrast", "empty"))


def test_nan_volume(case):
    image = head_phantom()[0]
    image[10:20, 10:20, 10:20] = np.nan
    # NRRD: SimpleITK's NIfTI writer silently turns NaN into 0
    nan = write_image(image, case.folder / "nan.nrrd")
    assert_user_error(case(case.files["fixed"], nan), any_of=("nan", "finite"))


def test_unknown_encoder(case):
    result = samreg("register", case.files["fixed"], case.files["moving"], "-o", case.folder.parent / "out",
                    "--encoder", "no-such-encoder")
    assert_user_error(result, "no-such-encoder", "encoder")
    assert not (case.folder.parent / "out").exists()


def test_unknown_method(case):
    result = samreg("register", case.files["fixed"], case.files["moving"], "-o", case.folder.parent / "out",
                    "--method", "no-such-method")
    assert_user_error(result, "no-such-method", "method")


def test_wrong_checkpoint(case):
    bad = case.folder / "garbage.pth"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    result = samreg("register", case.files["fixed"], case.files["moving"], "-o", case.folder.parent / "out",
                    "--encoder", "sam-vit-b", "--checkpoint", bad, "--quiet")
    assert_user_error(result, "checkpoint")
    assert not (case.folder.parent / "out").exists() or not any((case.folder.parent / "out").iterdir())


def test_missing_checkpoint(case):
    result = case(case.files["fixed"], case.files["moving"], "--checkpoint", str(case.folder / "none.pth"))
    assert_user_error(result, "none.pth", "checkpoint")


def _shifted_moving(case) -> Path:
    moving = head_phantom(5.0)[0]
    origin = [-(n - 1) * SPACING / 2 + 1000.0 for n in SIZE]        # 1 m away
    return write_image(moving, case.folder / "far.nii.gz", origin=origin)


def test_non_overlapping_images_without_affine(case):
    assert_user_error(case(case.files["fixed"], _shifted_moving(case), "--no-affine"), "overlap")


def test_non_overlapping_images_with_affine(case):
    assert_user_error(case(case.files["fixed"], _shifted_moving(case)), "overlap")
