"""Landmark reading: elastix point sets, Slicer markups JSON and CSV, all returned in LPS mm."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from .errors import InputError

_SPLIT = re.compile(r"[,\s;]+")


def read_text(path: Path, noun: str = "Landmark file") -> str:
    """The text of ``path`` (UTF-8, BOM tolerated); InputError '<noun> <path> ...' otherwise."""
    if not path.is_file():
        raise InputError(f"{noun} {path} does not exist.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{noun} {path} cannot be read as text ({exc}).") from exc


def _floats(fields: list[str], path: Path, line_no: int) -> list[float]:
    try:
        return [float(v) for v in fields]
    except ValueError:
        raise InputError(f"Landmark file {path} has a non-numeric value on line {line_no}: "
                         f"{' '.join(fields)!r}.") from None


def _to_array(rows: list[list[float]], path: Path) -> np.ndarray:
    pts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(pts)):
        raise InputError(f"Landmark file {path} contains non-finite coordinates.")
    return pts


def _read_elastix(path: Path, lines: list[tuple[int, str]],
                  reference: Optional[sitk.Image]) -> np.ndarray:
    kind = lines[0][1].strip().lower()
    if len(lines) < 2:
        raise InputError(f"Landmark file {path} has no point count on line 2 (elastix point-set format).")
    count_no, count_text = lines[1]
    try:
        count = int(count_text.strip())
    except ValueError:
        raise InputError(f"Landmark file {path} has an invalid point count {count_text.strip()!r} "
                         f"on line {count_no}.") from None
    rows = []
    for no, text in lines[2:]:
        fields = [f for f in _SPLIT.split(text.strip()) if f]
        if len(fields) != 3:
            raise InputError(f"Landmark file {path} line {no} has {len(fields)} values; expected 3 (x y z).")
        rows.append(_floats(fields, path, no))
    if len(rows) != count:
        raise InputError(f"Landmark file {path} declares {count} points but contains {len(rows)}.")
    if count == 0:
        raise InputError(f"Landmark file {path} contains no points.")
    pts = _to_array(rows, path)
    if kind == "index":
        if reference is None:
            raise InputError(f"Landmark file {path} holds voxel indices; a reference image is "
                             "needed to convert them to physical points.")
        pts = _to_array([reference.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in p))
                         for p in pts], path)     # a huge index may overflow
    return pts


def _read_table(path: Path, lines: list[tuple[int, str]]) -> np.ndarray:
    rows = []
    for i, (no, text) in enumerate(lines):
        fields = [f for f in _SPLIT.split(text.strip()) if f]
        try:
            values = [float(v) for v in fields]
        except ValueError:
            if i == 0:  # header row
                continue
            raise InputError(f"Landmark file {path} has a non-numeric value on line {no}: "
                             f"{text.strip()!r}.") from None
        if len(values) != 3:
            raise InputError(f"Landmark file {path} line {no} has {len(values)} values; expected 3 (x,y,z).")
        rows.append(values)
    if not rows:
        raise InputError(f"Landmark file {path} contains no points.")
    return _to_array(rows, path)


def parse_json(path: Path, text: str, noun: str = "Landmark file") -> Any:
    """``text`` parsed as JSON; InputError naming ``path`` on a syntax error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{noun} {path} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except RecursionError:
        raise InputError(f"{noun} {path} is not usable JSON (nested too deeply).") from None
    except ValueError as exc:   # e.g. an integer of more than 4300 digits
        raise InputError(f"{noun} {path} is not usable JSON ({' '.join(str(exc).split())}).") from None


_UNIT_MM = {"mm": 1.0, "um": 1e-3}


def markup_units(markup: dict) -> Any:
    """A markup's ``coordinateUnits`` (default mm), the first item of a DICOM code triple."""
    units = markup.get("coordinateUnits", "mm")
    return units[0] if isinstance(units, list) and units else units


