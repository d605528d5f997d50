"""The Advanced section's generated form: every engine parameter of the chosen encoder and
method, from the engine's parameter classes (``SlicerSAMRegistrationLib/advanced.py``).

The first part tests the Qt-free logic against the engine's own classes (what the form offers,
text -> value, the JSON in the parameter node, merging into the run's settings, dropping what
a new method lacks, one line for a bad value). The second part builds the panel on Slicer's own
Python layers (``slicer_harness``) and drives the generated widgets.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import slicer_harness

ROOT = Path(__file__).resolve().parent.parent
for path in (str(ROOT), str(ROOT / "SAMRegistration")):
    if path not in sys.path:
        sys.path.insert(0, path)

from SlicerSAMRegistrationLib import advanced, choices, widget_helpers  # noqa: E402

from SAMRegistrationLib.params import describe  # noqa: E402
from SAMRegistrationLib.settings import Settings, parameter_sections  # noqa: E402

METHODS = choices.method_names()
ENGINE_MODULES = ("SAMRegistrationLib.settings", "SAMRegistrationLib.params")


def _expected(encoder: str, method: str) -> list[str]:
    """The setting paths the form must offer: every parameter of every section, straight from
    the engine, less those the basic fields show."""
    return [f"{section}.{doc.name}" for section, cls in parameter_sections(encoder, method).items()
            for doc in describe(cls) if f"{section}.{doc.name}" not in widget_helpers.BASIC_PATHS]


def _panelValues(preset: str = "balanced", **changes) -> SimpleNamespace:
    """A stand-in parameter node holding what choosing ``preset`` puts in the panel."""
    values = dict(preset=preset, device="auto", checkpointPath="")
    values.update(widget_helpers.presetValues(preset))
    if "method" not in changes and "method" not in choices.PRESETS[preset]:
        values["method"] = "convexadam"
    values.update(changes)
    return SimpleNamespace(**values)


def _spec(key: str, method: str = "convexadam", encoder: str = "auto") -> advanced.FieldSpec:
    specs = advanced.formSpecs(advanced.sectionDocs(encoder, method))
    return next(spec for spec in specs if spec.key == key)


def _withoutEngine(monkeypatch) -> None:
    """As before the first Apply installs pydantic: the engine's settings cannot be imported."""
    for name in ENGINE_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


# ----------------------------------------------------------------------------- Qt-free: the specs
@pytest.mark.parametrize("method", METHODS)
def test_the_form_offers_every_parameter_of_the_choice_but_the_basic_fields(method):
    docs = advanced.sectionDocs("auto", method)
    specs = advanced.formSpecs(docs, skip=widget_helpers.BASIC_PATHS)
    assert [spec.key for spec in specs] == _expected("auto", method)
    assert not {spec.key for spec in specs} & set(widget_helpers.BASIC_PATHS)
    byKey = {f"{section}.{doc.name}": doc for section, items in docs.items() for doc in items}
    for spec in specs:
        doc = byKey[spec.key]
        expectedKind = doc.type if doc.type in ("int", "float", "bool", "choice") else "text"
        assert spec.kind == expectedKind, spec.key
        assert doc.description in spec.toolTip and spec.key in spec.toolTip and "Default:" in spec.toolTip
        if spec.kind == "int":
            assert (spec.minimum, spec.maximum) == (doc.minimum if doc.minimum is not None else -advanced.INT_LIMIT,
                                                    doc.maximum if doc.maximum is not None else advanced.INT_LIMIT)
        if spec.kind == "float" and doc.maximum is not None:
            assert (spec.minimum, spec.maximum) == (doc.minimum, doc.maximum)
        if spec.kind == "choice":
            assert spec.choices == tuple(doc.choices)
        # the widget shows the default, and reading it back is the default: nothing is stored
        shown = advanced.widgetValue(spec, doc.default)
        assert advanced.sameValue(advanced.editedValue(spec, shown), doc.default), spec.key
        assert advanced.withValue({}, spec, advanced.editedValue(spec, shown)) == {}


