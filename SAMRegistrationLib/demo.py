"""Offline demo: register the MNI152 brain template to a copy warped by a known deformation.

The anatomy is the MNI152 2009a symmetric T1 with its grey- and white-matter maps, shipped
inside the ``nilearn`` package (only its data files are read; nilearn is not imported).
The moving image is the template pulled through a known map ``q -> q + v(q)`` (a small rigid
motion plus a smooth random field), with a gamma change, a smooth bias field and noise.

Field convention (same as the pipeline's ``displacement.nrrd``): an ITK displacement field on
the fixed grid, in LPS millimetres, mapping fixed -> moving: ``warped(p) = moving(p + u(p))``.
Since ``moving(q) = template(q + v(q))``, the true ``u`` solves ``p + u(p) = q`` with
``q + v(q) = p``, i.e. ``u(p) = -v(p + u(p))``, found by fixed-point iteration.
"""
from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import InputError
from .grid import Grid
from .ownership import OutputLedger
from .progress import ProgressFn, no_progress
from .report_schema import key_metrics

_TEMPLATE_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
DEMO_SPACING_MM = 2.0
DEMO_SEED = 20250601


# ----------------------------------------------------------------------------- geometry helpers
def grid_points(image) -> np.ndarray:
    """Physical (LPS) positions of all voxels of ``image``, shape (nz*ny*nx, 3), array order."""
    return Grid.from_image(image).world_points(torch.float64).reshape(-1, 3).numpy()


def sample(array: np.ndarray, image, points: np.ndarray, order: int = 1,
           mode: str = "constant", cval: float = 0.0) -> np.ndarray:
    """Sample ``array`` (numpy layout of ``image``, optionally with trailing components) at ``points``."""
    from scipy.ndimage import map_coordinates

    coords = Grid.from_image(image).world_to_index(points).T[::-1]   # (k, j, i) for the (z, y, x) array
    if array.ndim == 3:
        return map_coordinates(array, coords, order=order, mode=mode, cval=cval)
    return np.stack([map_coordinates(array[..., c], coords, order=order, mode=mode, cval=cval)
                     for c in range(array.shape[-1])], axis=1)


def _smooth_noise(rng: np.random.Generator, shape: tuple, spacing: np.ndarray, cell_mm: float,
                  components: int) -> np.ndarray:
    """Smooth random field on a voxel grid: Gaussian-filtered noise on a coarse grid, upsampled (cubic)."""
    from scipy.ndimage import gaussian_filter, map_coordinates
    coarse_shape = [int(np.ceil(n * s / cell_mm)) + 3 for n, s in zip(shape, spacing)]
    out = np.empty(tuple(shape) + (components,), dtype=float)
    axes = [np.linspace(1, cs - 2, n) for cs, n in zip(coarse_shape, shape)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    for c in range(components):
        coarse = gaussian_filter(rng.standard_normal(coarse_shape), sigma=0.8, mode="nearest")
        out[..., c] = map_coordinates(coarse, coords, order=3, mode="nearest")
    return out


# ----------------------------------------------------------------------------- the known deformation
class KnownDeformation:
    """The map ``q -> q + v(q)`` used to make the moving image, defined on ``reference``'s grid.

    ``v`` = rigid part (rotation about the image centre + translation, analytic everywhere) +
    smooth random part (stored on the grid in LPS mm, clamped outside it).
    """

    def __init__(self, reference, seed: int = DEMO_SEED, max_mm: float = 7.0,
                 translation_mm: float = 4.0, rotation_deg: float = 3.0, cell_mm: float = 32.0) -> None:
        rng = np.random.default_rng(seed)
        self.reference = reference
        nx, ny, nz = reference.GetSize()
        spacing = np.asarray(reference.GetSpacing(), dtype=float)[::-1]          # (z, y, x)
        field = _smooth_noise(rng, (nz, ny, nx), spacing, cell_mm, 3)
        field *= max_mm / max(np.linalg.norm(field, axis=-1).max(), 1e-9)
        self.nonlinear = field                                                   # (nz, ny, nx, 3) mm
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rotation_deg)
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        self.rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
        direction = rng.standard_normal(3)
        self.translation = translation_mm * direction / np.linalg.norm(direction)
        self.centre = Grid.from_image(reference).index_to_world((np.asarray(reference.GetSize()) - 1) / 2.0)

    def v(self, points: np.ndarray) -> np.ndarray:
        """Displacement ``v`` at physical ``points`` (N, 3) -> (N, 3) mm."""
        rigid = (points - self.centre) @ self.rotation.T + self.centre + self.translation - points
        return rigid + sample(self.nonlinear, self.reference, points, order=1, mode="nearest")

    def fixed_to_moving(self, points: np.ndarray, iterations: int = 15) -> tuple[np.ndarray, float]:
        """Solve ``u(p) = -v(p + u(p))`` by fixed-point iteration -> (u, max residual in mm)."""
        u = -self.v(points)
        for _ in range(iterations):
            u = -self.v(points + u)
        residual = np.linalg.norm(u + self.v(points + u), axis=1)
        return u, float(residual.max())


