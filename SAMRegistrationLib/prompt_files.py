"""Point-prompt files -> engine prompt points (LPS mm, the form of :mod:`.prompts`), and checks.

Formats, told apart by content (JSON) or else read as a table:

* Slicer markups ``.mrk.json``: the control points of every markup in the file, in LPS or RAS
  as each markup's ``coordinateSystem`` says (Slicer's default: LPS); points whose
  ``positionStatus`` is present and not ``"defined"`` (placement not finished) are skipped.
  Each control point's ``label`` is kept.
* JSON: a list of points, or ``{"points": [...], "coordinate_system": "LPS" | "RAS"}``
  (default LPS). A point is ``{"position": [x, y, z], "label": ..., "positive": ...}`` (the
  engine's form) or a plain ``[x, y, z]``.
* CSV / text table: rows ``x,y,z[,label[,positive]]`` in LPS mm, separated by commas,
  semicolons, tabs or spaces; ``#`` lines are comments. An optional first line of column names
  is skipped; if it names ``l,p,s`` or ``r,a,s`` (Slicer's control-point table export) or
  ``x,y,z``, columns are taken by name (``label``, ``positive``, ``defined`` too) and
  ``r,a,s`` means RAS.

Points sharing a label belong to one structure; unlabelled points of one image (from any of
its files) form one structure, so positive and negative clicks may come in separate files.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .errors import InputError
from .landmarks import markup_control_points, parse_json, read_text
from .prompts import SIDES, group_structures, parse_prompt_set

if TYPE_CHECKING:
    import SimpleITK as sitk

NOUN = "Prompt file"
_RAS_FLIP = (-1.0, -1.0, 1.0)
_TRUE = {"true", "1", "yes", "y", "+", "positive", "pos"}
_FALSE = {"false", "0", "no", "n", "-", "negative", "neg"}


# ----------------------------------------------------------------------------- small helpers
def _system(value: Any, path: Path) -> str:
    system = str(value).strip().upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"{NOUN} {path} has an unknown coordinate system {value!r} (use LPS or RAS).")
    return system


def _xyz(values: Sequence[Any], path: Path, where: str, system: str = "LPS") -> list[float]:
    """Three finite floats in LPS mm from ``values`` given in ``system``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise InputError(f"{NOUN} {path} {where}: a position must be three numbers x, y, z, got {values!r}.")
    try:
        xyz = [float(v) for v in values if not isinstance(v, bool)]
    except (TypeError, ValueError, OverflowError):
        xyz = []
    if len(xyz) != 3:
        raise InputError(f"{NOUN} {path} {where}: non-numeric coordinate in {list(values)!r}.")
    if not all(math.isfinite(c) for c in xyz):
        raise InputError(f"{NOUN} {path} {where}: non-finite coordinate in {list(values)!r}.")
    if system == "RAS":
        xyz = [c * f for c, f in zip(xyz, _RAS_FLIP)]
    return xyz


def _polarity(value: Any, default: bool, path: Path, where: str) -> bool:
    """A point's own positive/negative flag (bool or a word), else ``default``.

    A file read as negative prompts (``default`` False) may not hold points marked positive.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        flag = value
    elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        flag = value.strip().lower() in _TRUE
    else:
        raise InputError(f"{NOUN} {path} {where}: 'positive' must be true or false, got {value!r}.")
    if flag and not default:
        raise InputError(f"{NOUN} {path} {where} is marked positive, but the file was given as "
                         "negative prompts.")
    return flag


def _point(position: list[float], positive: bool, label: Any) -> dict:
    text = None if label is None else str(label).strip()
    return {"position": position, "positive": positive, "label": text or None}


# ----------------------------------------------------------------------------- the three formats
def _from_markups(path: Path, doc: Any, positive: bool) -> list[dict]:
    points = []
    for cp in markup_control_points(path, doc, noun=NOUN, first_only=False):
        if cp["status"] is not None and cp["status"] != "defined":
            continue        # placement not finished in Slicer
        if cp["position"] is None:
            raise InputError(f"{NOUN} {path} control point {cp['number']} has no position.")
        points.append(_point([float(c) for c in cp["position"]], positive, cp["label"]))
    return points


def _from_json(path: Path, doc: Any, positive: bool) -> list[dict]:
    system = "LPS"
    items = doc
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"points", "coordinate_system"})
        if unknown or "points" not in doc:
            extra = f"; unknown key(s): {', '.join(map(repr, unknown))}" if unknown else ""
            raise InputError(f"{NOUN} {path} must hold a list of points or an object with 'points' "
                             f"(and optionally 'coordinate_system'){extra}.")
        system = _system(doc.get("coordinate_system", "LPS"), path)
        items = doc["points"]
    if not isinstance(items, list):
        raise InputError(f"{NOUN} {path}: 'points' must be a list of points.")
    points = []
    for i, item in enumerate(items):
        where = f"point {i + 1}"
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"position", "positive", "label"})
            if unknown:
                raise InputError(f"{NOUN} {path} {where} has unknown field(s) {', '.join(map(repr, unknown))} "
                                 "(expected position, label, positive).")
            if "position" not in item:
                raise InputError(f"{NOUN} {path} {where} has no 'position'.")
            points.append(_point(_xyz(item["position"], path, where, system),
                                 _polarity(item.get("positive"), positive, path, where), item.get("label")))
        else:
            points.append(_point(_xyz(item, path, where, system), positive, None))
    return points


def _rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank, non-comment lines; delimiter from the first line."""
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines())
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    first = lines[0][1]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    if delimiter is None:
        return [(no, ln.split()) for no, ln in lines]
    # each line on its own: an unclosed quote must not swallow the lines after it
    return [(no, [f.strip() for f in next(csv.reader([ln], delimiter=delimiter), [])]) for no, ln in lines]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _from_table(path: Path, text: str, positive: bool) -> list[dict]:
    rows = _rows(text)
    if not rows:
        raise InputError(f"{NOUN} {path} is empty.")
    # columns: positional x,y,z,label,positive unless a header names them
    cols = {"xyz": (0, 1, 2), "label": 3, "positive": 4, "defined": None}
    system, named = "LPS", False
    head = rows[0][1]
    if not any(_is_number(f) for f in head):
        rows = rows[1:]             # a header line of column names
        names = [h.strip().lower() for h in head]
        for triple, sys_name in (("xyz", "LPS"), ("lps", "LPS"), ("ras", "RAS")):
            if all(c in names for c in triple):
                cols = {"xyz": tuple(names.index(c) for c in triple),
                        **{k: names.index(k) if k in names else None for k in ("label", "positive", "defined")}}
                system, named = sys_name, True
                break
    points = []
    for no, fields in rows:
        where = f"line {no}"
        if not named and not 3 <= len(fields) <= 5:
            raise InputError(f"{NOUN} {path} {where} has {len(fields)} values; expected "
                             "x,y,z[,label[,positive]] (LPS mm).")
        if max(cols["xyz"]) >= len(fields):
            raise InputError(f"{NOUN} {path} {where} has {len(fields)} values; too few for the columns "
                             "named in the header.")
        extra = {k: fields[i] if i is not None and i < len(fields) else None
                 for k, i in cols.items() if k != "xyz"}
        if extra["defined"] is not None and extra["defined"].lower() in _FALSE:
            continue        # Slicer: position not defined
        xyz = _xyz([fields[i] for i in cols["xyz"]], path, where, system)
        points.append(_point(xyz, _polarity(extra["positive"], positive, path, where), extra["label"]))
    return points


