"""The module as 3D Slicer loads it: Slicer's own Python layers, headless.

``slicer_harness`` puts Slicer v5.12.3's ``parameterNodeWrapper``, ``ScriptedLoadableModule``
and ``i18n`` (from ``../shared/slicer-python``) on slicer-core's real MRML, with small Qt
stand-ins. These tests import ``SAMRegistration.py`` itself, build its parameter node on a real
scene, connect the ``.ui`` file's bound widgets, set up the panel through
``slicer.util.getModuleLogic`` (as the batch console in docs/slicer.md does), construct the logic
directly, run the module's own ``SAMRegistrationTest`` and cancel a run from the panel.
"""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import slicer_harness

REASON = slicer_harness.unavailableReason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

UI_FILE = slicer_harness.MODULE_DIR / "Resources" / "UI" / "SAMRegistration.ui"
FAST = {"encoder": "mind", "method_params": {"iterations": 30}}


@pytest.fixture
def harness(tmp_path):
    h = slicer_harness.SlicerHarness(tmp_path).install()
    try:
        h.loadModule()
        yield h
    finally:
        h.uninstall()


def _slicer():
    import slicer
    return slicer


def _volume(name: str, shift=(0, 0, 0)):
    """A small phantom volume node (the module's self-test phantom)."""
    test = sys.modules["SAMRegistration"].SAMRegistrationTest
    return test._volume(test(), test._phantom(shift), name)


def _boundWidgets() -> dict[str, str]:
    """SlicerParameterName -> widget class, from the .ui file."""
    bound = {}
    for widget in ET.parse(UI_FILE).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("class")
    return bound


# ----------------------------------------------------------------------------- the layers
def test_slicer_layers_are_slicers_own_files(harness):
    slicer = _slicer()
    import ctk
    import qt
    for name, path in harness.layers.items():
        assert Path(sys.modules[name].__file__).resolve() == Path(path)
        assert Path(path).is_relative_to(slicer_harness.SLICER_PYTHON.resolve())
    # the module sees those layers, slicer-core's MRML and util, and only the Qt side is stood in
    module = harness.module
    assert module.parameterNodeWrapper.__module__ == "slicer.parameterNodeWrapper.wrapper"
    assert module.ScriptedLoadableModuleLogic.__module__ == "slicer.ScriptedLoadableModule"
    assert type(slicer.mrmlScene).__name__ == "vtkMRMLScene"
    assert qt.__doc__.startswith("Stand-in") and ctk.__doc__.startswith("Stand-in")
    print("\nSlicer layers run:", ", ".join(f"{n} ({p})" for n, p in harness.layers.items()))


def test_module_registers_itself_as_slicer_expects(harness):
    slicer = _slicer()
    moduleObject = harness.moduleObject
    assert moduleObject.title == "SAM Registration"
    assert moduleObject.categories == ["Registration"]
    assert "5.10" in moduleObject.helpText
    assert Path(moduleObject.icon.path).is_file()
    assert "SAMRegistration" in slicer.selfTests
    assert harness.module.UNSUPPORTED is None


# ----------------------------------------------------------------------------- parameter node
def test_parameter_node_builds_on_a_real_scene_with_defaults(harness):
    """Defect 1: wrapping the node writes every default; a union without None raised TypeError."""
    slicer = _slicer()
    logic = harness.module.SAMRegistrationLogic()
    parameters = logic.getParameterNode()
    node = parameters.parameterNode
    assert node.IsA("vtkMRMLScriptedModuleNode") and node.GetScene() is slicer.mrmlScene
    assert node.GetAttribute("ModuleName") == "SAMRegistration"
    for name in ("fixedSegmentation", "movingSegmentation", "outputDisplacementVolume", "fixedVolume"):
        assert getattr(parameters, name) is None
    assert (parameters.spacing, parameters.pcaDims, parameters.preset, parameters.autoPrompts) == (0.0, 12, "balanced", 0)
    # the same MRML node again (what every enter() does) reads the same values
    again = logic.getParameterNode()
    assert again.parameterNode is node and again.preset == "balanced"


