"""SAMRegistration: deformable registration of two volumes with Segment-Anything-family features.

The widget only moves values between the panel and the logic. The logic is the scene logic of
``SlicerSAMRegistrationLib`` bound to ``slicer.mrmlScene``; it runs the engine
(``SAMRegistrationLib``) in a separate PythonSlicer process. Nothing here imports torch or the
engine's heavy modules: they are installed on the first Apply and only the worker imports them.

Python console::

    logic = slicer.util.getModuleLogic("SAMRegistration")   # or SAMRegistrationLogic()
    result = logic.register(fixedVolume, movingVolume, settings={"encoder": "mind"})
    result.transformNode, result.metrics
"""
import functools
import importlib.util
import logging
import os
import sys
from typing import Annotated, Optional, Union

import ctk
import qt
import vtk

import slicer
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTransformNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:   # Slicer without i18n support
    def _(text):
        return text

    def translate(context, text):
        return text


def _addEngineToPath():
    """Run from the source tree, the engine package sits beside this module's folder, not in it."""
    if importlib.util.find_spec("SAMRegistrationLib") is None:
        sourceRoot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isdir(os.path.join(sourceRoot, "SAMRegistrationLib")):
            sys.path.insert(0, sourceRoot)


_addEngineToPath()

from SlicerSAMRegistrationLib.compatibility import runningSlicerVersion, unsupportedReason  # noqa: E402

#: why this Slicer cannot run the module (too old), or None
UNSUPPORTED = unsupportedReason(runningSlicerVersion(slicer.app), sys.version_info)

if UNSUPPORTED is None:
    from SlicerSAMRegistrationLib import advanced, dependencies, widget_helpers  # noqa: E402
    from SlicerSAMRegistrationLib.scene_logic import SceneRegistrationLogic  # noqa: E402
else:   # the rest of the module needs a newer Python: load, and say why it cannot run
    logging.error(UNSUPPORTED)

    class SceneRegistrationLogic:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(UNSUPPORTED)


class SAMRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAM Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["SAMRegistration developers"]
        self.parent.helpText = _(
            "Deformable registration of CT and MRI volumes with Segment-Anything-family foundation features "
            "(LiteMedSAM, SAM, MedSAM) fused with MIND-SSC descriptors, optimised with ConvexAdam in physical "
            "space. Choose a fixed and a moving volume and press Apply: the result is a transform, a warped "
            "volume and, optionally, a displacement field and a Jacobian map. Point prompts and segmentations "
            "are optional. Required Python packages (PyTorch and a few others) are installed on the first run. "
            "Requires 3D Slicer 5.10 or later. "
            'See <a href="https://github.com/SAMRegistration/SlicerSAMRegistration">the project page</a>.')
        self.parent.acknowledgementText = _(
            "Uses LiteMedSAM and MedSAM (Bo Wang lab), Segment Anything (Meta AI), MIND-SSC (Heinrich et al.) and "
            "ConvexAdam (Siebert, Hansen and Heinrich). The module layout follows the 3D Slicer scripted-module "
            "template; the background run and Apply/Cancel button follow SlicerElastix and SlicerMONAIAuto3DSeg.")


@parameterNodeWrapper
class SAMRegistrationParameterNode:
    """Everything the panel shows. 0 in spacing / slice step means automatic; an empty encoder
    means no preset has been applied yet (the widget then applies the default preset).
    ``advancedSettings`` is the Advanced form's JSON (``SlicerSAMRegistrationLib/advanced.py``):
    the engine parameters that differ from their defaults, nested by section; empty in scenes
    saved before the form existed (the preset's values then apply).

    A union of node types must include None (``Optional``): the wrapper writes every field's
    default, None for nodes, when it first wraps a node, and a union without None has no
    serializer for it. Plain node types accept None already."""
    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedSegmentation: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]
    movingSegmentation: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]
    segmentationsAsMasks: bool = False
    fixedPositivePoints: vtkMRMLMarkupsFiducialNode
    fixedNegativePoints: vtkMRMLMarkupsFiducialNode
    movingPositivePoints: vtkMRMLMarkupsFiducialNode
    movingNegativePoints: vtkMRMLMarkupsFiducialNode
    autoPrompts: Annotated[int, WithinRange(0, 32)] = 0
    preset: str = "balanced"
    encoder: str = ""
    method: str = ""
    device: str = "auto"
    spacing: Annotated[float, WithinRange(0.0, 20.0)] = 0.0
    sliceStep: Annotated[int, WithinRange(0, 64)] = 0
    pcaDims: Annotated[int, WithinRange(1, 256)] = 12
    lambdaReg: Annotated[float, WithinRange(0.0, 100.0)] = 0.3
    iterations: Annotated[int, WithinRange(0, 2000)] = 50
    advancedSettings: str = ""
    checkpointPath: str = ""
    keepTemporaryFiles: bool = False
    outputTransform: vtkMRMLTransformNode
    outputVolume: vtkMRMLScalarVolumeNode
    outputDisplacementVolume: Optional[Union[vtkMRMLVectorVolumeNode, vtkMRMLScalarVolumeNode]]
    outputJacobianVolume: vtkMRMLScalarVolumeNode
    showCheckerboard: bool = False


