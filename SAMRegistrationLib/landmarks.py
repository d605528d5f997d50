"""Landmark reading: elastix point sets, Slicer markups JSON and CSV, all returned in LPS mm."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .errors import InputError

_SPLIT = re.compile(r"[,\s;]+")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"Landmark file {path} does not exist.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Landmark file {path} cannot be read as text ({exc}).") from exc


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
        pts = np.array([reference.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in p))
                        for p in pts], dtype=np.float64)
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


def _read_markups(path: Path, text: str) -> np.ndarray:
    try:
        doc = json.loads(text)
        markup = doc["markups"][0]
    except json.JSONDecodeError as exc:
        raise InputError(f"Landmark file {path} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except (KeyError, IndexError, TypeError):
        raise InputError(f"Landmark file {path} is not a Slicer markups file (no markups[0]).") from None
    if not isinstance(markup, dict):
        raise InputError(f"Landmark file {path} has an invalid markups[0] entry.")
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"Landmark file {path} uses unsupported coordinateSystem {system!r} "
                         "(expected LPS or RAS).")
    rows = []
    for i, cp in enumerate(markup.get("controlPoints") or []):
        pos = cp.get("position") if isinstance(cp, dict) else None
        status = cp.get("positionStatus", "defined") if isinstance(cp, dict) else "defined"
        if pos is None or status in ("undefined", "missing"):
            raise InputError(f"Landmark file {path} control point {i + 1} has no defined position.")
        if not isinstance(pos, list) or len(pos) != 3:
            raise InputError(f"Landmark file {path} control point {i + 1} position must have 3 values.")
        try:
            rows.append([float(v) for v in pos])
        except (TypeError, ValueError):
            raise InputError(f"Landmark file {path} control point {i + 1} has a non-numeric position.") from None
    if not rows:
        raise InputError(f"Landmark file {path} contains no control points.")
    pts = _to_array(rows, path)
    if system == "RAS":
        pts[:, :2] *= -1.0
    return pts


def read_points(path: Path | str, reference: Optional[sitk.Image] = None) -> np.ndarray:
    """Read landmarks as an (N,3) float64 array of LPS world coordinates in mm.

    Formats: elastix point set (``point``/``index`` header, count, rows; ``index`` needs
    ``reference``), Slicer markups ``.json`` (RAS or LPS), and CSV/whitespace tables of x,y,z in
    LPS mm with an optional header row.
    """
    path = Path(path)
    text = _read_text(path)
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
