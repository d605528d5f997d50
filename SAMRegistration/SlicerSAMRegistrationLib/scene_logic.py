"""Scene logic of SAMRegistration: MRML nodes in, engine worker in a child process, nodes out.

The only module that touches MRML. The scene is an argument, and only ``vtkMRML*``/logic
classes are used, so the same code runs in Slicer and headless under ``slicer-core``.

A run: check the inputs -> write them and a JSON job into a temporary folder -> start
``SAMRegistrationLib.cli worker`` through a process runner -> turn its JSON events into
progress callbacks -> on success load the transform, warped volume and optional QC volumes.
Nodes are created only once results are loaded, so a cancelled or failed run adds nothing
to the scene. The temporary folder is removed unless ``keepTemporaryFiles`` is set.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTransformNode

from . import nodes
from .process import ProcessRunner, insideSlicerApplication, makeRunner, workerEnvironment
from .prompts import promptSet
from .transform_tools import TransformToolsMixin

ProgressCallback = Callable[[str, float, str], None]     # (stage, overall fraction 0..1, message)
LogCallback = Callable[[str], None]


class RegistrationError(RuntimeError):
    """The registration did not produce results; the message is the worker's own when it has one."""


class RegistrationCancelled(RegistrationError):
    pass


@dataclass
class RegistrationResult:
    transformNode: Any
    warpedVolumeNode: Any = None
    displacementVolumeNode: Any = None
    jacobianVolumeNode: Any = None
    regionSegmentationNodes: dict = field(default_factory=dict)   # "fixed"/"moving" -> prompt regions
    metrics: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    outputDir: Optional[str] = None          # the worker's outputs, when temporary files are kept


def enginePath() -> str:
    """The folder that holds the ``SAMRegistrationLib`` package (put on the worker's PYTHONPATH)."""
    import SAMRegistrationLib
    return os.path.dirname(os.path.dirname(os.path.abspath(SAMRegistrationLib.__file__)))


class WorkerUnavailable(RuntimeError):
    """No Python interpreter to run the engine's worker in."""


def findPythonSlicer(applicationDir: Optional[str] = None) -> Optional[str]:
    """Slicer's ``PythonSlicer`` launcher: beside the application's executable (its ``bin``
    folder), else on PATH; None if neither has it."""
    folder = applicationDir if applicationDir is not None else os.path.dirname(os.path.abspath(sys.executable))
    for name in ("PythonSlicer.exe", "PythonSlicer") if os.name == "nt" else ("PythonSlicer",):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("PythonSlicer")


def pythonExecutable() -> str:
    """The interpreter for the worker: PythonSlicer inside Slicer, this interpreter elsewhere.

    Inside Slicer ``sys.executable`` is the application itself, not a Python interpreter, so
    without PythonSlicer the worker cannot start: say so instead of launching the application.
    """
    if not insideSlicerApplication():
        return sys.executable
    found = findPythonSlicer()
    if found is None:
        raise WorkerUnavailable(
            "cannot start the registration: Slicer's Python interpreter 'PythonSlicer' was found neither "
            f"in {os.path.dirname(os.path.abspath(sys.executable))} nor on PATH; the engine runs in that "
            "separate process (reinstall 3D Slicer if the file is missing)")
    return found


@dataclass
class _Run:
    """State of one worker run."""
    inputs: dict
    tempDir: str
    keepTemporaryFiles: bool
    progressCallback: Optional[ProgressCallback]
    logCallback: Optional[LogCallback]
    completedCallback: Optional[Callable]
    done: Optional[dict] = None
    errorMessage: Optional[str] = None
    stderrTail: list = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    result: Optional[RegistrationResult] = None
    error: Optional[str] = None


