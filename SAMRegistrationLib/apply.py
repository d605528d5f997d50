"""Applying a registration's displacement field to other data, and inverting it (``samreg apply``,
``samreg invert``), without registering again.

A ``displacement.nrrd`` holds u on the fixed image's grid, LPS mm: the fixed -> moving mapping
phi(x) = x + u(x), affine included. So data from the *moving* image's space come to the fixed
space by resampling at phi (images, label maps) or by the inverse mapping (points); data from
the *fixed* image's space go to the moving space the other way round. The inverse is found by
fixed-point iteration (:meth:`~.displacement.DisplacementField.inverse`) and reported with its
inverse-consistency error, the largest |phi(phi^-1(y)) - y|.

Point sets keep their format: CSV tables, elastix point files (``point``; ``index`` files are
read through the reference image and written as ``point``) and Slicer markups JSON (every
other key kept, positions in the file's own coordinate system).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import SimpleITK as sitk
import torch

from .displacement import DisplacementField
from .errors import InputError
from .io_atomic import write_image_atomic, write_text_atomic

Space = Literal["moving", "fixed"]
INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
POINT_SUFFIXES = (".csv", ".txt", ".pts", ".json")


def read_field(path: Path) -> DisplacementField:
    """The field of a ``displacement.nrrd`` (or of an output folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "displacement.nrrd"
    if not path.is_file():
        raise InputError(f"no displacement field at {path}")
    try:
        return DisplacementField.read(path)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{path} is not a 3D displacement field ({str(exc).splitlines()[0][:120]})") from None


@dataclass
class Inverse:
    field: DisplacementField
    max_error_mm: float                 # largest |phi(phi^-1(y)) - y| over the grid
    mean_error_mm: float
    p99_error_mm: float                 # 99th percentile (the largest errors sit at the grid's edges)


def invert(field: DisplacementField, iterations: int = 60) -> Inverse:
    """phi^-1 on the field's grid, with its inverse-consistency error (max, mean, 99th percentile; mm)."""
    inverse, largest = field.inverse(iterations=iterations)
    residual = field.compose(inverse).data.norm(dim=1).flatten().numpy()
    return Inverse(inverse, largest, float(residual.mean()), float(np.percentile(residual, 99)))


def is_points(path: Path) -> bool:
    return Path(path).name.lower().endswith(POINT_SUFFIXES)


def map_points(field: DisplacementField, points: np.ndarray, space: Space,
               inverse: Optional[Inverse] = None) -> np.ndarray:
    """(N, 3) LPS mm points of ``space`` mapped into the other image's space."""
    tensor = torch.as_tensor(points, dtype=torch.float64)
    if space == "fixed":
        return field.map_points(tensor).numpy()
    inverse = inverse or invert(field)
    return inverse.field.map_points(tensor).numpy()


def warp_image(field: DisplacementField, image: sitk.Image, space: Space, interpolation: str,
               reference: Optional[sitk.Image] = None, inverse: Optional[Inverse] = None) -> sitk.Image:
    """``image`` (of ``space``) resampled into the other space: onto the field's grid for moving
    images, onto ``reference`` (default: the field's grid) for fixed ones. Label maps: nearest."""
    interpolator = INTERPOLATORS[interpolation]
    default = float(sitk.GetArrayViewFromImage(image).min())
    if space == "moving":
        return field.warp_image(image, interpolator, default)
    inverse = inverse or invert(field)
    target = reference if reference is not None else field.grid.reference_image()
    return sitk.Resample(image, target, inverse.field.to_transform(), interpolator, default, image.GetPixelID())


def write_points(points: np.ndarray, source: Path, target: Path) -> None:
    """``points`` (LPS mm) written in the format of ``source``, into ``target``."""
    from .landmarks import markup_units, read_text
    text = read_text(source)
    if source.name.lower().endswith(".json"):
        doc = json.loads(text)
        index = 0
        for markup in doc.get("markups", [])[:1]:
            ras = str(markup.get("coordinateSystem", "LPS")).upper() == "RAS"
            scale = 1e3 if markup_units(markup) == "um" else 1.0
            for cp in markup.get("controlPoints") or []:
                if cp.get("position") is None or cp.get("positionStatus") in ("undefined", "missing"):
                    continue
                p = points[index] * (np.array([-1.0, -1.0, 1.0]) if ras else 1.0) * scale
                cp["position"] = [round(float(v), 6) for v in p]
                index += 1
        write_text_atomic(json.dumps(doc, indent=2) + "\n", target)
        return
    first = next((ln.strip().lower() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    rows = "".join(f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n" for p in points)
    if first in ("point", "index"):
        write_text_atomic(f"point\n{len(points)}\n{rows}", target)
    else:
        write_text_atomic("x,y,z\n" + rows.replace(" ", ","), target)


def apply(field_path: Path, inputs: list[Path], output_dir: Path, space: Space = "moving",
          interpolation: str = "linear", labels: bool = False, reference: Optional[Path] = None,
          iterations: int = 60) -> dict:
    """Apply the field to every input (images, label maps with ``labels``, point sets), writing
    each under its own name into ``output_dir``. Returns what was written and, when the inverse
    was needed, its inverse-consistency error."""
    from .landmarks import read_points
    from .volume import read_volume
    field = read_field(field_path)
    output_dir = Path(output_dir)
    names = [Path(path).name for path in inputs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"inputs share the file name {repeated[0]}; their outputs would overwrite each other "
                         "in the output folder (apply them in separate runs)")
    for path in inputs:
        if not Path(path).is_file():
            raise InputError(f"input not found: {path}")
        if (output_dir / Path(path).name).resolve() == Path(path).resolve():
            raise InputError(f"the output would overwrite the input {path}; choose another -o folder")
    reference_image = read_volume(reference, "reference image") if reference else None
    needs_inverse = any(is_points(p) for p in inputs) if space == "moving" else \
        any(not is_points(p) for p in inputs)
    inverse = invert(field, iterations) if needs_inverse else None
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, inputs):
        target = output_dir / path.name
        if is_points(path):
            points = read_points(path, reference_image)
            write_points(map_points(field, points, space, inverse), path, target)
        else:
            image = read_volume(path, "label map", sitk.sitkInt32) if labels else read_volume(path, "image")
            method = "nearest" if labels else interpolation
            write_image_atomic(warp_image(field, image, space, method, reference_image, inverse), target)
        written.append(str(target))
    result: dict = {"written": written, "from": space}
    if inverse is not None:
        result.update(inverse_max_error_mm=round(inverse.max_error_mm, 4),
                      inverse_mean_error_mm=round(inverse.mean_error_mm, 4),
                      inverse_p99_error_mm=round(inverse.p99_error_mm, 4))
    return result