# ----------------------------------------------------------------------------- public API
def outside_message(position: Sequence[float], image: "sitk.Image", name: str = "the image") -> Optional[str]:
    """None when ``position`` (LPS mm) lies within the image's voxels (continuous index in
    [-0.5, size - 0.5] on every axis), else a short description of where it falls."""
    index = image.TransformPhysicalPointToContinuousIndex([float(c) for c in position])
    size = image.GetSize()
    if all(-0.5 - 1e-6 <= c <= n - 0.5 + 1e-6 for c, n in zip(index, size)):
        return None
    return (f"at ({', '.join(f'{c:.2f}' for c in position)}) LPS mm lies outside {name} "
            f"(voxel index ({', '.join(f'{c:.1f}' for c in index)}), image size {tuple(size)})")


def read_prompt_file(path: Path | str, positive: bool, image: Optional["sitk.Image"] = None) -> list[dict]:
    """Read point prompts from a Slicer ``.mrk.json``, JSON or CSV file (see the module docstring).

    Returns engine points ``{"position": [x, y, z] (LPS mm), "positive": bool, "label": str|None}``.
    ``positive`` applies to points that do not state their own polarity; a point that states it
    keeps it, except that a file read as negative prompts may not hold positive points. With
    ``image``, every point must lie inside it. Raises InputError naming the file.
    """
    path = Path(path)
    text = read_text(path, NOUN)
    if not text.strip():
        raise InputError(f"{NOUN} {path} is empty.")
    if path.name.lower().endswith(".json") or text.lstrip()[:1] in ("{", "["):
        doc = parse_json(path, text, NOUN)
        if isinstance(doc, dict) and "markups" in doc:
            points = _from_markups(path, doc, positive)
        else:
            points = _from_json(path, doc, positive)
    else:
        points = _from_table(path, text, positive)
    if not points:
        raise InputError(f"{NOUN} {path} contains no points.")
    if image is not None:
        for i, p in enumerate(points):
            problem = outside_message(p["position"], image)
            if problem:
                raise InputError(f"{NOUN} {path} point {i + 1}{_label_text(p)} {problem}.")
    return points


def load_prompt_files(fixed: Optional[Path] = None, fixed_negative: Optional[Path] = None,
                      moving: Optional[Path] = None, moving_negative: Optional[Path] = None) -> Optional[dict]:
    """A validated prompt set (:func:`.prompts.parse_prompt_set`) from per-image prompt files;
    None when no file is given."""
    files = {"fixed": ((fixed, True), (fixed_negative, False)),
             "moving": ((moving, True), (moving_negative, False))}
    value: dict = {side: [] for side in SIDES}
    for side, pairs in files.items():
        for path, positive in pairs:
            if path is not None:
                value[side].extend(read_prompt_file(path, positive))
    return parse_prompt_set(value)


def _label_text(point: dict) -> str:
    kind = "positive" if point["positive"] else "negative"
    return f" ({kind}, label {point['label']!r})" if point["label"] is not None else f" ({kind}, unlabelled)"


def check_prompts(prompts: Optional[dict], fixed: "sitk.Image", moving: "sitk.Image") -> None:
    """Raise InputError naming the point (side, number, label) when a prompt lies outside its
    image, and refuses a side with negative points only (see :func:`prompts.group_structures`:
    a negative point refines the structure sharing its label, or else the nearest one)."""
    if not prompts:
        return
    images = {"fixed": fixed, "moving": moving}
    for side in SIDES:
        points = prompts.get(side) or []
        for i, p in enumerate(points):
            problem = outside_message(p["position"], images[side], f"the {side} image")
            if problem:
                raise InputError(f"{side} prompt point {i + 1}{_label_text(p)} {problem}.")
        group_structures(points, side)   # refuses a side with negative points only
