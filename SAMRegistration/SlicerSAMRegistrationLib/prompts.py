"""Markups point lists -> engine prompts in the physical LPS frame of each volume's file.

A control point's world position (which already includes any transform of the markups node)
is mapped through the inverse of the volume's parent transforms into the volume's own RAS
frame — the frame in which the volume is written for the worker — and then to LPS.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import vtk
from slicer import vtkMRMLMarkupsNode, vtkMRMLTransformNode

class PromptError(ValueError):
    """A prompt that cannot be used (for example outside its volume)."""


def worldToVolumeTransform(volumeNode) -> vtk.vtkGeneralTransform:
    """World RAS -> the volume's own RAS frame (identity when it has no parent transform)."""
    transform = vtk.vtkGeneralTransform()
    vtkMRMLTransformNode.GetTransformBetweenNodes(None, volumeNode.GetParentTransformNode(), transform)
    return transform


def _placed(markupsNode, index: int) -> bool:
    """Undefined or preview points (still being placed) are not prompts."""
    status = markupsNode.GetNthControlPointPositionStatus(index)
    return status == vtkMRMLMarkupsNode.PositionDefined


def _insideVolume(volumeNode, rasLocal) -> bool:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(matrix)
    ijk = np.array(matrix.MultiplyPoint([*rasLocal, 1.0])[:3])
    dims = np.array(volumeNode.GetImageData().GetDimensions(), dtype=float)
    return bool(np.all(ijk >= -0.5) and np.all(ijk <= dims - 0.5))


def markupsToPrompts(markupsNode, volumeNode, positive: bool, side: str) -> list[dict]:
    """The placed control points of ``markupsNode`` as engine prompt points for ``volumeNode``.

    Each point is ``{"position": [x, y, z] (LPS mm, volume frame), "positive": bool, "label": str}``.
    Raises :class:`PromptError` naming the point when it lies outside the volume.
    """
    if markupsNode is None:
        return []
    toVolume = worldToVolumeTransform(volumeNode)
    points = []
    for index in range(markupsNode.GetNumberOfControlPoints()):
        if not _placed(markupsNode, index):
            continue
        world = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(index, world)
        ras = toVolume.TransformPoint(world)
        label = markupsNode.GetNthControlPointLabel(index) or f"{markupsNode.GetName()}-{index + 1}"
        if not _insideVolume(volumeNode, ras):
            raise PromptError(f"{side} prompt {label!r} ({markupsNode.GetName()}) lies outside the "
                              f"{side} volume {volumeNode.GetName()!r}")
        points.append({"position": [-ras[0], -ras[1], ras[2]], "positive": bool(positive), "label": label})
    return points


def promptSet(fixedVolume, movingVolume, fixedPositive=None, fixedNegative=None,
              movingPositive=None, movingNegative=None) -> Optional[dict]:
    """The job's ``prompts`` object, or None when no point is placed anywhere."""
    fixed = (markupsToPrompts(fixedPositive, fixedVolume, True, "fixed")
             + markupsToPrompts(fixedNegative, fixedVolume, False, "fixed"))
    moving = (markupsToPrompts(movingPositive, movingVolume, True, "moving")
              + markupsToPrompts(movingNegative, movingVolume, False, "moving"))
    if not fixed and not moving:
        return None
    return {"fixed": fixed, "moving": moving}