def test_groups_and_titles_follow_the_sections():
    specs = advanced.formSpecs(advanced.sectionDocs("auto", "pyramid"), skip=widget_helpers.BASIC_PATHS)
    assert [section for section, _ in advanced.groupedSpecs(specs)] == list(advanced.SECTIONS)
    assert advanced.sectionTitle("method_params", "pyramid") == "Method parameters (pyramid)"
    assert advanced.labelText("mind_weight") == "Mind weight:"
    with pytest.raises(ValueError, match="unknown method 'nope'") as raised:
        advanced.sectionDocs("auto", "nope")
    assert "\n" not in str(raised.value)


def test_typed_text_becomes_the_value():
    doc = SimpleNamespace
    nullableInt = advanced.fieldSpec("method_params", doc(name="n", type="int or null", default=None,
                                                          description="d", minimum=1, maximum=4, choices=None))
    assert nullableInt.kind == "text" and nullableInt.placeholder == "auto" and "Range: 1 to 4" in nullableInt.toolTip
    typed = [advanced.parseText(nullableInt, t) for t in ("", " auto ", "None", "3", "abc")]
    assert typed == [None, None, None, 3, "abc"]
    ints = advanced.fieldSpec("method_params", doc(name="f", type="list[int]", default=[4, 2, 1],
                                                   description="", minimum=None, maximum=None, choices=None))
    assert advanced.parseText(ints, "4, 2,1") == [4, 2, 1] and advanced.parseText(ints, "[8, 4]") == [8, 4]
    assert advanced.parseText(ints, "") == [] and advanced.parseText(ints, "1, x") == [1, "x"]
    assert advanced.formatText(ints, [4, 2, 1]) == "4, 2, 1"
    views = _spec("prompt_params.views")
    assert "Choices: flip-cols, flip-rows, rot180, zoom-out" in views.toolTip
    assert advanced.parseText(views, "flip-rows, 'rot180'") == ["flip-rows", "rot180"]
    assert advanced.editedValue(views, advanced.widgetValue(views, ["flip-cols"])) == ["flip-cols"]
    floats = advanced.fieldSpec("s", doc(name="w", type="float or null", default=0.5, description="",
                                         minimum=0.0, maximum=None, choices=None))
    assert advanced.parseText(floats, "0.25") == 0.25 and advanced.parseText(floats, "") is None
    assert "At least 0" in floats.toolTip
    axis = _spec("encoder_params.slice_axis")
    assert advanced.editedValue(axis, axis.choices.index("z")) == "z" and advanced.widgetValue(axis, "y") == 2
    assert advanced.sameValue(True, True) and not advanced.sameValue(True, 1) and advanced.sameValue(1, 1.0)


# ----------------------------------------------------------------------------- Qt-free: the JSON
def test_the_json_holds_only_values_that_differ_from_the_defaults():
    iterations, repair = _spec("method_params.ic_iterations"), _spec("method_params.repair_folds")
    values = advanced.withValue({}, iterations, 5)
    values = advanced.withValue(values, repair, False)
    text = advanced.dumps(values)
    assert json.loads(text) == {"method_params": {"ic_iterations": 5, "repair_folds": False}}
    assert advanced.loads(text) == values and advanced.currentValue(values, iterations) == 5
    back = advanced.withValue(values, iterations, iterations.default)
    assert back == {"method_params": {"repair_folds": False}}
    assert advanced.withValue(back, repair, True) == {} and advanced.dumps({}) == "{}"
    assert advanced.loads("") == {} and advanced.loads("{}") == {}
    for bad, match in (("{nope", "not valid JSON"), ('["x"]', "must be an object of sections"),
                       ('{"spacing_params": {}}', "unknown advanced settings section")):
        with pytest.raises(ValueError, match=match) as raised:
            advanced.loads(bad)
        assert "\n" not in str(raised.value)