# ----------------------------------------------------------------------------- data
def template_paths() -> dict[str, Path]:
    """Paths of the MNI152 T1 / GM / WM files inside the installed nilearn package."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo needs the MNI152 template from nilearn: pip install nilearn")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = {name: data / _TEMPLATE_FILE.format(name) for name in ("t1", "gm", "wm")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise InputError(f"MNI152 template file(s) missing from nilearn: {', '.join(missing)}; "
                         "reinstall it with: pip install --force-reinstall nilearn")
    return paths


def load_template(spacing: float = DEMO_SPACING_MM, margin_mm: float = 12.0):
    """T1, GM, WM (float32 SimpleITK images) cropped to the head with a margin, at ``spacing`` mm."""
    import SimpleITK as sitk
    images = {k: sitk.Cast(sitk.ReadImage(str(p)), sitk.sitkFloat32) for k, p in template_paths().items()}
    margin = np.ceil(margin_mm / np.asarray(images["t1"].GetSpacing())).astype(int)
    # the template's brain touches its inferior edge: pad so every side gets the margin
    images = {k: sitk.ConstantPad(im, margin.tolist(), margin.tolist(), 0.0) for k, im in images.items()}
    t1 = images["t1"]
    nonzero = np.argwhere(sitk.GetArrayViewFromImage(t1) > 0)                 # (k, j, i)
    lo = nonzero.min(axis=0)[::-1]
    hi = nonzero.max(axis=0)[::-1]
    lo = np.maximum(lo - margin, 0)
    hi = np.minimum(hi + margin, np.asarray(t1.GetSize()) - 1)
    size = (hi - lo + 1).tolist()
    out = {}
    for name, image in images.items():
        image = sitk.RegionOfInterest(image, size, lo.tolist())
        image = sitk.SmoothingRecursiveGaussian(image, 0.4 * spacing)          # anti-alias
        new_size = [int(np.floor((n - 1) * s / spacing)) + 1 for n, s in zip(image.GetSize(), image.GetSpacing())]
        out[name] = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                                  (spacing,) * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)
    return out["t1"], out["gm"], out["wm"]


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """1 = grey matter, 2 = white matter: the larger probability where it exceeds 0.5 (maps in [0, 255])."""
    gm, wm = gm / 255.0, wm / 255.0
    labels = np.zeros(gm.shape, dtype=np.uint8)
    labels[(gm > 0.5) & (gm >= wm)] = 1
    labels[(wm > 0.5) & (wm > gm)] = 2
    return labels


def make_demo_inputs(folder: Path, seed: int = DEMO_SEED, spacing: float = DEMO_SPACING_MM,
                     ledger: Optional[OutputLedger] = None) -> dict:
    """Write fixed/moving images and label maps and the true displacement into ``folder``.

    Each file is written atomically; with a ``ledger`` the folders and files made are recorded.
    """
    import SimpleITK as sitk

    from .io_atomic import write_image_atomic
    folder = Path(folder)
    if ledger is not None:
        ledger.make_dirs(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
    t1, gm, wm = load_template(spacing)
    deformation = KnownDeformation(t1, seed=seed)
    shape = sitk.GetArrayViewFromImage(t1).shape
    points = grid_points(t1)
    pulled = points + deformation.v(points)                                    # q + v(q)

    t1_array = sitk.GetArrayFromImage(t1)
    fixed_seg = tissue_labels(sitk.GetArrayFromImage(gm), sitk.GetArrayFromImage(wm))
    rng = np.random.default_rng(seed + 1)
    moving = sample(t1_array, t1, pulled, order=1).reshape(shape)
    moving = 255.0 * np.clip(moving / 255.0, 0, None) ** 1.2                    # gamma
    bias = _smooth_noise(rng, shape, np.asarray(t1.GetSpacing())[::-1], 80.0, 1)[..., 0]
    moving *= np.exp(0.15 * bias / max(np.abs(bias).max(), 1e-9))               # +-15 % bias field
    moving += rng.normal(0.0, 2.0, shape) * (moving > 0)                       # a little noise
    moving_seg = sample(fixed_seg.astype(float), t1, pulled, order=0).reshape(shape).astype(np.uint8)
    u_true, residual = deformation.fixed_to_moving(points)

    def as_image(array, dtype, vector=False):
        image = sitk.GetImageFromArray(array.astype(dtype), isVector=vector)
        image.CopyInformation(t1)
        return image

    files = {name: folder / f"{name}.nii.gz" for name in ("fixed", "moving", "fixed_seg", "moving_seg")}
    files["true_displacement"] = folder / "true_displacement.nrrd"
    images = {"fixed": as_image(t1_array, np.float32),
              "moving": as_image(np.clip(moving, 0, None), np.float32),
              "fixed_seg": as_image(fixed_seg, np.uint8), "moving_seg": as_image(moving_seg, np.uint8),
              "true_displacement": as_image(u_true.reshape(shape + (3,)), np.float32, vector=True)}
    for name, image in images.items():
        write_image_atomic(image, files[name])
        if ledger is not None:
            ledger.record_file(files[name])
    return {"files": files, "inverse_residual_mm": residual}


# ----------------------------------------------------------------------------- evaluation
def _field_on_grid(field_path: Path, reference) -> np.ndarray:
    """Displacement field file on ``reference``'s grid (linear; resampled only when the grids
    differ, border values continued outside the field) -> (N, 3) mm."""
    from .displacement import DisplacementField
    try:
        field = DisplacementField.read(field_path)
    except ValueError:
        raise InputError(f"{field_path} is not a 3D displacement field") from None
    grid = Grid.from_image(reference)
    same = (field.grid.size == grid.size and np.allclose(field.grid.origin, grid.origin, atol=1e-4)
            and np.allclose(field.grid.spacing, grid.spacing, atol=1e-6)
            and np.allclose(field.grid.direction, grid.direction, atol=1e-6))
    if not same:
        field = field.resample(grid)
    return field.data[0].permute(1, 2, 3, 0).reshape(-1, 3).double().numpy()


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    """Dice overlap of ``label`` in two label arrays (NaN when it is in neither)."""
    from .metrics import dice_per_label
    return dice_per_label(a, b, [label])[label]


def fold_percent(u: np.ndarray, reference) -> float:
    """Percentage of voxels where det(I + du/dx) <= 0 for a field (N, 3) on ``reference``'s grid."""
    import SimpleITK as sitk

    from . import metrics
    shape = sitk.GetArrayViewFromImage(reference).shape
    jac = metrics.jacobian_determinant(u.reshape(shape + (3,)), reference.GetSpacing(), reference.GetDirection())
    return metrics.fold_percent(jac)


