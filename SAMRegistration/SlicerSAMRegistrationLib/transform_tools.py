"""Applying an existing registration's displacement field to other nodes, and inverting it,
from the scene logic (``samreg apply`` and ``samreg invert`` run in a child process).

The field is a ``displacement.nrrd`` written by a registration: phi(x) = x + u(x) on the fixed
volume's grid, in LPS mm, mapping fixed -> moving. A transform node holding such a field (a
registration's result) is written back to that form first.

Frames: volumes are written in their own frame (their IJK-to-RAS geometry, parent transforms
not hardened) and markups in their local coordinates, which is the frame the field was
computed in. Markups go through Slicer's own ``.mrk.json`` writer and reader; the engine keeps
the file's coordinate system (LPS as Slicer writes it, RAS also understood), so the points come
back in RAS without any sign juggling here. The new nodes hold data of the other volume's
frame and have no parent transform.

Both operations are short, so they block until the child ends. Nothing is added to the scene
unless the child succeeded and every output was loaded; the temporary folder is always removed.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Optional, Sequence, Union

from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsJsonStorageNode, vtkMRMLMarkupsNode,
                    vtkMRMLMarkupsPlaneNode, vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode,
                    vtkMRMLTransformNode, vtkMRMLTransformStorageNode)

from . import nodes

PathOrNode = Union[str, os.PathLike, Any]

#: the line ``samreg invert``/``apply`` print about the inverse (mm)
_ERROR_LINE = re.compile(r"inverse-consistency error: max ([-+0-9.eE]+) mm, mean ([-+0-9.eE]+) mm, "
                         r"99th percentile ([-+0-9.eE]+) mm")


def parseInverseErrors(lines: Sequence[str]) -> Optional[dict]:
    """``{"max_mm", "mean_mm", "p99_mm"}`` from the engine's inverse-consistency line, or None."""
    for line in lines:
        match = _ERROR_LINE.search(line)
        if match:
            return dict(zip(("max_mm", "mean_mm", "p99_mm"), map(float, match.groups())))
    return None


def _isVolume(node) -> bool:
    return isinstance(node, vtkMRMLScalarVolumeNode)


def _checkInput(node) -> None:
    """Clear ValueErrors for inputs the engine cannot take."""
    if node is None:
        raise ValueError("an input node is None")
    if _isVolume(node):
        nodes.checkImageData(node, "the volume")
    elif isinstance(node, (vtkMRMLMarkupsPlaneNode, vtkMRMLMarkupsROINode)):
        raise ValueError(f"{node.GetName()!r} is a {node.GetClassName()}; only point-like markups can be transformed")
    elif isinstance(node, vtkMRMLMarkupsNode):
        if node.GetNumberOfDefinedControlPoints() == 0:
            raise ValueError(f"the markups {node.GetName()!r} have no placed control points")
    else:
        raise ValueError(f"cannot transform {node.GetName()!r} ({node.GetClassName()}): give scalar volumes, "
                         "label map volumes or markups point lists")