def _valueFor(name: str, datatype, scene):
    """A valid value of a parameter's type: a new node of each allowed class for node fields."""
    from slicer.parameterNodeWrapper import getNodeTypes, isNodeOrUnionOfNodes, unannotatedType
    if isNodeOrUnionOfNodes(datatype):
        return [scene.AddNewNodeByClass(cls, f"{name}-{cls}") for cls in getNodeTypes(datatype)]
    base = unannotatedType(datatype)
    return {bool: [True, False], int: [3], float: [1.25], str: ["litemedsam"]}[base]


def test_every_field_writes_and_reads_back(harness):
    slicer = _slicer()
    module = harness.module
    parameters = module.SAMRegistrationLogic().getParameterNode()
    fields = module.SAMRegistrationParameterNode.allParameters
    assert set(_boundWidgets()) <= set(fields)
    for name in fields:
        datatype = parameters.dataType(name)
        for value in _valueFor(name, datatype, slicer.mrmlScene):
            setattr(parameters, name, value)
            assert getattr(parameters, name) is value if hasattr(value, "GetID") else getattr(parameters, name) == value
        if hasattr(value, "GetID"):   # node fields clear back to None
            setattr(parameters, name, None)
            assert getattr(parameters, name) is None
            setattr(parameters, name, value)
    # values live in MRML: a fresh wrapper of the same node reads them back
    fresh = module.SAMRegistrationParameterNode(parameters.parameterNode)
    for name in fields:
        assert getattr(fresh, name) == getattr(parameters, name), name
    # and the wrapper's validators hold
    with pytest.raises(ValueError):
        parameters.autoPrompts = 33
    with pytest.raises(ValueError):
        parameters.spacing = -1.0
    with pytest.raises(TypeError):
        parameters.fixedSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLModelNode")


def test_ui_bound_widgets_follow_the_parameter_node(harness):
    """connectGui on the .ui file's own widgets (stand-ins of its classes, its SlicerParameterName
    properties): parameter -> widget and widget -> parameter for every bound field."""
    slicer = _slicer()
    parameters = harness.module.SAMRegistrationLogic().getParameterNode()
    uiWidget = slicer.util.loadUI(str(UI_FILE))
    ui = slicer.util.childWidgetVariables(uiWidget)
    uiWidget.setMRMLScene(slicer.mrmlScene)           # reaches the selectors through the .ui's connections
    tag = parameters.connectGui(ui)
    connected = parameters._parameterGUIs[tag]
    assert set(connected) == set(_boundWidgets())
    widgets = {name: connector.widget() for name, connector in connected.items()}
    for name, widget in widgets.items():
        assert type(widget).__name__ == _boundWidgets()[name]
        if widget.className() == "qMRMLNodeComboBox":
            node = _valueFor(name, parameters.dataType(name), slicer.mrmlScene)[-1]
            parameters.setValue(name, node)
            assert widget.currentNode() is node, name
            other = _valueFor(name, parameters.dataType(name), slicer.mrmlScene)[0]
            widget.setCurrentNode(other)
            assert parameters.getValue(name) is other, name
        elif widget.className() == "QCheckBox":
            parameters.setValue(name, True)
            assert widget.checked is True
            widget.checked = False
            assert parameters.getValue(name) is False
        else:                                          # spin boxes
            parameters.setValue(name, 7 if widget.className() == "QSpinBox" else 2.5)
            assert widget.value == parameters.getValue(name), name
            widget.value = 5
            assert parameters.getValue(name) == 5, name
    # the range annotations reached the widgets
    assert (widgets["autoPrompts"].minimum, widgets["autoPrompts"].maximum) == (0, 32)
    parameters.disconnectGui(tag)
    parameters.pcaDims = 20
    assert widgets["pcaDims"].value != 20