def evaluate(inputs_dir: Path, output_dir: Path) -> dict:
    """Endpoint error (in the brain), Dice GM/WM before/after and folding of ``output_dir``'s field."""
    import SimpleITK as sitk
    fixed = sitk.ReadImage(str(inputs_dir / "fixed.nii.gz"))
    fixed_seg = sitk.GetArrayFromImage(sitk.ReadImage(str(inputs_dir / "fixed_seg.nii.gz")))
    moving_seg_image = sitk.ReadImage(str(inputs_dir / "moving_seg.nii.gz"))
    moving_seg = sitk.GetArrayFromImage(moving_seg_image)
    u_true = _field_on_grid(inputs_dir / "true_displacement.nrrd", fixed)
    u_found = _field_on_grid(output_dir / "displacement.nrrd", fixed)
    points = grid_points(fixed)
    warped_seg = sample(moving_seg.astype(float), moving_seg_image, points + u_found,
                        order=0).reshape(fixed_seg.shape)
    brain = fixed_seg.ravel() > 0
    before = np.linalg.norm(u_true[brain], axis=1)
    after = np.linalg.norm(u_found[brain] - u_true[brain], axis=1)
    return {
        "epe_mean_mm_before": float(before.mean()), "epe_mean_mm_after": float(after.mean()),
        "epe_p95_mm_before": float(np.percentile(before, 95)),
        "epe_p95_mm_after": float(np.percentile(after, 95)),
        "dice_gm_before": dice(fixed_seg, moving_seg, 1), "dice_gm_after": dice(fixed_seg, warped_seg, 1),
        "dice_wm_before": dice(fixed_seg, moving_seg, 2), "dice_wm_after": dice(fixed_seg, warped_seg, 2),
        "fold_percent": fold_percent(u_found, fixed),
    }


