"""Automatic prompts (``--auto-prompts K``): K clicks spread over the moving image's anatomy.

PromptReg samples prompts at random for general-purpose registration. Random
clicks bunch up in the largest structures, so here the first click is drawn at random
(seeded, so a run is reproducible) and each further one is the candidate farthest from the
clicks so far, which spreads the K regions over the anatomy. Candidates lie at least
``min_depth_mm`` inside the anatomy, where a box around the click sees tissue, not the
body's edge. Each click is its own structure; the usual checks of :mod:`.pairs` drop the
regions that cannot be trusted.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..grid import Grid
from ..volume import FOREGROUND_THRESHOLD

MAX_CANDIDATES = 20000


def sample_prompts(image01: sitk.Image, count: int, min_depth_mm: float = 6.0, seed: int = 0) -> list[dict]:
    """``count`` positive clicks (LPS mm) labelled ``auto-1`` ... in ``image01``'s anatomy."""
    if count < 1:
        raise InputError(f"--auto-prompts needs a count of at least 1, got {count}")
    anatomy = sitk.Cast(image01 > FOREGROUND_THRESHOLD, sitk.sitkUInt8)
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        anatomy, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
    if not (depth > 0).any():
        raise InputError("automatic prompts need anatomy in the moving image, and it has none")
    wanted = min(min_depth_mm, 0.5 * float(depth.max()))
    zyx = np.argwhere(depth >= wanted)
    rng = np.random.default_rng(seed)
    if len(zyx) > MAX_CANDIDATES:
        zyx = zyx[rng.choice(len(zyx), MAX_CANDIDATES, replace=False)]
    points = Grid.from_image(image01).index_to_world(zyx[:, ::-1])       # (x, y, z) index -> LPS mm
    chosen = [int(rng.integers(len(points)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(count, len(points)):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return [{"position": [round(float(c), 3) for c in points[i]], "positive": True, "label": f"auto-{n + 1}"}
            for n, i in enumerate(chosen)]