def test_a_new_method_drops_the_values_it_lacks():
    stored = {"method_params": {"ic_iterations": 5, "learning_rate": 0.5}, "prompt_params": {"auxiliary": True}}
    pyramid = advanced.sectionDocs("auto", "pyramid")
    assert advanced.pruned(stored, pyramid) == {"method_params": {"learning_rate": 0.5},
                                                "prompt_params": {"auxiliary": True}}
    panel = _panelValues(advancedSettings=advanced.dumps(stored))
    values = widget_helpers.choiceValues(panel, "method", "pyramid")
    assert values["method"] == "pyramid"
    assert json.loads(values["advancedSettings"]) == {"method_params": {"learning_rate": 0.5},
                                                      "prompt_params": {"auxiliary": True}}
    assert widget_helpers.choiceValues(panel, "device", "cpu") == {"device": "cpu"}
    # a method changed behind the panel's back (console, scene): the run still sends none of them
    settings = widget_helpers.settingsFromParameters(_panelValues(method="pyramid",
                                                                  advancedSettings=advanced.dumps(stored)))
    assert settings["method_params"] == {"lambda_reg": 0.3, "iterations": 50, "learning_rate": 0.5}
    assert settings["prompt_params"] == {"auxiliary": True}
    Settings.parse(settings)
    assert widget_helpers.offeredBasicFields(advanced.sectionDocs("mind", "pyramid"))["pcaDims"] is False
    assert all(widget_helpers.offeredBasicFields(advanced.sectionDocs("auto", "convexadam")).values())


# ----------------------------------------------------------------------------- Qt-free: the run
def test_form_values_reach_the_settings_the_run_sends():
    panel = _panelValues()
    for key, raw in (("method_params.ic_iterations", 7), ("encoder_params.mind_oversample", "2"),
                     ("prompt_params.views", "flip-rows, rot180"), ("encoder_params.slice_axis", 3),
                     ("prompt_params.mutual_check", False), ("encoder_params.mind_weight", 1.5)):
        panel.advancedSettings = widget_helpers.advancedEdit(panel, _spec(key), raw)
    settings = widget_helpers.settingsFromParameters(panel)
    engine = Settings.parse(settings)
    assert engine.method_params.ic_iterations == 7 and engine.encoder_params.mind_oversample == 2
    assert engine.prompt_params.views == ["flip-rows", "rot180"] and engine.encoder_params.slice_axis == "z"
    assert engine.prompt_params.mutual_check is False and engine.encoder_params.mind_weight == 1.5
    # the basic fields still apply, next to the form's values
    assert engine.method_params.iterations == 50 and engine.encoder_params.pca_dims == 12
    assert advanced.problem(settings) is None


def test_the_preset_fills_the_form_and_the_form_wins_over_it():
    fast = _panelValues("fast")
    assert json.loads(fast.advancedSettings) == {"method_params": {"ic_iterations": 5}}
    assert widget_helpers.settingsFromParameters(fast)["method_params"]["ic_iterations"] == 5
    # set back to the default in the form: the run sends the default, not the preset's 5
    fast.advancedSettings = widget_helpers.advancedEdit(fast, _spec("method_params.ic_iterations"), 15)
    assert fast.advancedSettings == "{}"
    assert "ic_iterations" not in widget_helpers.settingsFromParameters(fast)["method_params"]
    # a scene saved before the form existed (no JSON) keeps the preset's values
    old = _panelValues("fast", advancedSettings="")
    assert widget_helpers.advancedValues(old) == {"method_params": {"ic_iterations": 5}}
    assert widget_helpers.settingsFromParameters(old)["method_params"]["ic_iterations"] == 5


@pytest.mark.parametrize("key, raw, expected", [
    ("encoder_params.mind_oversample", "9", "less than or equal to 4"),
    ("encoder_params.mind_oversample", "two", "valid integer"),
    ("prompt_params.views", "flip-cols, sideways", "sideways"),
])
def test_a_bad_value_is_one_line_naming_the_setting(key, raw, expected):
    panel = _panelValues()
    panel.advancedSettings = widget_helpers.advancedEdit(panel, _spec(key), raw)
    message = advanced.problem(widget_helpers.settingsFromParameters(panel))
    assert message and f"setting '{key}" in message and expected in message and "\n" not in message