def markup_control_points(path: Path, doc: Any, noun: str = "Landmark file",
                          first_only: bool = True) -> list[dict]:
    """Control points of a parsed Slicer markups document, positions converted to LPS mm.

    Reads ``markups[0]`` (``first_only``) or every markup. Each markup's ``coordinateSystem``
    (LPS or RAS; Slicer's schema defaults to LPS) and ``coordinateUnits`` (mm or um) apply to
    its points. Returns one dict per control point: ``number`` (1-based over the file),
    ``label`` (str or None), ``status`` (``positionStatus``, None when absent) and ``position``
    (float64 (3,) array; None when absent or the status is undefined/missing).
    """
    try:
        markups = doc["markups"]
        markups = [markups[0]] if first_only else list(markups)
    except (KeyError, IndexError, TypeError):
        markups = []
    if not markups:
        raise InputError(f"{noun} {path} is not a Slicer markups file (no markups[0]).")
    points: list[dict] = []
    for m, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise InputError(f"{noun} {path} has an invalid markups[{m}] entry.")
        system = str(markup.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise InputError(f"{noun} {path} uses unsupported coordinateSystem {system!r} "
                             "(expected LPS or RAS).")
        units = markup_units(markup)
        if not isinstance(units, str) or units not in _UNIT_MM:
            raise InputError(f"{noun} {path} uses unsupported coordinateUnits {units!r} (expected mm or um).")
        scale = _UNIT_MM[units] * (np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3))
        control_points = markup.get("controlPoints") or []
        if not isinstance(control_points, list):
            raise InputError(f"{noun} {path} markups[{m}].controlPoints must be a list.")
        for cp in control_points:
            number = len(points) + 1
            if not isinstance(cp, dict):
                raise InputError(f"{noun} {path} control point {number} is not an object.")
            status = cp.get("positionStatus")
            pos = cp.get("position")
            position = None
            if pos is not None and status not in ("undefined", "missing"):
                if not isinstance(pos, list) or len(pos) != 3:
                    raise InputError(f"{noun} {path} control point {number} position must have 3 values.")
                try:
                    position = np.array([float(v) for v in pos], dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    raise InputError(f"{noun} {path} control point {number} has a non-numeric position.") from None
                if not np.all(np.isfinite(position)):
                    raise InputError(f"{noun} {path} control point {number} has a non-finite position.")
                position = position * scale
            label = cp.get("label")
            points.append({"number": number, "label": None if label in (None, "") else str(label),
                           "status": status, "position": position})
    return points


def _read_markups(path: Path, text: str) -> np.ndarray:
    rows = []
    for cp in markup_control_points(path, parse_json(path, text)):
        if cp["position"] is None:
            raise InputError(f"Landmark file {path} control point {cp['number']} has no defined position.")
        rows.append(cp["position"])
    if not rows:
        raise InputError(f"Landmark file {path} contains no control points.")
    return _to_array(rows, path)


def read_points(path: Path | str, reference: Optional[sitk.Image] = None) -> np.ndarray:
    """Read landmarks as an (N,3) float64 array of LPS world coordinates in mm.

    Formats: elastix point set (``point``/``index`` header, count, rows; ``index`` needs
    ``reference``), Slicer markups ``.json`` (RAS or LPS), and CSV/whitespace tables of x,y,z in
    LPS mm with an optional header row.
    """
    path = Path(path)
    text = read_text(path)
    if path.name.lower().endswith(".json"):
        return _read_markups(path, text)
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines())
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"Landmark file {path} is empty.")
    if lines[0][1].strip().lower() in ("point", "index"):
        return _read_elastix(path, lines, reference)
    return _read_table(path, lines)


def check_pairs(fixed_pts: np.ndarray, moving_pts: np.ndarray) -> None:
    """Raise InputError unless fixed and moving landmarks are paired (same count, (N,3))."""
    f, m = np.asarray(fixed_pts), np.asarray(moving_pts)
    for name, p in (("fixed", f), ("moving", m)):
        if p.ndim != 2 or p.shape[1] != 3:
            raise InputError(f"The {name} landmarks must be an (N,3) array, got shape {p.shape}.")
    if len(f) != len(m):
        raise InputError(f"Fixed and moving landmark files have different point counts "
                         f"({len(f)} vs {len(m)}); rows must correspond one to one.")