class SceneRegistrationLogic(TransformToolsMixin):
    """Registers two volume nodes of ``scene`` with the SAMRegistration engine; applies or
    inverts an existing registration's field (``applyDisplacement``, ``invertDisplacement``)."""

    def __init__(self, scene=None, runnerFactory: Optional[Callable[[], ProcessRunner]] = None,
                 pythonExecutable: Optional[str] = None, temporaryRoot: Optional[str] = None) -> None:
        self.scene = scene
        self.runnerFactory = runnerFactory or makeRunner
        self.pythonExecutable = pythonExecutable
        self.temporaryRoot = temporaryRoot
        self._runner: Optional[ProcessRunner] = None
        self._run: Optional[_Run] = None

    # ------------------------------------------------------------------ public API
    @property
    def isRunning(self) -> bool:
        return self._run is not None and not self._run.finished

    def register(self, fixedVolume, movingVolume, outputTransform=None, outputVolume=None,
                 settings: Optional[dict] = None,
                 fixedPositivePoints=None, fixedNegativePoints=None,
                 movingPositivePoints=None, movingNegativePoints=None, autoPrompts: int = 0,
                 fixedSegmentation=None, movingSegmentation=None,
                 fixedMaskSegmentation=None, movingMaskSegmentation=None,
                 outputDisplacementVolume=None, outputJacobianVolume=None,
                 keepTemporaryFiles: bool = False, waitForCompletion: bool = True,
                 progressCallback: Optional[ProgressCallback] = None,
                 logCallback: Optional[LogCallback] = None,
                 completedCallback: Optional[Callable[[Optional[RegistrationResult], Optional[str]], None]] = None,
                 ) -> Optional[RegistrationResult]:
        """Register ``movingVolume`` to ``fixedVolume``.

        ``settings`` are engine settings (see ``SAMRegistrationLib.settings.Settings``; those
        left out keep the engine's defaults). Point lists are markups nodes whose placed points
        become prompts; ``autoPrompts`` > 0 adds that many automatically sampled clicks in the
        moving volume. ``fixedSegmentation``/``movingSegmentation`` (segmentations, matched by
        segment name, or label map volumes) are used to score the result.
        ``fixedMaskSegmentation``/``movingMaskSegmentation`` (the same kinds; may be the scoring
        ones) are the ``assisted`` method's masks: each structure in both is one mask pair.

        With ``waitForCompletion`` (the default, for the Python console and batch scripts) the
        call returns the :class:`RegistrationResult` or raises :class:`RegistrationError`
        (:class:`RegistrationCancelled` after :meth:`cancel`). Otherwise it returns None at once
        and ``completedCallback(result, error)`` reports the end (``error`` is None on success,
        ``"cancelled"`` after a cancel). Raises ValueError for unusable inputs and
        :class:`WorkerUnavailable` when Slicer's PythonSlicer is missing, before starting.
        """
        if self.scene is None:
            raise ValueError("no MRML scene: set logic.scene first")
        if self.isRunning:
            raise RuntimeError("a registration is already running; cancel it first")
        inputs = dict(fixed=fixedVolume, moving=movingVolume, outputTransform=outputTransform,
                      outputVolume=outputVolume, fixedSegmentation=fixedSegmentation,
                      movingSegmentation=movingSegmentation, displacement=outputDisplacementVolume,
                      jacobian=outputJacobianVolume, fixedMask=fixedMaskSegmentation, movingMask=movingMaskSegmentation)
        self._checkInputs(inputs, settings or {})
        prompts = promptSet(fixedVolume, movingVolume, fixedPositivePoints, fixedNegativePoints,
                            movingPositivePoints, movingNegativePoints)
        python = self.pythonExecutable or pythonExecutable()
        tempDir = self.makeTemporaryDirectory("SAMRegistration-")
        try:
            jobPath = self._writeJob(tempDir, inputs, settings or {}, prompts, int(autoPrompts or 0))
        except BaseException:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise
        run = _Run(inputs, tempDir, keepTemporaryFiles, progressCallback, logCallback, completedCallback)
        command = [python, "-m", "SAMRegistrationLib.cli",
                   "worker", "--job", jobPath]
        self._run, self._runner = run, self.runnerFactory()
        self._log(run, f"starting: {' '.join(command)}")
        try:
            self._runner.start(command, lambda stream, line: self._onLine(run, stream, line),
                               lambda status: self._onExit(run, status),
                               env=workerEnvironment(enginePath()), cwd=tempDir)
        except BaseException:
            run.finished = True
            shutil.rmtree(tempDir, ignore_errors=True)
            raise
        if not waitForCompletion:
            return None
        self._runner.wait()
        if run.error == "cancelled":
            raise RegistrationCancelled("registration cancelled")
        if run.error is not None:
            raise RegistrationError(run.error)
        return run.result

    def makeTemporaryDirectory(self, prefix: str) -> str:
        """A new folder for one run under ``temporaryRoot`` (created if missing) or the system's."""
        if self.temporaryRoot:
            os.makedirs(self.temporaryRoot, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=self.temporaryRoot)

    @property
    def temporaryDirectory(self) -> Optional[str]:
        """The folder of the current (or last) run: inputs, ``job.json`` and the worker's ``out/``."""
        return self._run.tempDir if self._run is not None else None

    def waitForCompletion(self, timeout: Optional[float] = None) -> bool:
        """Block until a run started with ``waitForCompletion=False`` ends (outside Slicer nothing
        else polls the worker); returns False if ``timeout`` seconds passed first."""
        if not self.isRunning:
            return True
        self._runner.wait(timeout)
        return not self.isRunning

    def cancel(self) -> None:
        """Stop the running registration and return at once (never blocks the GUI): the worker is
        asked to stop and the polling reaps it; then its partial outputs and the temporary
        folder are removed, no node is added, and the run ends as cancelled."""
        if not self.isRunning:
            return
        self._run.cancelled = True
        self._runner.cancel()

    def checkerboardVolume(self, fixedVolume, warpedVolume, outputVolume=None, squareMm: float = 16.0):
        """A volume alternating fixed and warped in squares of ``squareMm`` (on the fixed grid)."""
        nodes.checkVolume(fixedVolume, "fixed")
        nodes.checkVolume(warpedVolume, "warped")
        board = nodes.checkerboard(nodes.arrayFromVolume(fixedVolume), nodes.arrayFromVolume(warpedVolume),
                                   fixedVolume.GetSpacing(), squareMm)
        if outputVolume is None:
            outputVolume = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                        self.scene.GenerateUniqueName("Checkerboard"))
        nodes.setVolumeArray(outputVolume, board, fixedVolume)
        outputVolume.SetAndObserveTransformNodeID(fixedVolume.GetTransformNodeID())
        return outputVolume

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _checkInputs(inputs: dict, settings: dict) -> None:
        nodes.checkVolume(inputs["fixed"], "fixed")
        nodes.checkVolume(inputs["moving"], "moving")
        if inputs["fixed"] is inputs["moving"]:
            raise ValueError("the fixed and moving volumes are the same node; choose two different volumes")
        for purpose, fixedSeg, movingSeg in (("scoring", inputs["fixedSegmentation"], inputs["movingSegmentation"]),
                                             ("masks", inputs["fixedMask"], inputs["movingMask"])):
            if (fixedSeg is None) != (movingSeg is None):
                raise ValueError(f"{purpose} needs both a fixed and a moving segmentation (or neither)")
            if fixedSeg is not None:
                kinds = {type(n) for n in (fixedSeg, movingSeg)}
                if not (all(isinstance(n, vtkMRMLSegmentationNode) for n in (fixedSeg, movingSeg))
                        or all(isinstance(n, vtkMRMLLabelMapVolumeNode) for n in (fixedSeg, movingSeg))):
                    raise ValueError(f"give both {purpose} inputs as segmentations or both as label map volumes "
                                     f"(got {', '.join(sorted(k.__name__ for k in kinds))})")
        if inputs["fixedMask"] is not None and settings.get("method") != "assisted":
            raise ValueError("mask segmentations guide the assisted method only "
                             f"(the method is {settings.get('method') or 'the default'})")
        for role in ("outputVolume", "displacement", "jacobian"):
            node = inputs[role]
            if node is not None and node in (inputs["fixed"], inputs["moving"]):
                raise ValueError(f"the output {role} node must not be an input volume")
        from SAMRegistrationLib.errors import InputError
        from SAMRegistrationLib.settings import Settings
        try:
            Settings.from_dict(settings)
        except (InputError, TypeError) as exc:
            raise ValueError(str(exc)) from None

    def _writeJob(self, tempDir: str, inputs: dict, settings: dict, prompts: Optional[dict],
                  autoPrompts: int = 0) -> str:
        job: dict[str, Any] = {"fixed": nodes.writeVolume(inputs["fixed"], os.path.join(tempDir, "fixed.nrrd")),
                               "moving": nodes.writeVolume(inputs["moving"], os.path.join(tempDir, "moving.nrrd")),
                               "output_dir": os.path.join(tempDir, "out"), "settings": settings}
        if inputs["fixedSegmentation"] is not None:
            job["fixed_seg"], job["moving_seg"], labels = self._writeLabelPair(
                tempDir, inputs, inputs["fixedSegmentation"], inputs["movingSegmentation"], "seg", "score")
            if labels:
                job["labels"] = labels
        if inputs["fixedMask"] is not None:
            fixedMask, movingMask, _ = self._writeLabelPair(tempDir, inputs, inputs["fixedMask"], inputs["movingMask"],
                                                            "mask", "use as masks")
            methodParams = {**settings.get("method_params", {}), "fixed_mask": fixedMask, "moving_mask": movingMask}
            job["settings"] = {**settings, "method_params": methodParams}
        if prompts is not None:
            job["prompts"] = prompts
        if autoPrompts > 0:
            job["auto_prompts"] = autoPrompts
        path = os.path.join(tempDir, "job.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(job, handle, indent=1)
        return path

    def _writeLabelPair(self, tempDir: str, inputs: dict, fixedSeg, movingSeg, stem: str,
                        purpose: str) -> tuple[str, str, Optional[list[int]]]:
        """Both segmentations as label files on their volumes' grids: segmentations share label
        values by segment name (label i + 1 = the i-th name in both); label maps as they are.
        Returns the two paths and, for segmentations, the label values."""
        names = None
        if isinstance(fixedSeg, vtkMRMLSegmentationNode):
            names = nodes.commonSegmentNames(fixedSeg, movingSeg)
            if not names:
                raise ValueError(f"the segmentations {fixedSeg.GetName()!r} and {movingSeg.GetName()!r} "
                                 f"share no segment name to {purpose}")
        fixedPath = nodes.writeLabels(self.scene, fixedSeg, inputs["fixed"], os.path.join(tempDir, f"fixed_{stem}.nrrd"),
                                      names)
        movingPath = nodes.writeLabels(self.scene, movingSeg, inputs["moving"],
                                       os.path.join(tempDir, f"moving_{stem}.nrrd"), names)
        return fixedPath, movingPath, (list(range(1, len(names) + 1)) if names else None)

    # ------------------------------------------------------------------ worker events
    @staticmethod
    def _log(run: _Run, line: str) -> None:
        if run.logCallback is not None:
            run.logCallback(line)

    def _onLine(self, run: _Run, stream: str, line: str) -> None:
        if stream == "stderr":
            run.stderrTail = (run.stderrTail + [line])[-20:]
            self._log(run, line)
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self._log(run, line)
            return
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "progress":
            message = str(event.get("message", ""))
            self._log(run, f"[{event.get('stage')}] {message}")
            if run.progressCallback is not None:
                run.progressCallback(str(event.get("stage")), float(event.get("overall") or 0.0), message)
        elif kind == "error":
            run.errorMessage = str(event.get("message") or "unknown error")
            self._log(run, f"error: {run.errorMessage}")
        elif kind == "done":
            run.done = event
        else:
            self._log(run, line)

    def _onExit(self, run: _Run, status: int) -> None:
        try:
            if run.cancelled:
                run.error = "cancelled"
            elif status == 0 and run.done is not None:
                try:
                    run.result = self._loadResults(run)
                except Exception as exc:   # noqa: BLE001 - surfaced as the run's error
                    run.error = f"could not load the registration results: {exc}"
            else:
                if run.errorMessage is not None:       # the worker's own one-line message
                    run.error = run.errorMessage
                else:                                  # it died without one (crash, killed)
                    last = run.stderrTail[-1] if run.stderrTail else "no message"
                    run.error = f"{last} (worker exit status {status})"
        finally:
            if run.keepTemporaryFiles:
                self._log(run, f"temporary files kept in {run.tempDir}")
                if run.result is not None:
                    run.result.outputDir = os.path.join(run.tempDir, "out")
            else:
                shutil.rmtree(run.tempDir, ignore_errors=True)
            run.finished = True
        if run.completedCallback is not None:
            run.completedCallback(run.result, run.error)

    # ------------------------------------------------------------------ results
    def _newNode(self, className: str, name: str, created: list):
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        created.append(node)
        return node

    def _loadRegions(self, out: str, report: dict, inputs: dict, created: list, result: RegistrationResult) -> None:
        """Prompt regions (when prompts were given) become segmentations of their own volume,
        each under that volume's parent transform, so the moving regions follow the moving
        volume (through the registration when no output volume was asked for)."""
        regions = (report.get("resolved") or {}).get("regions") or {}
        for side in ("fixed", "moving"):
            path = os.path.join(out, f"{side}_regions.nii.gz")
            if not regions.get(side) or not os.path.isfile(path):
                continue
            volume = inputs[side]
            node = self._newNode("vtkMRMLSegmentationNode", f"{volume.GetName()}-regions", created)
            names = [str(info.get("label")) for info in regions[side]]
            nodes.readRegions(self.scene, path, node, names)
            node.CreateDefaultDisplayNodes()
            node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
            result.regionSegmentationNodes[side] = node

    def _loadResults(self, run: _Run) -> RegistrationResult:
        inputs = run.inputs
        fixed, moving = inputs["fixed"], inputs["moving"]
        out = os.path.join(run.tempDir, "out")
        with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
            report = json.load(handle)
        fixedFrame = fixed.GetTransformNodeID()   # results live in the fixed volume's own frame
        created: list = []
        try:
            transform = inputs["outputTransform"] or self._newNode(
                "vtkMRMLTransformNode", f"{moving.GetName()}-to-{fixed.GetName()}", created)
            nodes.readTransform(self.scene, os.path.join(out, "displacement.nrrd"), transform)
            transform.SetNodeReferenceID(vtkMRMLTransformNode.GetMovingNodeReferenceRole(), moving.GetID())
            transform.SetNodeReferenceID(vtkMRMLTransformNode.GetFixedNodeReferenceRole(), fixed.GetID())
            result = RegistrationResult(transform, metrics=dict((run.done or {}).get("metrics") or {}), report=report)
            if inputs["displacement"] is not None:   # sampled before the transform gets a parent
                nodes.displacementVolume(self.scene, transform, fixed, inputs["displacement"])
                inputs["displacement"].SetAndObserveTransformNodeID(fixedFrame)
                result.displacementVolumeNode = inputs["displacement"]
            if fixedFrame != transform.GetID():
                transform.SetAndObserveTransformNodeID(fixedFrame)
            warped = inputs["outputVolume"]
            if warped is not None:
                nodes.readVolume(self.scene, os.path.join(out, "warped.nii.gz"), warped)
                warped.SetAndObserveTransformNodeID(fixedFrame)
                result.warpedVolumeNode = warped
            else:   # as Elastix does: without an output volume the moving volume is transformed
                moving.SetAndObserveTransformNodeID(transform.GetID())
            if inputs["jacobian"] is not None:
                nodes.readVolume(self.scene, os.path.join(out, "jacobian.nii.gz"), inputs["jacobian"])
                inputs["jacobian"].SetAndObserveTransformNodeID(fixedFrame)
                result.jacobianVolumeNode = inputs["jacobian"]
            self._loadRegions(out, report, inputs, created, result)
            return result
        except BaseException:
            for node in created:
                self.scene.RemoveNode(node)
            raise