def test_without_the_engine_nothing_is_listed_and_the_json_is_sent_as_stored(monkeypatch):
    panel = _panelValues(advancedSettings='{"method_params": {"ic_iterations": 9}}')
    _withoutEngine(monkeypatch)
    assert advanced.unavailableReason() == advanced.UNAVAILABLE
    with pytest.raises(ImportError):
        advanced.sectionDocs("auto", "convexadam")
    assert advanced.problem({"method": "convexadam"}) is None
    assert widget_helpers.choiceValues(panel, "method", "pyramid") == {"method": "pyramid"}
    assert widget_helpers.settingsFromParameters(panel)["method_params"]["ic_iterations"] == 9


# ----------------------------------------------------------------------------- the panel
REASON = slicer_harness.unavailableReason()
needsSlicer = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture
def panel(tmp_path):
    """The module's panel, set up and entered as Slicer does, with two volumes in the scene."""
    h = slicer_harness.SlicerHarness(tmp_path).install()
    try:
        h.loadModule()
        test = h.module.SAMRegistrationTest
        for name, shift in (("fixed", (0, 0, 0)), ("moving", (1, 0, 0))):
            test._volume(test(), test._phantom(shift), name)
        representation = h.moduleObject.widgetRepresentation()
        representation.enter()
        widget = representation.self()
        assert widget._parameterNode.method == "pyramid"          # the engine's default method
        _choose(widget.ui.methodComboBox, "convexadam")           # the tests below use its parameters
        yield representation
    finally:
        h.uninstall()


def _editors(widget) -> dict:
    return {key: editor for key, (spec, editor) in widget._advancedEditors.items()}


def _choose(combo, text: str) -> None:
    combo.currentIndex = combo.findText(text)


@needsSlicer
def test_the_panel_builds_a_widget_per_parameter(panel):
    widget = panel.self()
    parameters = widget._parameterNode
    assert (parameters.encoder, parameters.method) == ("auto", "convexadam")
    editors = _editors(widget)
    assert list(editors) == _expected("auto", "convexadam")
    classes = {"int": "QSpinBox", "float": "QDoubleSpinBox", "bool": "QCheckBox", "choice": "QComboBox",
               "text": "QLineEdit"}
    for key, (spec, editor) in widget._advancedEditors.items():
        assert editor.className() == classes[spec.kind], key
        assert editor.toolTip == spec.toolTip and editor.objectName == key
        if spec.kind in ("int", "float"):
            assert (editor.minimum, editor.maximum) == (spec.minimum, spec.maximum)
            assert editor.value == spec.default, key            # the default is shown
        elif spec.kind == "choice":
            assert editor.currentText == spec.default
    assert editors["prompt_params.views"].text == "flip-cols"
    assert editors["encoder_params.mind_oversample"].text == "" \
        and editors["encoder_params.mind_oversample"].placeholderText == "auto"
    # one collapsible section per settings section, one form row per parameter, inside Advanced
    boxes = [w for w in widget._advancedForm.findChildren() if w.className() == "ctkCollapsibleButton"]
    assert [box.text for box in boxes] == ["Encoder parameters", "Prompt parameters",
                                           "Method parameters (convexadam)"]
    assert sum(box.layout().rowCount() for box in boxes) == len(editors)
    assert widget._advancedForm in widget.ui.advancedCollapsibleButton.findChildren()
    assert not widget.ui.advancedParametersLabel.visible
    assert parameters.advancedSettings == "{}"