POINT_EVENTS = (vtkMRMLMarkupsNode.PointAddedEvent, vtkMRMLMarkupsNode.PointRemovedEvent,
                vtkMRMLMarkupsNode.PointPositionDefinedEvent, vtkMRMLMarkupsNode.PointPositionUndefinedEvent)


class SAMRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._cancelling = False
        self._pointObservations = {}   # prompt field -> (point list node, callback)
        self._checkerboardNode = None
        self._advancedFormKey = None   # (encoder, method) the generated form was built for
        self._advancedForm = None      # the generated form's widget
        self._advancedDocs = None      # its engine ParameterDocs by section (None: no form)
        self._advancedEditors = {}     # setting path -> (FieldSpec, editor widget)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        if UNSUPPORTED:
            message = qt.QLabel(UNSUPPORTED)
            message.wordWrap = True
            self.layout.addWidget(message)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAMRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SAMRegistrationLogic()

        widget_helpers.fillChoices(self.ui)
        for comboName, field in widget_helpers.CHOICE_COMBOS.items():
            getattr(self.ui, comboName).currentTextChanged.connect(functools.partial(self.onChoiceChanged, field))
        self.ui.checkpointPathLineEdit.currentPathChanged.connect(self.onCheckpointPathChanged)
        for row in widget_helpers.PROMPT_ROWS:
            placeWidget = getattr(self.ui, row.placeWidget)
            placeWidget.buttonsVisible = False
            placeWidget.placeButton().show()
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            getattr(self.ui, row.selector).currentNodeChanged.connect(functools.partial(self.onPointListSelected, row))
            getattr(self.ui, row.clearButton).clicked.connect(functools.partial(self.onClearPoints, row))
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.logic is not None and self.logic.isRunning:
            self.logic.cancel()
        self.removeObservers()

    def enter(self):
        if self.logic is not None:
            self._advancedFormKey = None   # rebuilt: the engine may have been installed meanwhile
            self.initializeParameterNode()

    def exit(self):
        self._disconnectParameterNode()   # keeps the node: a background run still reports into it

    def onSceneStartClose(self, caller, event):
        if self.logic.isRunning:
            self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        parameters = self._parameterNode
        if not parameters.encoder:
            self._applyPreset(parameters.preset or "balanced")
        # preselect two different volumes (label maps and vector volumes are not candidates)
        volumes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if node.GetClassName() == "vtkMRMLScalarVolumeNode"]
        if parameters.fixedVolume is None and volumes:
            parameters.fixedVolume = volumes[0]
        if parameters.movingVolume is None or parameters.movingVolume is parameters.fixedVolume:
            others = [node for node in volumes if node is not parameters.fixedVolume]
            if others:
                parameters.movingVolume = others[0]

    def _disconnectParameterNode(self):
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def setParameterNode(self, parameterNode):
        self._disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None):
        """Write the hand-synced widgets (choice combos, checkpoint path) and button states."""
        parameters = self._parameterNode
        if parameters is None:
            return
        self._updatingGui = True
        try:
            for comboName, field in widget_helpers.CHOICE_COMBOS.items():
                combo, value = getattr(self.ui, comboName), getattr(parameters, field)
                if value and combo.currentText != value:
                    if combo.findText(value) < 0:   # e.g. a name saved in a scene by another version
                        combo.addItem(value)
                    combo.setCurrentIndex(combo.findText(value))
            if self.ui.checkpointPathLineEdit.currentPath != parameters.checkpointPath:
                self.ui.checkpointPathLineEdit.currentPath = parameters.checkpointPath
            if (parameters.encoder, parameters.method) != self._advancedFormKey:
                self._buildAdvancedForm(parameters.encoder, parameters.method)
            self._showAdvancedValues()
        finally:
            self._updatingGui = False
        self.ui.checkpointPathLineEdit.enabled = widget_helpers.needsCheckpoint(parameters.encoder)
        self._updateApplyButton()

    def onChoiceChanged(self, field, text, *args):
        if self._updatingGui or self._parameterNode is None or not text:
            return
        if field == "preset":
            self._applyPreset(text)
        else:   # a new encoder or method also drops the Advanced values it lacks
            with slicer.util.NodeModify(self._parameterNode):
                for name, value in widget_helpers.choiceValues(self._parameterNode, field, text).items():
                    setattr(self._parameterNode, name, value)

    def onCheckpointPathChanged(self, path, *args):
        if not self._updatingGui and self._parameterNode is not None:
            self._parameterNode.checkpointPath = path

    def _applyPreset(self, preset):
        """Selecting a preset fills encoder, method and the advanced fields with its values."""
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.preset = preset
            for field, value in widget_helpers.presetValues(preset).items():
                setattr(self._parameterNode, field, value)

    # ------------------------------------------------------------------ generated Advanced form
    def _buildAdvancedForm(self, encoder, method):
        """Replace the generated form with one row per engine parameter of ``encoder`` and
        ``method`` (``advanced.formSpecs``), or a line saying why there is none."""
        self._advancedFormKey = (encoder, method)
        if self._advancedForm is not None:
            self.ui.advancedParametersWidget.layout().removeWidget(self._advancedForm)
            self._advancedForm.hide()
            self._advancedForm.deleteLater()
        self._advancedForm, self._advancedDocs, self._advancedEditors = None, None, {}
        try:
            docs = advanced.sectionDocs(encoder, method)
        except (ImportError, ValueError) as exc:
            self._setAdvancedMessage(advanced.UNAVAILABLE if isinstance(exc, ImportError) else str(exc))
            docs = None
        # the basic fields whose setting the method lacks (pyramid: iterations) are disabled
        for field, offered in widget_helpers.offeredBasicFields(docs).items():
            getattr(self.ui, f"{field}SpinBox").enabled = offered
        if docs is None:
            return
        self._advancedDocs = docs
        form = qt.QWidget()
        formLayout = qt.QVBoxLayout(form)
        specs = advanced.formSpecs(docs, skip=widget_helpers.BASIC_PATHS)
        for section, sectionSpecs in advanced.groupedSpecs(specs):
            box = ctk.ctkCollapsibleButton()
            box.text = advanced.sectionTitle(section, method)
            rows = qt.QFormLayout(box)
            for spec in sectionSpecs:
                label = qt.QLabel(spec.label)
                label.toolTip = spec.toolTip
                editor = self._advancedEditor(spec)
                rows.addRow(label, editor)
                self._advancedEditors[spec.key] = (spec, editor)
            formLayout.addWidget(box)
        self.ui.advancedParametersWidget.layout().addWidget(form)
        self._advancedForm = form

    def _advancedEditor(self, spec):
        """The Qt widget of one generated row; its changes go to ``_onAdvancedEdited``."""
        slot = functools.partial(self._onAdvancedEdited, spec.key)
        if spec.kind in ("int", "float"):
            editor = qt.QSpinBox() if spec.kind == "int" else qt.QDoubleSpinBox()
            if spec.kind == "float":
                editor.decimals = spec.decimals
            editor.setRange(spec.minimum, spec.maximum)
            editor.singleStep = spec.singleStep
            editor.value = advanced.widgetValue(spec, spec.default)
            editor.valueChanged.connect(slot)
        elif spec.kind == "bool":
            editor = qt.QCheckBox()
            editor.checked = advanced.widgetValue(spec, spec.default)
            editor.toggled.connect(slot)
        elif spec.kind == "choice":
            editor = qt.QComboBox()
            for choice in spec.choices:
                editor.addItem(str(choice))
            editor.currentIndex = advanced.widgetValue(spec, spec.default)
            editor.currentIndexChanged.connect(slot)
        else:
            editor = qt.QLineEdit()
            editor.placeholderText = spec.placeholder
            editor.text = advanced.widgetValue(spec, spec.default)
            editor.editingFinished.connect(slot)
        editor.objectName = spec.key
        editor.toolTip = spec.toolTip
        return editor

    @staticmethod
    def _editorValue(spec, editor):
        if spec.kind in ("int", "float"):
            return editor.value
        if spec.kind == "bool":
            return editor.checked
        if spec.kind == "choice":
            return editor.currentIndex
        return editor.text

    def _onAdvancedEdited(self, key, *args):
        if self._updatingGui or self._parameterNode is None or key not in self._advancedEditors:
            return
        spec, editor = self._advancedEditors[key]
        self._parameterNode.advancedSettings = widget_helpers.advancedEdit(
            self._parameterNode, spec, self._editorValue(spec, editor))

    def _showAdvancedValues(self):
        """Show the stored values in the generated form, and the engine's complaint, if any."""
        parameters = self._parameterNode
        try:
            values = widget_helpers.advancedValues(parameters)
            message = advanced.problem(widget_helpers.settingsFromParameters(parameters))
        except ValueError as exc:
            values, message = {}, str(exc)
        for spec, editor in self._advancedEditors.values():
            value = advanced.currentValue(values, spec)
            if spec.kind == "text":   # leave the typed text alone while it means the same
                if not advanced.sameValue(advanced.editedValue(spec, editor.text), value):
                    editor.text = advanced.widgetValue(spec, value)
            elif spec.kind in ("int", "float"):
                editor.value = advanced.widgetValue(spec, value)
            elif spec.kind == "bool":
                editor.checked = advanced.widgetValue(spec, value)
            else:
                editor.currentIndex = advanced.widgetValue(spec, value)
        if self._advancedDocs is not None:
            self._setAdvancedMessage(message or "")

    def _setAdvancedMessage(self, text):
        self.ui.advancedParametersLabel.text = text
        self.ui.advancedParametersLabel.visible = bool(text)

    # ------------------------------------------------------------------ point prompts
    def onPointListSelected(self, row, node, *args):
        observed, callback = self._pointObservations.pop(row.parameter, (None, None))
        if observed is not None:
            for event in POINT_EVENTS:
                self.removeObserver(observed, event, callback)
        getattr(self.ui, row.placeWidget).setCurrentNode(node)
        if node is not None:
            if node.GetDisplayNode() is None:
                node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor(*row.color)
            node.GetDisplayNode().SetColor(*row.color)
            callback = functools.partial(self._updatePointCount, row)
            for event in POINT_EVENTS:
                self.addObserver(node, event, callback)
            self._pointObservations[row.parameter] = (node, callback)
        self._updatePointCount(row)

    def _updatePointCount(self, row, *args):
        node = getattr(self.ui, row.selector).currentNode()
        count = node.GetNumberOfDefinedControlPoints() if node is not None else 0
        getattr(self.ui, row.countLabel).text = widget_helpers.pointCountText(count)

    def onClearPoints(self, row, *args):
        node = getattr(self.ui, row.selector).currentNode()
        if node is not None:
            node.RemoveAllControlPoints()

    # ------------------------------------------------------------------ run
    def _updateApplyButton(self):
        parameters = self._parameterNode
        hasInputs = bool(parameters and parameters.fixedVolume and parameters.movingVolume
                         and parameters.fixedVolume is not parameters.movingVolume)
        text, enabled, toolTip = widget_helpers.applyButtonState(self.logic.isRunning, self._cancelling, hasInputs)
        self.ui.applyButton.text = text
        self.ui.applyButton.enabled = enabled
        self.ui.applyButton.toolTip = toolTip

    def onApplyButton(self):
        if self.logic.isRunning:
            self._cancelling = True
            self._updateApplyButton()
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the registration."), waitCursor=False):
            if self._readyToRun():
                if self._advancedDocs is None:   # the engine was just installed: list its parameters
                    self._advancedFormKey = None
                    self.onParameterNodeModified()
                self._startRun()

    def _readyToRun(self):
        """Install missing requirements and check the encoder's checkpoint; False stops the run."""
        try:
            dependencies.ensureDependencies(askConfirmation=True)
        except dependencies.DependencyError as exc:
            if exc.restartRequired and slicer.util.confirmYesNoDisplay(f"{exc}\n\n" + _("Restart Slicer now?")):
                slicer.util.restart()
            elif not exc.restartRequired:
                slicer.util.errorDisplay(str(exc))
            return False
        encoder, path = self._parameterNode.encoder, self._parameterNode.checkpointPath
        message = dependencies.checkpointStatus(encoder, path)
        if message and not path and dependencies.checkpointUrl(encoder):
            if not slicer.util.confirmYesNoDisplay(message + "\n\n" + _("Download it now?")):
                return False
            self._downloadCheckpoint(encoder)
            message = dependencies.checkpointStatus(encoder, path)
        if message:
            slicer.util.errorDisplay(message)
            return False
        return True

    def _downloadCheckpoint(self, encoder):
        dialog = slicer.util.createProgressDialog(
            labelText=_("Downloading the {encoder} checkpoint...").format(encoder=encoder), maximum=100)

        def progress(received, total):
            if total:
                dialog.value = int(100 * received / total)
            dialog.labelText = _("Downloading the {encoder} checkpoint: {mb} MB").format(
                encoder=encoder, mb=received // 1_000_000)
            slicer.app.processEvents()
            return not dialog.wasCanceled
        try:
            target = dependencies.downloadCheckpoint(encoder, progress)
        finally:
            dialog.close()
        self._onLog(_("Checkpoint saved as {path}").format(path=target))

    def _startRun(self):
        parameters = self._parameterNode
        self.ui.logTextEdit.clear()
        self.ui.metricsLabel.text = ""
        self._onProgress("start", 0.0, "")
        self.ui.progressBar.show()
        fixedMasks, movingMasks = widget_helpers.maskSegmentations(parameters)
        try:
            self.logic.register(
                parameters.fixedVolume, parameters.movingVolume,
                outputTransform=parameters.outputTransform, outputVolume=parameters.outputVolume,
                settings=widget_helpers.settingsFromParameters(parameters),
                fixedPositivePoints=parameters.fixedPositivePoints, fixedNegativePoints=parameters.fixedNegativePoints,
                movingPositivePoints=parameters.movingPositivePoints,
                movingNegativePoints=parameters.movingNegativePoints, autoPrompts=parameters.autoPrompts,
                fixedSegmentation=parameters.fixedSegmentation, movingSegmentation=parameters.movingSegmentation,
                fixedMaskSegmentation=fixedMasks, movingMaskSegmentation=movingMasks,
                outputDisplacementVolume=parameters.outputDisplacementVolume,
                outputJacobianVolume=parameters.outputJacobianVolume,
                keepTemporaryFiles=parameters.keepTemporaryFiles, waitForCompletion=False,
                progressCallback=self._onProgress, logCallback=self._onLog, completedCallback=self._onCompleted)
        except BaseException:
            self.ui.progressBar.hide()
            raise
        finally:
            self._updateApplyButton()

    def _onProgress(self, stage, overall, message):
        value, progressFormat = widget_helpers.progressDisplay(stage, overall)
        self.ui.progressBar.value = value
        self.ui.progressBar.format = progressFormat
        self.ui.progressBar.toolTip = message

    def _onLog(self, line):
        self.ui.logTextEdit.appendPlainText(str(line))

    def _onCompleted(self, result, error):
        self._cancelling = False
        self.ui.progressBar.hide()
        self._updateApplyButton()
        if error == "cancelled":
            self._onLog(_("Registration cancelled."))
        elif error is not None:
            slicer.util.errorDisplay(_("Registration failed: {message}").format(message=error))
        elif result is not None:
            with slicer.util.tryWithErrorDisplay(_("Failed to show the registration results.")):
                self._showResult(result)

    def _showResult(self, result):
        parameters = self._parameterNode
        if parameters is None:
            return
        with slicer.util.NodeModify(parameters):
            parameters.outputTransform = result.transformNode
            if result.warpedVolumeNode is not None:
                parameters.outputVolume = result.warpedVolumeNode
            if result.displacementVolumeNode is not None:
                parameters.outputDisplacementVolume = result.displacementVolumeNode
            if result.jacobianVolumeNode is not None:
                parameters.outputJacobianVolume = result.jacobianVolumeNode
        regions = widget_helpers.formatRegions(result.report)
        self.ui.metricsLabel.text = widget_helpers.formatMetrics(result.metrics) + ("\n" + regions if regions else "")
        fixed = parameters.fixedVolume
        # without an output volume the logic places the moving volume under the transform
        registered = result.warpedVolumeNode or parameters.movingVolume
        if parameters.showCheckerboard and result.warpedVolumeNode is not None:
            if self._checkerboardNode is not None and self._checkerboardNode.GetScene() is None:
                self._checkerboardNode = None
            self._checkerboardNode = self.logic.checkerboardVolume(fixed, result.warpedVolumeNode,
                                                                   self._checkerboardNode)
            slicer.util.setSliceViewerLayers(background=self._checkerboardNode, foreground=None, fit=True)
        else:
            if parameters.showCheckerboard:
                self._onLog(_("The checkerboard needs an output volume; select or create one in Outputs."))
            slicer.util.setSliceViewerLayers(background=fixed, foreground=registered, foregroundOpacity=0.5, fit=True)


class SAMRegistrationLogic(ScriptedLoadableModuleLogic, SceneRegistrationLogic):
    """The scene logic on ``slicer.mrmlScene``; usable from the Python console without the widget.

    ``register(fixedVolume, movingVolume, ...)`` (see ``SceneRegistrationLogic.register``) waits
    for the result by default; the widget runs it in the background with callbacks.
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        SceneRegistrationLogic.__init__(self, scene=scene if scene is not None else slicer.mrmlScene,
                                        pythonExecutable=None)   # PythonSlicer, found at run time

    def getParameterNode(self):
        return SAMRegistrationParameterNode(super().getParameterNode())

    def register(self, fixedVolume, movingVolume, *args, **kwargs):
        """Install the engine's requirements if needed (asking first), then
        ``SceneRegistrationLogic.register(fixedVolume, movingVolume, ...)``."""
        dependencies.ensureDependencies(askConfirmation=not slicer.app.testingEnabled())
        return SceneRegistrationLogic.register(self, fixedVolume, movingVolume, *args, **kwargs)


class SAMRegistrationTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: ``slicer_add_python_unittest`` or the module's Reload and Test button."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_parameterNodeDefaults()
        self.setUp()
        self.test_registerFastPreset()

    @staticmethod
    def _phantom(shift=(0, 0, 0)):
        """A 40x48x44 (k, j, i) body with blobs of several intensities, shifted by whole voxels."""
        import numpy as np
        k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in (40, 48, 44)), indexing="ij")
        array = np.where((i / 0.85) ** 2 + (j / 0.8) ** 2 + (k / 0.8) ** 2 < 1, 300.0, 0.0)
        for (ci, cj, ck), radius, value in (((0.3, 0.2, 0.1), 0.25, 800.0), ((-0.35, -0.2, 0.2), 0.2, 550.0),
                                            ((0.0, -0.3, -0.35), 0.18, 1000.0), ((-0.2, 0.35, -0.1), 0.15, 650.0)):
            array[(i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2 < radius ** 2] = value
        return np.roll(array, shift, axis=(0, 1, 2)).astype(np.float32)

    def _volume(self, array, name):
        import numpy as np
        ijkToRas = np.diag([-2.0, -2.0, 2.5, 1.0])   # LPS-like axes, anisotropic voxels
        ijkToRas[:3, 3] = (40.0, 45.0, -50.0)
        return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRas, name=name)

    def test_parameterNodeDefaults(self):
        self.delayDisplay("Parameter node and settings")
        logic = SAMRegistrationLogic()
        parameters = logic.getParameterNode()
        self.assertEqual(parameters.spacing, 0.0)
        for field, value in widget_helpers.presetValues("balanced").items():
            setattr(parameters, field, value)
        settings = widget_helpers.settingsFromParameters(parameters)
        self.assertIsNone(settings["spacing"])
        self.assertIsNone(dependencies.checkpointStatus("mind", None))
        self.delayDisplay("Test passed")

    def test_registerFastPreset(self):
        self.delayDisplay("Registering two small volumes with the fast preset")
        from SlicerSAMRegistrationLib import choices
        fixed = self._volume(self._phantom(), "SAMRegistrationTest fixed")
        moving = self._volume(self._phantom(shift=(1, 2, -2)), "SAMRegistrationTest moving")
        warped = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "SAMRegistrationTest warped")
        logic = SAMRegistrationLogic()
        result = logic.register(fixed, moving, outputVolume=warped,
                                settings=choices.settings_from("fast", device="cpu"), waitForCompletion=True)
        self.assertIsInstance(result.transformNode, vtkMRMLTransformNode)
        self.assertIsNotNone(result.transformNode.GetTransformFromParent())
        self.assertIs(result.warpedVolumeNode, warped)
        self.assertEqual(slicer.util.arrayFromVolume(warped).shape, slicer.util.arrayFromVolume(fixed).shape)
        self.assertIn("fold_percent", result.metrics)
        self.delayDisplay("Test passed")