# ----------------------------------------------------------------------------- the panel
def test_panel_sets_up_through_get_module_logic_and_follows_the_scene(harness):
    """``slicer.util.getModuleLogic`` builds the panel (setup) as Slicer does; enter, scene close,
    exit and module unload run on the real layers."""
    slicer = _slicer()
    fixed, moving = _volume("fixed"), _volume("moving", (1, 0, 0))
    logic = slicer.util.getModuleLogic("SAMRegistration")
    assert type(logic).__name__ == "SAMRegistrationLogic" and logic.scene is slicer.mrmlScene
    panel = harness.moduleObject.widgetRepresentation()
    widget = panel.self()
    panel.enter()
    parameters = widget._parameterNode
    assert parameters.fixedVolume is fixed and parameters.movingVolume is moving
    assert widget.ui.fixedVolumeSelector.currentNode() is fixed
    assert widget.ui.encoderComboBox.currentText == parameters.encoder != ""
    assert widget.ui.applyButton.enabled and widget.ui.applyButton.text == "Apply"
    widget.ui.presetComboBox.currentIndex = widget.ui.presetComboBox.findText("fast")
    assert (parameters.preset, parameters.encoder) == ("fast", "mind")
    assert widget.ui.encoderComboBox.currentText == "mind"
    slicer.mrmlScene.Clear(0)                          # StartCloseEvent / EndCloseEvent
    assert widget._parameterNode is not None and widget._parameterNode.fixedVolume is None
    panel.exit()
    assert widget._parameterNodeGuiTag is None
    slicer.app.moduleManager().emit("moduleAboutToBeUnloaded(QString)", "SAMRegistration")


def test_batch_console_logic_and_the_module_self_test(harness):
    """The logic built as the batch console does, and the module's own SAMRegistrationTest
    (parameter defaults and a real registration through PythonSlicer and the Qt-timer runner)."""
    slicer = _slicer()
    logic = harness.module.SAMRegistrationLogic()
    assert logic.scene is slicer.mrmlScene and not logic.isRunning
    harness.module.SAMRegistration(harness.moduleObject).runTest(msec=0)
    transforms = slicer.util.getNodesByClass("vtkMRMLTransformNode")
    assert any(t.GetName().startswith("SAMRegistrationTest moving") for t in transforms)


# ----------------------------------------------------------------------------- defects 4 and 5
def test_cancel_from_the_panel_returns_at_once_and_the_poll_reaps_the_worker(harness):
    """Defect 4: pressing Cancel must not block the GUI thread; the timer's polling reaps the
    worker afterwards, and nothing is added to the scene."""
    slicer = _slicer()
    _volume("fixed"), _volume("moving", (1, 2, -2))
    panel = harness.moduleObject.widgetRepresentation()
    widget = panel.self()
    panel.enter()
    parameters = widget._parameterNode
    parameters.iterations = 2000                       # long enough to be cancelled
    parameters.encoder = "mind"
    nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
    widget.onApplyButton()
    runner = widget.logic._runner
    started = harness.processEventsUntil(
        lambda: "[optimise]" in widget.ui.logTextEdit.toPlainText() or not widget.logic.isRunning, timeout=300)
    assert started and widget.logic.isRunning, widget.ui.logTextEdit.toPlainText()[-2000:]
    pid = runner.pid
    began = time.monotonic()
    widget.onApplyButton()                             # Apply is Cancel while running
    assert time.monotonic() - began < 0.2
    assert widget.ui.applyButton.text.startswith("Cancelling")
    assert harness.processEventsUntil(lambda: not widget.logic.isRunning, timeout=60)
    assert "Registration cancelled." in widget.ui.logTextEdit.toPlainText()
    assert runner.returncode is not None and not _alive(pid)
    assert widget.ui.applyButton.text == "Apply" and not widget.ui.progressBar.visible
    assert slicer.mrmlScene.GetNumberOfNodes() == nodesBefore