@needsSlicer
def test_form_edits_are_stored_as_json_and_reach_the_run(panel, monkeypatch):
    widget = panel.self()
    parameters = widget._parameterNode
    editors = _editors(widget)
    editors["method_params.ic_iterations"].value = 7
    editors["prompt_params.auxiliary"].checked = True
    _choose(editors["encoder_params.slice_axis"], "x")
    editors["encoder_params.mind_weight"].value = 1.5
    editors["prompt_params.views"].text = "flip-rows, zoom-out"
    editors["prompt_params.views"].editingFinished.emit()
    stored = {"encoder_params": {"mind_weight": 1.5, "slice_axis": "x"},
              "prompt_params": {"auxiliary": True, "views": ["flip-rows", "zoom-out"]},
              "method_params": {"ic_iterations": 7}}
    assert json.loads(parameters.advancedSettings) == stored
    assert json.loads(parameters.parameterNode.GetParameter("advancedSettings")) == stored
    # back to the default: no longer stored
    editors["encoder_params.mind_weight"].value = 3.0
    del stored["encoder_params"]["mind_weight"]
    assert json.loads(parameters.advancedSettings) == stored
    # Apply sends them, with the basic fields
    sent = {}
    monkeypatch.setattr(widget, "_readyToRun", lambda: True)
    monkeypatch.setattr(widget.logic, "register", lambda fixed, moving, **kwargs: sent.update(kwargs))
    widget.onApplyButton()
    settings = sent["settings"]
    assert settings["method_params"]["ic_iterations"] == 7 and settings["method_params"]["iterations"] == 50
    assert settings["prompt_params"] == stored["prompt_params"] and settings["encoder_params"]["slice_axis"] == "x"
    engine = Settings.parse(settings)
    assert engine.method_params.ic_iterations == 7 and engine.prompt_params.auxiliary is True
    # the parameter node changed from elsewhere (console, scene): the form follows
    parameters.advancedSettings = advanced.dumps({"method_params": {"smooth_passes": 1}})
    assert editors["method_params.smooth_passes"].value == 1 and editors["method_params.ic_iterations"].value == 15
    assert editors["prompt_params.views"].text == "flip-cols"


@needsSlicer
def test_switching_the_method_rebuilds_the_form_and_drops_stale_values(panel):
    widget = panel.self()
    parameters = widget._parameterNode
    editors = _editors(widget)
    editors["method_params.ic_iterations"].value = 7          # convexadam only
    editors["method_params.learning_rate"].value = 0.5        # convexadam and pyramid
    editors["prompt_params.auxiliary"].checked = True
    oldForm = widget._advancedForm
    _choose(widget.ui.methodComboBox, "pyramid")
    assert parameters.method == "pyramid"
    assert widget._advancedForm is not oldForm and oldForm not in widget.ui.advancedCollapsibleButton.findChildren()
    assert list(_editors(widget)) == _expected("auto", "pyramid")
    assert json.loads(parameters.advancedSettings) == {"method_params": {"learning_rate": 0.5},
                                                       "prompt_params": {"auxiliary": True}}
    assert _editors(widget)["method_params.learning_rate"].value == 0.5
    assert widget.ui.iterationsSpinBox.enabled and widget.ui.lambdaRegSpinBox.enabled
    settings = widget_helpers.settingsFromParameters(parameters)
    assert settings["method_params"]["iterations"] == 50 and "ic_iterations" not in settings["method_params"]
    Settings.parse(settings)
    # MIND-SSC has no slices or PCA: those basic fields are disabled, and the run does not send them
    _choose(widget.ui.encoderComboBox, "mind")
    assert not widget.ui.sliceStepSpinBox.enabled and not widget.ui.pcaDimsSpinBox.enabled
    settings = widget_helpers.settingsFromParameters(parameters)
    assert not {"slice_step", "pca_dims"} & set(settings.get("encoder_params") or {})
    Settings.parse(settings)
    _editors(widget)["method_params.factors"].text = "4, 2"
    _editors(widget)["method_params.factors"].editingFinished.emit()
    assert json.loads(parameters.advancedSettings)["method_params"]["factors"] == [4, 2]
    _choose(widget.ui.methodComboBox, "convexadam")
    assert widget.ui.iterationsSpinBox.enabled
    assert _editors(widget)["method_params.ic_iterations"].value == 15   # dropped, not remembered
    assert json.loads(parameters.advancedSettings) == {"method_params": {"learning_rate": 0.5},
                                                       "prompt_params": {"auxiliary": True}}


