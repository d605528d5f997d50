"""Clicks made from a segmentation the way a clinician clicks: one positive point per label at
the label's centre.

The centre is a voxel deep inside the label (nearly as far from its boundary, in mm, as any),
the one nearest the centroid; the centroid itself falls outside curved structures such as the
myocardium's ring. Used to measure prompt-guided registration on cases that have ground-truth
labels but no recorded clicks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..grid import Grid

DEEP_FRACTION = 0.9   # voxels at least this deep (of the deepest) are centre candidates


def centre_clicks(segmentation: sitk.Image, labels: Sequence[int],
                  names: Optional[dict[str, str]] = None) -> list[dict]:
    """One click per label (LPS mm, the form of :mod:`SAMRegistrationLib.prompts`), labelled by
    ``names[str(label)]`` where given, else by the label number."""
    segmentation = sitk.Cast(segmentation, sitk.sitkInt32)
    present = set(int(v) for v in np.unique(sitk.GetArrayViewFromImage(segmentation)))
    grid = Grid.from_image(segmentation)
    clicks = []
    for label in labels:
        if int(label) not in present:
            raise InputError(f"label {label} does not occur in the segmentation, so it cannot be clicked")
        inside = sitk.Cast(segmentation == int(label), sitk.sitkUInt8)
        depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            inside, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
        # among the deepest voxels (a long structure has many), the one nearest the centroid
        mask = sitk.GetArrayViewFromImage(inside) > 0
        deep = np.argwhere(mask & (depth >= DEEP_FRACTION * float(depth[mask].max())))[:, ::-1]   # (x, y, z)
        centroid = grid.index_to_world(np.argwhere(mask)[:, ::-1].astype(float)).mean(0)
        distance = np.linalg.norm(grid.index_to_world(deep.astype(float)) - centroid, axis=1)
        position = grid.index_to_world(deep[int(np.argmin(distance))][None].astype(float))[0]
        clicks.append({"position": [round(float(c), 3) for c in position], "positive": True,
                       "label": (names or {}).get(str(label), str(label))})
    return clicks