def _alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_qt_timer_runner_cancel_returns_at_once_even_if_sigterm_is_ignored(harness):
    from SlicerSAMRegistrationLib.process import QtTimerRunner, makeRunner
    runner = makeRunner()
    assert isinstance(runner, QtTimerRunner)
    runner.terminateGraceS = 1.0
    lines, exits = [], []
    code = textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(120)
    """)
    runner.start([sys.executable, "-c", code], lambda s, line: lines.append(line), exits.append)
    assert harness.processEventsUntil(lambda: "ready" in lines, timeout=30)
    began = time.monotonic()
    runner.cancel()
    assert time.monotonic() - began < 0.2
    assert runner.running and _alive(runner.pid)      # nothing was waited for
    assert harness.processEventsUntil(lambda: bool(exits), timeout=20)
    assert exits == [-signal.SIGKILL] and not _alive(runner.pid)


def _fakeSlicerApplication(folder: Path) -> Path:
    """An application binary that is not Python, like ``sys.executable`` inside Slicer."""
    folder.mkdir(parents=True)
    app = folder / "SlicerApp-real"
    app.write_text("#!/bin/sh\necho 'Slicer 5.12.3: unknown option -m' >&2\nexit 1\n")
    app.chmod(0o755)
    return app


def test_bad_settings_from_the_panel_are_one_line(harness):
    """The panel's fields are range-checked by the parameter node, and what reaches the engine is
    checked again before a worker starts: one line naming the setting, nothing added."""
    slicer = _slicer()
    parameters = harness.module.SAMRegistrationLogic().getParameterNode()
    with pytest.raises(ValueError) as raised:
        parameters.iterations = 5000                     # beyond the panel's range
    assert "\n" not in str(raised.value)
    from SlicerSAMRegistrationLib import widget_helpers
    fixed, moving = _volume("fixed"), _volume("moving", (1, 0, 0))
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    logic = harness.module.SAMRegistrationLogic()
    for field, value, name in (("lambdaReg", -0.5, "method_params.lambda_reg"), ("pcaDims", 0, "encoder_params.pca_dims")):
        values = widget_helpers.presetValues("balanced")
        values.update(preset="balanced", device="auto", checkpointPath="", **{field: value})
        settings = widget_helpers.settingsFromParameters(type("Panel", (), values))
        with pytest.raises(ValueError, match=f"setting '{name}'") as raised:
            logic.register(fixed, moving, settings=settings)
        assert "\n" not in str(raised.value) and not logic.isRunning
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_missing_python_slicer_is_a_clear_error(harness, tmp_path, monkeypatch):
    """Defect 5: inside Slicer ``sys.executable`` is the application; without PythonSlicer it
    must not be started as if it were Python."""
    slicer = _slicer()
    fixed, moving = _volume("fixed"), _volume("moving", (1, 0, 0))
    monkeypatch.setattr(sys, "executable", str(_fakeSlicerApplication(tmp_path / "Slicer" / "bin")))
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != str(harness.pythonSlicerDir)]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    logic = harness.module.SAMRegistrationLogic()
    logic.temporaryRoot = str(tmp_path / "runs")
    os.makedirs(logic.temporaryRoot)
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(Exception) as raised:
        logic.register(fixed, moving, settings=FAST)
    message = str(raised.value)
    assert "PythonSlicer" in message and str(tmp_path / "Slicer" / "bin") in message and "\n" not in message
    from SlicerSAMRegistrationLib.scene_logic import WorkerUnavailable
    assert isinstance(raised.value, WorkerUnavailable)
    assert os.listdir(logic.temporaryRoot) == [] and not logic.isRunning
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_python_slicer_beside_the_application_is_found(harness, tmp_path, monkeypatch):
    app = _fakeSlicerApplication(tmp_path / "Slicer" / "bin")
    shim = slicer_harness._pythonSlicerShim(app.parent)
    monkeypatch.setattr(sys, "executable", str(app))
    monkeypatch.setenv("PATH", "")
    from SlicerSAMRegistrationLib.scene_logic import pythonExecutable
    assert pythonExecutable() == str(shim)


# ----------------------------------------------------------------------------- older Slicer
def test_an_older_slicer_gets_one_clear_message(tmp_path):
    h = slicer_harness.SlicerHarness(tmp_path, slicerVersion=(5, 8)).install()
    try:
        module = h.loadModule()
        assert "5.10" in module.UNSUPPORTED and "5.8" in module.UNSUPPORTED
        panel = h.moduleObject.widgetRepresentation()
        labels = [w for w in panel.findChildren() if w.className() == "QLabel"]
        assert [label.text for label in labels] == [module.UNSUPPORTED]
        panel.enter()
        with pytest.raises(RuntimeError, match="needs 3D Slicer 5.10"):
            module.SAMRegistrationLogic()
    finally:
        h.uninstall()