@needsSlicer
def test_a_preset_fills_the_form(panel):
    widget = panel.self()
    parameters = widget._parameterNode
    _editors(widget)["prompt_params.auxiliary"].checked = True
    _choose(widget.ui.presetComboBox, "fast")
    assert json.loads(parameters.advancedSettings) == {"method_params": {"ic_iterations": 5}}
    assert _editors(widget)["method_params.ic_iterations"].value == 5
    assert _editors(widget)["prompt_params.auxiliary"].checked is False


@needsSlicer
def test_a_bad_value_in_the_form_is_one_clear_line(panel):
    widget = panel.self()
    parameters = widget._parameterNode
    oversample = _editors(widget)["encoder_params.mind_oversample"]
    oversample.text = "9"                                     # typed past the engine's range 1..4
    oversample.editingFinished.emit()
    label = widget.ui.advancedParametersLabel
    assert label.visible and "setting 'encoder_params.mind_oversample'" in label.text and "\n" not in label.text
    import slicer
    logic = widget.logic
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="setting 'encoder_params.mind_oversample'") as raised:
        logic.register(parameters.fixedVolume, parameters.movingVolume,
                       settings=widget_helpers.settingsFromParameters(parameters))
    assert "\n" not in str(raised.value) and not logic.isRunning
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes
    oversample.text = "2"
    oversample.editingFinished.emit()
    assert not label.visible and json.loads(parameters.advancedSettings) == {"encoder_params": {"mind_oversample": 2}}
    # JSON that is not the form's (a hand-edited scene) is one line too, and the next edit replaces it
    parameters.advancedSettings = "{broken"
    assert label.visible and "not valid JSON" in label.text and "\n" not in label.text
    with pytest.raises(ValueError, match="not valid JSON"):
        widget_helpers.settingsFromParameters(parameters)
    _editors(widget)["method_params.ic_iterations"].value = 6
    assert json.loads(parameters.advancedSettings) == {"method_params": {"ic_iterations": 6}}


@needsSlicer
def test_the_values_persist_with_the_scene(panel, tmp_path):
    import slicer
    widget = panel.self()
    _editors(widget)["method_params.disp_hw"].value = 6
    _editors(widget)["prompt_params.views"].text = ""
    _editors(widget)["prompt_params.views"].editingFinished.emit()
    stored = {"prompt_params": {"views": []}, "method_params": {"disp_hw": 6}}
    assert json.loads(widget._parameterNode.advancedSettings) == stored
    sceneFile = tmp_path / "scene.mrml"
    slicer.mrmlScene.SetURL(str(sceneFile))
    assert slicer.mrmlScene.Commit()
    assert "advancedSettings" in sceneFile.read_text(encoding="utf-8")
    panel.exit()
    slicer.mrmlScene.Clear(0)
    slicer.mrmlScene.SetURL(str(sceneFile))
    assert slicer.mrmlScene.Import()
    panel.enter()
    parameters = widget._parameterNode
    assert json.loads(parameters.advancedSettings) == stored
    assert _editors(widget)["method_params.disp_hw"].value == 6 and _editors(widget)["prompt_params.views"].text == ""
    assert widget_helpers.settingsFromParameters(parameters)["prompt_params"]["views"] == []


@needsSlicer
def test_without_the_engine_the_section_says_so(tmp_path, monkeypatch):
    _withoutEngine(monkeypatch)
    h = slicer_harness.SlicerHarness(tmp_path).install()
    try:
        h.loadModule()
        representation = h.moduleObject.widgetRepresentation()
        representation.enter()
        widget = representation.self()
        assert widget._advancedEditors == {} and widget._advancedForm is None
        label = widget.ui.advancedParametersLabel
        assert label.visible and label.text == advanced.UNAVAILABLE
        assert widget.ui.iterationsSpinBox.enabled
        # installed later (the first Apply): entering the module again lists the parameters
        monkeypatch.undo()
        representation.exit()
        representation.enter()
        assert list(_editors(widget)) == _expected("auto", "pyramid") and not label.visible
    finally:
        h.uninstall()
