"""Point prompts as the engine receives them: physical LPS millimetres, grouped by image.

A prompt set is ``{"fixed": [point, ...], "moving": [point, ...]}`` where each point is
``{"position": [x, y, z], "positive": true, "label": "P-1"}``. ``position`` is in LPS mm in
the frame of that image's file; points that share a ``label`` belong to one structure. The
Slicer module writes this form into worker jobs (after undoing any parent transforms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import InputError

SIDES = ("fixed", "moving")


def _point(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an object with 'position' and 'positive'")
    unknown = sorted(set(value) - {"position", "positive", "label"})
    if unknown:
        raise InputError(f"{where} has unknown field(s): {', '.join(unknown)}")
    position = value.get("position")
    if not isinstance(position, (list, tuple)) or len(position) != 3:
        raise InputError(f"{where}: 'position' must be three numbers (LPS mm)")
    try:
        xyz = [float(c) for c in position]
    except (TypeError, ValueError):
        raise InputError(f"{where}: 'position' must be three numbers (LPS mm), got {position!r}"[:300]) from None
    except OverflowError:
        raise InputError(f"{where}: 'position' holds a number too large for a coordinate") from None
    if not all(math.isfinite(c) for c in xyz):
        raise InputError(f"{where}: 'position' is not finite: {position!r}")
    positive = value.get("positive", True)
    if not isinstance(positive, bool):
        raise InputError(f"{where}: 'positive' must be true or false")
    label = value.get("label")
    return {"position": xyz, "positive": positive, "label": None if label is None else str(label)}


def parse_prompt_set(value: Any) -> Optional[dict]:
    """Validate a prompt set (see module docstring); None when there are no points at all."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("prompts must be an object with 'fixed' and/or 'moving' point lists")
    unknown = sorted(set(value) - set(SIDES))
    if unknown:
        raise InputError(f"prompts have unknown side(s): {', '.join(unknown)} (use 'fixed' and 'moving')")
    parsed = {}
    for side in SIDES:
        points = value.get(side) or []
        if not isinstance(points, list):
            raise InputError(f"prompts.{side} must be a list of points")
        parsed[side] = [_point(p, f"prompts.{side}[{i}]") for i, p in enumerate(points)]
    if not parsed["fixed"] and not parsed["moving"]:
        return None
    return parsed


def parse_auto_prompts(value: Any) -> Optional[int]:
    """The number of automatically sampled prompts: None, or a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"auto_prompts must be a whole number >= 1, got {value!r}")
    return value


@dataclass
class Structure:
    """Clicks on one structure in one image (LPS mm)."""
    label: str
    positive: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    half_size_mm: Optional[float] = None   # expected in-plane half size, when known (found regions)


def group_structures(points: list[dict], side: str = "image") -> list[Structure]:
    """Points sharing a label form a structure; an unlabelled positive point is a structure of
    its own; a negative point whose label no positive point carries refines the nearest one."""
    structures: dict[str, Structure] = {}
    loose_negative = []
    for n, point in enumerate(points):
        if point["positive"]:
            label = point["label"] if point["label"] is not None else f"{side}-{n + 1}"
            structures.setdefault(label, Structure(label)).positive.append(np.asarray(point["position"], float))
    for point in points:
        if point["positive"]:
            continue
        if point["label"] in structures:
            structures[point["label"]].negative.append(np.asarray(point["position"], float))
        else:
            loose_negative.append(np.asarray(point["position"], float))
    if loose_negative and not structures:
        raise InputError(f"the {side} prompts have negative points only; a structure needs a positive point")
    for negative in loose_negative:
        nearest = min(structures.values(),
                      key=lambda s: min(np.linalg.norm(p - negative) for p in s.positive))
        nearest.negative.append(negative)
    return list(structures.values())


def click_pairs(prompts: Optional[dict]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Structures clicked in both images: (label, mean fixed click, mean moving click), LPS mm.
    Their clicks are landmark correspondences as well as prompts."""
    if not prompts or not prompts.get("fixed") or not prompts.get("moving"):
        return []
    fixed = {s.label: s for s in group_structures(prompts["fixed"], "fixed")}
    moving = {s.label: s for s in group_structures(prompts["moving"], "moving")}
    return [(label, np.mean(fixed[label].positive, axis=0), np.mean(moving[label].positive, axis=0))
            for label in fixed if label in moving]
