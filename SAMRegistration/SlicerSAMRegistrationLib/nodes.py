"""MRML nodes <-> files for the worker, and result nodes made from the worker's outputs.

Volumes are written in their own frame (their IJK-to-RAS matrix; parent transforms are not
hardened), which is the frame the engine registers in. Readers and writers are MRML storage
nodes, so NRRD/NIfTI axes and RAS <-> LPS conversions are Slicer's own.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import vtk
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTransformStorageNode, vtkMRMLVectorVolumeNode, vtkMRMLVolumeArchetypeStorageNode,
                    vtkSlicerTransformLogic)
from vtk.util import numpy_support


class NodeIOError(RuntimeError):
    """A node could not be written or read."""


# --------------------------------------------------------------------------- checks
def checkImageData(node, described: str):
    """The volume node's image data, or a clear ValueError when it has none or several components."""
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise ValueError(f"{described} {node.GetName()!r} has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{described} {node.GetName()!r} has {image.GetNumberOfScalarComponents()} "
                         "components; a single-component (scalar) volume is needed")
    return image


def checkVolume(node, role: str) -> None:
    """Clear ValueErrors for what the worker would reject later and less clearly."""
    if node is None:
        raise ValueError(f"no {role} volume selected")
    if not isinstance(node, vtkMRMLScalarVolumeNode) or isinstance(node, vtkMRMLLabelMapVolumeNode):
        raise ValueError(f"the {role} volume {node.GetName()!r} must be a scalar volume, not {node.GetClassName()}")
    image = checkImageData(node, f"the {role} volume")
    dims = image.GetDimensions()
    if sum(d > 1 for d in dims) < 3:
        raise ValueError(f"the {role} volume {node.GetName()!r} is not 3D (dimensions {dims}): a single slice "
                         "or a 2D image")


# --------------------------------------------------------------------------- writing
def writeVolume(node, path: str) -> str:
    """Write a (scalar or label map) volume node to ``path`` in its own frame."""
    storage = vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(node) or not os.path.isfile(path):
        raise NodeIOError(f"could not write {node.GetName()!r} to {path}")
    return str(path)


def commonSegmentNames(fixedSegmentation, movingSegmentation) -> list[str]:
    """Segment names present in both segmentations, in the fixed one's order."""
    def names(node):
        seg = node.GetSegmentation()
        return [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    moving = set(names(movingSegmentation))
    return [name for name in names(fixedSegmentation) if name in moving]


def writeLabels(scene, node, referenceVolume, path: str, segmentNames: Optional[list[str]] = None) -> str:
    """Write a label map volume, or a segmentation exported on ``referenceVolume``'s grid with
    label i + 1 for ``segmentNames[i]`` (so two segmentations share label values by name)."""
    if isinstance(node, vtkMRMLLabelMapVolumeNode):
        return writeVolume(node, path)
    if not isinstance(node, vtkMRMLSegmentationNode):
        raise ValueError(f"{node.GetName()!r} is neither a segmentation nor a label map volume")
    from slicer import vtkSlicerSegmentationsModuleLogic
    segmentation = node.GetSegmentation()
    ids = vtk.vtkStringArray()
    for name in segmentNames or []:
        ids.InsertNextValue(segmentation.GetSegmentIdBySegmentName(name))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SAMRegistration-export")
    try:
        if not vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, labelmap, referenceVolume):
            raise NodeIOError(f"could not export segmentation {node.GetName()!r} to a label map")
        return writeVolume(labelmap, path)
    finally:
        scene.RemoveNode(labelmap)


# --------------------------------------------------------------------------- reading
def _dropStorage(scene, node) -> None:
    """Detach the storage node that read a temporary file (the file is about to go)."""
    storage = node.GetStorageNode()
    if storage is not None:
        node.SetAndObserveStorageNodeID(None)
        if scene is not None and storage.GetScene() is scene:
            scene.RemoveNode(storage)


def readTransform(scene, path: str, transformNode) -> None:
    """Load an ITK transform file (LPS, resampling convention) into ``transformNode``."""
    storage = vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(transformNode):
        raise NodeIOError(f"could not read the transform {path}")
    _dropStorage(scene, transformNode)


def readVolume(scene, path: str, volumeNode) -> None:
    """Load an image file into an existing volume node (image data and geometry replaced)."""
    storage = vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(volumeNode):
        raise NodeIOError(f"could not read the volume {path}")
    _dropStorage(scene, volumeNode)
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()


def readRegions(scene, path: str, segmentationNode, segmentNames: list[str]) -> int:
    """Load a region label image (label i + 1 = ``segmentNames[i]``) into ``segmentationNode``,
    one segment per label present, named after its structure. Returns the number of segments."""
    from slicer import vtkSlicerSegmentationsModuleLogic
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SAMRegistration-regions")
    try:
        readVolume(scene, path, labelmap)
        if not vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentationNode):
            raise NodeIOError(f"could not import the regions {path} as a segmentation")
    finally:
        for display in [labelmap.GetDisplayNode()]:
            if display is not None:
                scene.RemoveNode(display)
        scene.RemoveNode(labelmap)
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label = segment.GetLabelValue()
        if 1 <= label <= len(segmentNames):
            segment.SetName(str(segmentNames[label - 1]))
    return segmentation.GetNumberOfSegments()


def displacementVolume(scene, transformNode, referenceVolume, outputVolume) -> None:
    """Fill ``outputVolume`` from the transform on ``referenceVolume``'s grid: RAS displacement
    vectors for a vector volume, their magnitude (mm) for a scalar volume."""
    magnitude = not isinstance(outputVolume, vtkMRMLVectorVolumeNode)
    logic = vtkSlicerTransformLogic()
    logic.SetMRMLScene(scene)
    if logic.CreateDisplacementVolumeFromTransform(transformNode, referenceVolume, magnitude, outputVolume) is None:
        raise NodeIOError("could not sample the displacement field onto the fixed volume's grid")
    if outputVolume.GetDisplayNode() is None:
        outputVolume.CreateDefaultDisplayNodes()


# --------------------------------------------------------------------------- arrays
def arrayFromVolume(volumeNode) -> np.ndarray:
    """A (k, j, i) copy of a scalar volume's voxels."""
    image = volumeNode.GetImageData()
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return values.reshape(dims[2], dims[1], dims[0]).copy()


def setVolumeArray(volumeNode, array: np.ndarray, geometryFrom) -> None:
    """Give ``volumeNode`` the voxels ``array`` (k, j, i) and the geometry of ``geometryFrom``."""
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    geometryFrom.GetIJKToRASMatrix(matrix)
    volumeNode.SetIJKToRASMatrix(matrix)
    volumeNode.SetAndObserveImageData(image)
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()


def _unitRange(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, [1.0, 99.0])
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def checkerboard(fixed: np.ndarray, warped: np.ndarray, spacing, squareMm: float) -> np.ndarray:
    """Squares of ``squareMm`` alternating between the two images, each scaled to [0, 1] by
    its own 1st-99th percentiles so that CT and MR read alike."""
    if fixed.shape != warped.shape:
        raise ValueError(f"checkerboard needs images on one grid, got {fixed.shape} and {warped.shape}")
    k, j, i = np.indices(fixed.shape, sparse=True)
    si, sj, sk = (max(int(round(squareMm / s)), 1) for s in spacing)
    pick = ((i // si) + (j // sj) + (k // sk)) % 2 == 0
    return np.where(pick, _unitRange(fixed.astype(np.float32)), _unitRange(warped.astype(np.float32))).astype(np.float32)
