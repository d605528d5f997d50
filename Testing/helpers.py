"""Helpers shared by the test modules (fixtures built on them are in ``conftest.py``).

The ``samreg`` command and its worker driven as subprocesses, the small head-like phantom pair
they register, a digest of a folder (inputs must stay byte-identical), the check of a user
error, and a one-structure volume for the prompt tests.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from phantom import oblique_direction

REPO = Path(__file__).resolve().parents[1]
SIZE = (40, 48, 44)      # x, y, z voxels
SPACING = 2.0            # mm
OUTPUT_FILES = ("warped.nii.gz", "displacement.nrrd", "jacobian.nii.gz", "qc.png", "report.json")


# ----------------------------------------------------------------------------- shared helpers
def head_phantom(shift_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(intensity, labels) arrays (z, y, x) of a smooth head-like blob phantom.

    ``shift_mm`` bends the inner structures with a smooth known displacement.
    """
    nx, ny, nz = SIZE
    z, y, x = np.meshgrid(*(SPACING * (np.arange(n) - (n - 1) / 2) for n in (nz, ny, nx)), indexing="ij")
    bend = shift_mm * np.exp(-(x ** 2 + y ** 2 + z ** 2) / (2 * 20.0 ** 2))
    xs, ys, zs = x - bend, y + 0.5 * bend, z
    body = 1 / (1 + np.exp(((xs / 34) ** 2 + (ys / 40) ** 2 + (zs / 36) ** 2 - 1) * 12))
    image = 100 * body
    labels = np.zeros(x.shape, np.uint8)
    blobs = [((-12, 8, 4), 7, 120, 1), ((10, -6, -6), 6, -60, 2), ((4, 14, -10), 5, 80, 3),
             ((-6, -14, 10), 4, 150, 0), ((14, 10, 12), 4, 60, 0)]
    for (cx, cy, cz), radius, value, label in blobs:
        r2 = ((xs - cx) ** 2 + (ys - cy) ** 2 + (zs - cz) ** 2) / radius ** 2
        image = image + value * np.exp(-r2)
        if label:
            labels[(r2 < 1) & (labels == 0)] = label
    image += 15 * np.sin(xs / 6) * np.cos(ys / 7) * body            # some texture
    return image.astype(np.float32), labels


def write_image(array: np.ndarray, path: Path, origin=None, spacing=None) -> Path:
    image = sitk.GetImageFromArray(array)
    dims = array.ndim
    image.SetSpacing(spacing or (SPACING,) * dims)
    if origin is None:
        origin = [-(n - 1) * SPACING / 2 for n in image.GetSize()]
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), True)
    return path


def write_pair(folder: Path, with_segs: bool = True) -> dict[str, Path]:
    """fixed/moving images (and label maps) of the phantom in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    fixed, fixed_seg = head_phantom(0.0)
    moving, moving_seg = head_phantom(5.0)
    files = {"fixed": write_image(fixed, folder / "fixed.nii.gz"),
             "moving": write_image(0.8 * moving + 10, folder / "moving.nii.gz")}
    if with_segs:
        files["fixed_seg"] = write_image(fixed_seg, folder / "fixed_seg.nii.gz")
        files["moving_seg"] = write_image(moving_seg, folder / "moving_seg.nii.gz")
    return files


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (to prove inputs are unmodified)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def samreg(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m SAMRegistrationLib.cli ARGS`` and capture its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, "-m", "SAMRegistrationLib.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=timeout)


def assert_user_error(result, *words: str, any_of: tuple[str, ...] = ()) -> str:
    """Exit 2, a single stderr line starting with 'samreg: error:', containing the given words."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("samreg: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert lines[-1] == errors[0], "the error must be the last thing printed"
    message = errors[0].lower()
    for word in words:
        assert word.lower() in message, (word, message)
    if any_of:
        assert any(w.lower() in message for w in any_of), (any_of, message)
    return message


# ----------------------------------------------------------------------------- worker
STAGES = ("load", "affine", "encode", "optimise", "write")


def write_job(folder: Path, **fields) -> Path:
    job = {"fixed": "in/fixed.nii.gz", "moving": "in/moving.nii.gz", "output_dir": "out",
           "settings": {"encoder": "mind"}}
    job.update(fields)
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return path


def start_worker(job: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "SAMRegistrationLib.cli", "worker", "--job", str(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def parse_events(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON object with an 'event' field."""
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert all(isinstance(e, dict) and "event" in e for e in events)
    return events


def run_worker(job: Path, timeout: float = 600) -> tuple[int, list[dict], str]:
    proc = start_worker(job)
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, parse_events(stdout), stderr


# ----------------------------------------------------------------------------- prompt volumes
ELLIPSOID_SIZE = (80, 80, 16)             # x, y, z voxels; slices along z (the coarse axis)
ELLIPSOID_SPACING = (1.25, 1.25, 3.0)
ELLIPSOID_FIRST, ELLIPSOID_LAST = 4, 11             # the structure's slices


def ellipsoid_volume() -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """A textured 'body' with one bright ellipsoid spanning slices ELLIPSOID_FIRST..ELLIPSOID_LAST; returns the image,
    the ellipsoid mask (z, y, x) and the physical point at its centre."""
    rng = np.random.default_rng(3)
    z, y, x = np.meshgrid(np.arange(ELLIPSOID_SIZE[2]), np.arange(ELLIPSOID_SIZE[1]), np.arange(ELLIPSOID_SIZE[0]), indexing="ij")
    body = ((x - 40) / 36.0) ** 2 + ((y - 40) / 34.0) ** 2 < 1
    centre_z = (ELLIPSOID_FIRST + ELLIPSOID_LAST) / 2
    half_z = (ELLIPSOID_LAST - ELLIPSOID_FIRST) / 2 + 0.5
    blob = ((x - 46) / 13.0) ** 2 + ((y - 36) / 10.0) ** 2 + ((z - centre_z) / half_z) ** 2 < 1
    array = np.where(body, 300.0, 0.0) + 20 * rng.standard_normal(body.shape) * body
    array[blob] = 900.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(ELLIPSOID_SPACING)
    image.SetDirection(oblique_direction().ravel().tolist())
    image.SetOrigin((10.0, -20.0, 5.0))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint((46.0, 36.0, centre_z)))
    return image, blob, centre