class TransformToolsMixin:
    """``applyDisplacement`` and ``invertDisplacement`` for :class:`SceneRegistrationLogic`
    (uses its ``scene``, ``runnerFactory``, ``pythonExecutable`` and ``temporaryRoot``)."""

    # ------------------------------------------------------------------ public API
    def applyDisplacement(self, displacement: PathOrNode, inputNodes: Sequence[Any], fromSpace: str = "moving",
                          labels: Optional[bool] = None, interpolation: str = "linear",
                          referenceVolume: Optional[PathOrNode] = None, iterations: int = 60) -> list:
        """Bring ``inputNodes`` (scalar volumes, label map volumes, markups point lists) through a
        registration's field into the other volume's space; returns the new nodes, in order.

        ``displacement``: a ``displacement.nrrd``, a registration output folder, or a transform
        node holding such a field. ``fromSpace="moving"`` (default) takes data of the moving
        volume to the fixed one (volumes resampled on the field's grid, the fixed grid);
        ``"fixed"`` goes the other way (volumes onto ``referenceVolume``'s grid, a volume node or
        image file, by default the field's grid). Points of the moving space, and volumes of the
        fixed space, need the inverse field (``iterations`` of the fixed-point iteration).

        ``labels``: None (default) treats label map volumes as labels (nearest neighbour, values
        kept) and interpolates other volumes with ``interpolation`` (linear, bspline, nearest);
        True treats every volume as labels, False none. Each new node has its input's class and
        is named ``"<input name> (registered)"``. Raises ValueError for unusable inputs and
        RegistrationError (the engine's one-line message) when the child fails; then nothing is
        added to the scene.
        """
        if self.scene is None:
            raise ValueError("no MRML scene: set logic.scene first")
        if fromSpace not in ("moving", "fixed"):
            raise ValueError(f"fromSpace must be 'moving' or 'fixed', not {fromSpace!r}")
        if interpolation not in ("linear", "bspline", "nearest"):
            raise ValueError(f"interpolation must be linear, bspline or nearest, not {interpolation!r}")
        inputNodes = list(inputNodes)
        if not inputNodes:
            raise ValueError("no input nodes to transform")
        for node in inputNodes:
            _checkInput(node)

        def asLabels(node) -> bool:
            return _isVolume(node) and (isinstance(node, vtkMRMLLabelMapVolumeNode) if labels is None else labels)
        # one engine run per kind of volume (--labels applies to all of a run's images); input indices
        groups = [[i for i, n in enumerate(inputNodes) if asLabels(n)],
                  [i for i, n in enumerate(inputNodes) if not asLabels(n)]]
        tempDir = self.makeTemporaryDirectory("SAMRegistration-apply-")
        created: list = []
        try:
            field = self._fieldFile(displacement, tempDir)
            options = ["--from", fromSpace, "--interpolation", interpolation, "--iterations", str(int(iterations))]
            if referenceVolume is not None:
                options += ["--reference", self._volumeFile(referenceVolume, os.path.join(tempDir, "reference.nrrd"))]
            outputs: dict = {}   # input index -> output file
            for run, group in enumerate(groups):
                if not group:
                    continue
                paths = [self._writeInput(inputNodes[i], tempDir, i) for i in group]
                outDir = os.path.join(tempDir, f"out{run}")
                self._runEngine(["apply", field, *paths, "-o", outDir, *options] + (["--labels"] if run == 0 else []),
                                tempDir)
                outputs.update({i: os.path.join(outDir, os.path.basename(path)) for i, path in zip(group, paths)})
            for i, node in enumerate(inputNodes):   # loaded only once every run succeeded
                self._loadOutput(node, outputs[i], created)
            return list(created)
        except BaseException:
            for node in created:
                self._removeWithDisplay(node)
            raise
        finally:
            shutil.rmtree(tempDir, ignore_errors=True)

    def invertDisplacement(self, displacement: PathOrNode, outputPath: Optional[str] = None,
                           outputTransformNode=None, iterations: int = 60) -> tuple[Any, dict]:
        """The inverse of a registration's field (the moving -> fixed mapping, on the same grid),
        as a transform node, with its inverse-consistency error |phi(phi^-1(y)) - y|.

        ``displacement`` as for :meth:`applyDisplacement`. The inverse is loaded into
        ``outputTransformNode`` (default: a new node ``"<name> (inverse)"``) and, with
        ``outputPath`` (``.nrrd``, ``.nii.gz``, ``.mha``), also kept in that file. Returns
        ``(transformNode, {"max_mm", "mean_mm", "p99_mm"})``. A volume of the fixed space placed
        under the node is shown in the moving space. Raises RegistrationError when the child
        fails (nothing added to the scene).
        """
        if self.scene is None:
            raise ValueError("no MRML scene: set logic.scene first")
        if outputTransformNode is not None and not isinstance(outputTransformNode, vtkMRMLTransformNode):
            raise ValueError(f"{outputTransformNode.GetName()!r} is not a transform node")
        tempDir = self.makeTemporaryDirectory("SAMRegistration-invert-")
        created: list = []
        try:
            field = self._fieldFile(displacement, tempDir)
            target = os.path.abspath(outputPath) if outputPath else os.path.join(tempDir, "inverse.nrrd")
            lines = self._runEngine(["invert", field, "-o", target, "--iterations", str(int(iterations))], tempDir)
            errors = parseInverseErrors(lines)
            if errors is None:
                raise self._error("the engine did not report the inverse-consistency error")
            node = outputTransformNode
            if node is None:
                name = displacement.GetName() if isinstance(displacement, vtkMRMLTransformNode) else \
                    os.path.basename(os.path.normpath(os.fspath(displacement))).split(".")[0] or "displacement"
                node = self.scene.AddNewNodeByClass("vtkMRMLTransformNode",
                                                    self.scene.GenerateUniqueName(f"{name} (inverse)"))
                created.append(node)
            nodes.readTransform(self.scene, target, node)
            return node, errors
        except BaseException:
            for node in created:
                self.scene.RemoveNode(node)
            raise
        finally:
            shutil.rmtree(tempDir, ignore_errors=True)

    # ------------------------------------------------------------------ files
    @staticmethod
    def _error(message: str) -> Exception:
        from .scene_logic import RegistrationError
        return RegistrationError(message)

    def _fieldFile(self, displacement: PathOrNode, tempDir: str) -> str:
        """A path the engine reads the field from (a transform node is written into ``tempDir``)."""
        if isinstance(displacement, vtkMRMLTransformNode):
            path = os.path.join(tempDir, "displacement.nrrd")
            storage = vtkMRMLTransformStorageNode()
            storage.SetFileName(path)
            if not storage.WriteData(displacement) or not os.path.isfile(path):
                raise ValueError(f"the transform {displacement.GetName()!r} could not be written as a "
                                 "displacement field (it must hold one, as a registration's result does)")
            return path
        return os.path.abspath(os.fspath(displacement))

    @staticmethod
    def _volumeFile(volume: PathOrNode, path: str) -> str:
        if isinstance(volume, (str, os.PathLike)):
            return os.path.abspath(os.fspath(volume))
        _checkInput(volume)
        return nodes.writeVolume(volume, path)

    @staticmethod
    def _writeInput(node, tempDir: str, index: int) -> str:
        """``node`` written as ``input<index>`` (distinct names: outputs keep their input's name)."""
        if _isVolume(node):
            return nodes.writeVolume(node, os.path.join(tempDir, f"input{index}.nrrd"))
        path = os.path.join(tempDir, f"input{index}.mrk.json")
        storage = vtkMRMLMarkupsJsonStorageNode()   # local coordinates, LPS in the file
        storage.SetFileName(path)
        if not storage.WriteData(node) or not os.path.isfile(path):
            raise nodes.NodeIOError(f"could not write the markups {node.GetName()!r} to {path}")
        return path

    def _loadOutput(self, inputNode, path: str, created: list) -> None:
        """A new node of ``inputNode``'s class holding the engine's output ``path``, appended to
        ``created`` (the caller removes those if a later step fails)."""
        node = self.scene.AddNewNodeByClass(inputNode.GetClassName(),
                                            self.scene.GenerateUniqueName(f"{inputNode.GetName()} (registered)"))
        created.append(node)
        if _isVolume(inputNode):
            nodes.readVolume(self.scene, path, node)
        else:
            storage = vtkMRMLMarkupsJsonStorageNode()
            storage.SetFileName(path)
            if not storage.ReadData(node):
                raise nodes.NodeIOError(f"could not read the transformed markups {path}")
            node.CreateDefaultDisplayNodes()

    def _removeWithDisplay(self, node) -> None:
        for index in range(node.GetNumberOfDisplayNodes()):
            display = node.GetNthDisplayNode(index)
            if display is not None:
                self.scene.RemoveNode(display)
        self.scene.RemoveNode(node)

    # ------------------------------------------------------------------ the child process
    def _runEngine(self, arguments: list, tempDir: str) -> list:
        """Run ``SAMRegistrationLib.cli <arguments>`` in a child process and wait; returns its
        stdout lines. A failure raises RegistrationError with the engine's one-line message."""
        from .process import workerEnvironment
        from .scene_logic import enginePath, pythonExecutable
        python = self.pythonExecutable or pythonExecutable()
        lines: dict = {"stdout": [], "stderr": []}
        runner = self.runnerFactory()
        runner.start([python, "-m", "SAMRegistrationLib.cli", *arguments],
                     lambda stream, line: lines[stream].append(line), lambda status: None,
                     env=workerEnvironment(enginePath()), cwd=tempDir)
        code = runner.wait()
        stdout, stderr = lines["stdout"], lines["stderr"]
        if code == 0:
            return stdout
        messages = [line[len("samreg: error: "):] for line in stderr if line.startswith("samreg: error: ")]
        if messages:
            raise self._error(messages[-1])
        last = next((line for line in reversed(stderr) if line.strip()), "no message")
        raise self._error(f"samreg {arguments[0]} failed: {last} (exit status {code})")