def print_results(results: dict) -> None:
    """Print the demo's before/after table and where the outputs are."""
    spacing = results.get("spacing_mm", DEMO_SPACING_MM)
    rows = [("endpoint error, mean (mm)", "epe_mean_mm"), ("endpoint error, 95th pct (mm)", "epe_p95_mm"),
            ("Dice grey matter", "dice_gm"), ("Dice white matter", "dice_wm")]
    print(f"\nSAMRegistration demo: MNI152 2009a brain, {spacing:g} mm, known deformation "
          f"({results.get('encoder', '?')} encoder)")
    print(f"{'':32}{'before':>10}{'after':>10}")
    for label, key in rows:
        print(f"{label:32}{results[key + '_before']:10.3f}{results[key + '_after']:10.3f}")
    print(f"{'folding (% voxels, det J <= 0)':32}{'':10}{results['fold_percent']:10.3f}")
    print(f"{'registration time (s)':32}{'':10}{results['time_s']:10.1f}")
    print(f"\nOutputs: {results['output_dir']}")
    print(f"Inputs and the true field: {results['inputs_dir']}")


# ----------------------------------------------------------------------------- entry point
def run_demo(output_dir: str | Path, progress: Optional[ProgressFn] = None,
             cancel: Optional[threading.Event] = None, settings=None, verbose: bool = True,
             spacing: float = DEMO_SPACING_MM, ledger: Optional[OutputLedger] = None) -> dict:
    """Make the demo inputs in ``output_dir/inputs``, register them into ``output_dir``, evaluate.

    ``settings`` defaults to :class:`Settings()` (the default encoder); ``spacing`` is the demo
    images' voxel size (coarser = faster). Returns the numbers printed, also written to
    ``output_dir/demo.json``. Every folder and file the demo writes is recorded in ``ledger``
    (a private one when None); on failure it is discarded.
    """
    ledger = ledger if ledger is not None else OutputLedger()
    try:
        return _run_demo(Path(output_dir).absolute(), progress or no_progress, cancel, settings, verbose,
                         spacing, ledger)
    except BaseException:
        ledger.discard()
        raise


def _run_demo(output_dir: Path, progress: ProgressFn, cancel: Optional[threading.Event], settings,
              verbose: bool, spacing: float, ledger: OutputLedger) -> dict:
    from .io_atomic import write_text_atomic
    from .pipeline import RegistrationInputs, register
    from .settings import Settings

    inputs_dir = output_dir / "inputs"
    progress("prepare", 0.0, "MNI152 template")
    made = make_demo_inputs(inputs_dir, spacing=spacing, ledger=ledger)
    progress("prepare", 1.0, "inputs written")
    if cancel is not None and cancel.is_set():
        from .errors import Cancelled
        raise Cancelled("cancelled")
    files = made["files"]
    inputs = RegistrationInputs(fixed=files["fixed"], moving=files["moving"], output_dir=output_dir,
                                fixed_seg=files["fixed_seg"], moving_seg=files["moving_seg"],
                                labels=[1, 2])
    start = time.perf_counter()
    report = register(inputs, settings or Settings(), progress=progress, cancel=cancel, ledger=ledger)
    seconds = time.perf_counter() - start
    progress("evaluate", 0.0, "endpoint error, Dice")
    results = evaluate(inputs_dir, output_dir)
    progress("evaluate", 1.0, "")
    results.update(time_s=seconds, output_dir=str(output_dir), inputs_dir=str(inputs_dir), spacing_mm=spacing,
                   encoder=(settings or Settings()).encoder,
                   true_field_inverse_residual_mm=made["inverse_residual_mm"])
    reported = key_metrics(report) if isinstance(report, dict) else {}
    if "fold_percent" in reported:
        results["fold_percent_report"] = reported["fold_percent"]      # the pipeline's own count
    write_text_atomic(json.dumps(results, indent=2) + "\n", output_dir / "demo.json")
    ledger.record_file(output_dir / "demo.json")
    if verbose:
        print_results(results)
    return results
