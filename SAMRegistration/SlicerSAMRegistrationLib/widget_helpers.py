"""Qt-free pieces of the SAMRegistration widget: menu contents, preset values, the settings a
run uses, and the texts shown while and after it runs.

The widget (``SAMRegistration.py``) only moves values between these functions and Qt, so
what the panel offers and sends to the engine is tested without Qt. ``ui`` arguments are any
object whose combo-box attributes have ``clear()`` and ``addItem(text)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from SlicerSAMRegistrationLib import advanced

POSITIVE_COLOR = (0.0, 1.0, 0.0)
NEGATIVE_COLOR = (1.0, 0.0, 0.0)


@dataclass(frozen=True)
class PromptRow:
    """One point list of the Prompts section: its parameter-node field and its widgets."""
    parameter: str        # parameter-node field (and register() keyword)
    selector: str         # qMRMLNodeComboBox objectName
    placeWidget: str      # qSlicerMarkupsPlaceWidget objectName
    clearButton: str      # QPushButton objectName
    countLabel: str       # QLabel objectName
    color: tuple          # display colour of the list's points


PROMPT_ROWS = tuple(
    PromptRow(f"{side}{polarity}Points", f"{side}{polarity}PointsSelector", f"{side}{polarity}PlaceWidget",
              f"{side}{polarity}ClearButton", f"{side}{polarity}CountLabel",
              POSITIVE_COLOR if polarity == "Positive" else NEGATIVE_COLOR)
    for side in ("fixed", "moving") for polarity in ("Positive", "Negative"))

#: combo box objectName -> parameter-node field, for the combos the widget syncs by hand
#: (their items come from ``choices`` at run time, so they are not bound with connectGui)
CHOICE_COMBOS = {
    "presetComboBox": "preset",
    "encoderComboBox": "encoder",
    "methodComboBox": "method",
    "deviceComboBox": "device",
}

#: parameter-node field -> engine setting (a dotted path into the nested settings), for the
#: numeric fields of the Advanced section (their widgets are ``<field>SpinBox``)
NUMERIC_SETTINGS = {
    "spacing": "spacing",
    "sliceStep": "encoder_params.slice_step",
    "pcaDims": "encoder_params.pca_dims",
    "lambdaReg": "method_params.lambda_reg",
    "iterations": "method_params.iterations",
}
#: the settings those fields show: the generated form (``advanced``) does not repeat them
BASIC_PATHS = tuple(NUMERIC_SETTINGS.values())
#: fields where 0 in the panel means "automatic" (None for the engine)
ZERO_MEANS_AUTO = ("spacing", "sliceStep")

#: encoders that need a SAM / MedSAM ViT checkpoint file
CHECKPOINT_ENCODERS = ("sam-vit-b", "sam-vit-l", "sam-vit-h", "medsam-vit-b")

STAGE_LABELS = {
    "start": "Starting",
    "load": "Loading images",
    "affine": "Affine pre-alignment",
    "encode": "Encoding features",
    "features": "Encoding features",
    "optimise": "Optimising",
    "write": "Writing outputs",
}


def _choices(choicesModule):
    if choicesModule is None:
        from SlicerSAMRegistrationLib import choices as choicesModule
    return choicesModule


def choiceItems(choicesModule=None) -> dict[str, list[str]]:
    """combo objectName -> the items it offers."""
    choices = _choices(choicesModule)
    return {
        "presetComboBox": list(choices.PRESETS),
        "encoderComboBox": list(choices.encoder_names()),
        "methodComboBox": list(choices.method_names()),
        "deviceComboBox": list(choices.DEVICES),
    }


def fillChoices(ui, choicesModule=None) -> dict[str, list[str]]:
    """Fill the preset, encoder, method and device combo boxes of ``ui``; returns the items."""
    items = choiceItems(choicesModule)
    for comboName, names in items.items():
        combo = getattr(ui, comboName)
        combo.clear()
        for name in names:
            combo.addItem(name)
    return items


def presetAdvancedValues(preset: str, choicesModule=None) -> dict[str, dict[str, Any]]:
    """The nested values ``preset`` sets that the basic fields do not show: what the generated
    form of the Advanced section holds after choosing it (section -> name -> value)."""
    choices = _choices(choicesModule)
    if preset not in choices.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(choices.PRESETS)}")
    values: dict[str, dict[str, Any]] = {}
    for section in advanced.SECTIONS:
        for name, value in (choices.PRESETS[preset].get(section) or {}).items():
            if f"{section}.{name}" not in BASIC_PATHS:
                values.setdefault(section, {})[name] = value
    return values


def presetValues(preset: str, choicesModule=None) -> dict[str, Any]:
    """Parameter-node values that selecting ``preset`` puts in the panel.

    Encoder, method, the numeric fields and the Advanced form (``advancedSettings``) show the
    preset over the engine defaults; the device changes only when the preset names one (it is a
    property of the computer).
    """
    choices = _choices(choicesModule)
    if preset not in choices.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(choices.PRESETS)}")
    merged = choices.merged(choices.default_settings(), choices.PRESETS[preset])
    values: dict[str, Any] = {"encoder": merged["encoder"], "method": merged["method"]}
    if "device" in choices.PRESETS[preset]:
        values["device"] = merged["device"]
    for field, path in NUMERIC_SETTINGS.items():
        value = choices.settingValue(merged, path)
        if field in ZERO_MEANS_AUTO and value is None:
            value = 0
        values[field] = value
    values["spacing"] = float(values["spacing"])
    values["lambdaReg"] = float(values["lambdaReg"])
    for field in ("sliceStep", "pcaDims", "iterations"):
        values[field] = int(values[field])
    values[advanced.PARAMETER] = advanced.dumps(presetAdvancedValues(preset, choices))
    return values


def advancedValues(parameters, choicesModule=None) -> dict[str, dict[str, Any]]:
    """The Advanced form's values (section -> name -> value, only those differing from the
    defaults) from the parameter node: its ``advancedSettings`` JSON, or, where that was never
    written (a scene from before the form), the preset's. ValueError (one line) for bad JSON."""
    text = str(getattr(parameters, advanced.PARAMETER, "") or "")
    if text.strip():
        return advanced.loads(text)
    preset = getattr(parameters, "preset", "") or _choices(choicesModule).DEFAULT_PRESET
    return presetAdvancedValues(preset, choicesModule)


def advancedEdit(parameters, spec: "advanced.FieldSpec", raw: Any, choicesModule=None) -> str:
    """The ``advancedSettings`` JSON after the form's widget for ``spec`` changed to ``raw``
    (its value, check state, index or text); stored JSON that does not parse is replaced."""
    try:
        values = advancedValues(parameters, choicesModule)
    except ValueError:
        values = {}
    return advanced.dumps(advanced.withValue(values, spec, advanced.editedValue(spec, raw)))


def choiceValues(parameters, field: str, value: str, choicesModule=None) -> dict[str, Any]:
    """Parameter-node values for choosing ``value`` in the ``field`` combo (encoder, method,
    device): with a new encoder or method, the Advanced values the new choice lacks are dropped
    (where the engine is installed to say which)."""
    values: dict[str, Any] = {field: value}
    if field not in ("encoder", "method"):
        return values
    choice = {"encoder": getattr(parameters, "encoder", ""), "method": getattr(parameters, "method", "")}
    choice[field] = value
    try:
        docs = advanced.sectionDocs(choice["encoder"], choice["method"])
        stored = advancedValues(parameters, choicesModule)
    except (ImportError, ValueError):
        return values
    values[advanced.PARAMETER] = advanced.dumps(advanced.pruned(stored, docs))
    return values


def offeredBasicFields(docs: Optional[Mapping[str, Any]]) -> dict[str, bool]:
    """Numeric field -> whether the chosen encoder and method have its setting (``docs``: their
    ``advanced.sectionDocs``; None: unknown, all offered). ``pyramid`` has no ``iterations``."""
    if docs is None:
        return {field: True for field in NUMERIC_SETTINGS}
    known = advanced.offeredPaths(docs)
    return {field: "." not in path or path in known for field, path in NUMERIC_SETTINGS.items()}


def settingsFromParameters(parameters, choicesModule=None) -> dict[str, Any]:
    """Engine settings for a run, from the parameter node (or any object with its fields).

    What the panel shows is what runs: the numeric fields and the Advanced form's values
    (``advancedValues``) give the nested sections, the preset supplies only the top-level
    settings the panel has no field for, and 0 in spacing / slice step is sent as None
    (automatic). Nested values the chosen encoder or method lacks are left out
    (``advanced.withoutUnknown``), e.g. ``iterations`` for ``pyramid``.
    """
    choices = _choices(choicesModule)
    checkpoint = str(getattr(parameters, "checkpointPath", "") or "").strip()
    overrides: dict[str, Any] = {
        "encoder": getattr(parameters, "encoder", "") or None,
        "method": getattr(parameters, "method", "") or None,
        "device": getattr(parameters, "device", "") or None,
        "checkpoint": checkpoint or None,
    }
    nested: dict[str, Any] = {}
    for field, path in NUMERIC_SETTINGS.items():
        value = getattr(parameters, field)
        if field in ZERO_MEANS_AUTO and not (value and value > 0):
            value = None
        section, _, name = path.rpartition(".")
        if section:
            nested.setdefault(section, {})[name] = value
        else:
            nested[name] = value
    preset = getattr(parameters, "preset", "") or choices.DEFAULT_PRESET
    settings = choices.settings_from(preset, nested, advanced=advancedValues(parameters, choices), **overrides)
    return advanced.withoutUnknown(settings)


def needsCheckpoint(encoder: str) -> bool:
    return encoder in CHECKPOINT_ENCODERS


def stageLabel(stage: str) -> str:
    stage = str(stage or "").strip()
    return STAGE_LABELS.get(stage.lower(), stage.replace("_", " ").capitalize() or "Working")


def progressDisplay(stage: str, overall: float) -> tuple[int, str]:
    """(progress-bar value 0..100, progress-bar format) for a worker progress event."""
    try:
        fraction = float(overall)
    except (TypeError, ValueError):
        fraction = 0.0
    fraction = min(max(fraction, 0.0), 1.0)
    label = stageLabel(stage).replace("%", "")   # the format string gives % a meaning
    return int(round(fraction * 100)), f"{label}: %p%"


def applyButtonState(running: bool, cancelling: bool, hasInputs: bool) -> tuple[str, bool, str]:
    """(text, enabled, tool tip) of the Apply button, which doubles as Cancel."""
    if cancelling:
        return "Cancelling...", False, "Stopping the registration."
    if running:
        return "Cancel", True, "Stop the running registration; nothing is added to the scene."
    if not hasInputs:
        return "Apply", False, "Select two different volumes: a fixed and a moving volume."
    return "Apply", True, "Register the moving volume to the fixed volume."


def pointCountText(count: int) -> str:
    return "1 point" if count == 1 else f"{count} points"


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _metric(metrics: Mapping[str, Any], name: str) -> tuple[Optional[float], Optional[float]]:
    """(before, after) of metric ``name``: flat ``<name>_initial`` or a nested ``initial`` dict."""
    before = metrics.get(f"{name}_initial")
    if before is None and isinstance(metrics.get("initial"), Mapping):
        before = metrics["initial"].get(name)
    return _number(before), _number(metrics.get(name))


def formatMetrics(metrics: Optional[Mapping[str, Any]]) -> str:
    """One line per available metric, 'before -> after', for the metrics label."""
    metrics = metrics or {}
    lines = []
    for name, label, fmt, unit in (("dice_mean", "Mean Dice", "{:.3f}", ""),
                                   ("tre_mean_mm", "Mean TRE", "{:.2f}", " mm"),
                                   ("fold_percent", "Folding", "{:.3f}", " %")):
        before, after = _metric(metrics, name)
        if after is None and before is None:
            continue
        shown = ["n/a" if value is None else fmt.format(value) + unit for value in (before, after)]
        lines.append(f"{label}: {shown[0]} \u2192 {shown[1]}" if before is not None else f"{label}: {shown[1]}")
    return "\n".join(lines) if lines else "No metrics (add segmentations to score Dice)."


def formatRegions(report: Optional[Mapping[str, Any]]) -> str:
    """One line per prompt structure for the metrics label: its regions' Dice after the affine
    stage and after the registration, or why the pair was left out; empty without prompts."""
    report = report or {}
    infos = ((report.get("resolved") or {}).get("regions") or {}).get("fixed") or []
    if not infos:
        return ""
    pairs = {str(p.get("region")): p for p in (report.get("metrics") or {}).get("region_pairs") or []}
    used = sum(1 for info in infos if not info.get("dropped"))
    lines = [f"Prompt regions: {used} of {len(infos)} used"]
    for info in infos:
        name = str(info.get("label"))
        if info.get("dropped"):
            lines.append(f"  {name}: left out ({info['dropped']})")
        elif name in pairs and _number(pairs[name].get("dice")) is not None:
            before, after = _number(pairs[name].get("dice_affine")), _number(pairs[name]["dice"])
            shown = f"{before:.3f} \u2192 {after:.3f}" if before is not None else f"{after:.3f}"
            lines.append(f"  {name}: region Dice {shown}")
    return "\n".join(lines)


def maskSegmentations(parameters) -> tuple[Any, Any]:
    """(fixed, moving) segmentations to give the ``assisted`` method as masks: the panel's
    segmentations when its box is ticked and both are chosen, else (None, None): scoring only."""
    fixed, moving = getattr(parameters, "fixedSegmentation", None), getattr(parameters, "movingSegmentation", None)
    if not getattr(parameters, "segmentationsAsMasks", False) or fixed is None or moving is None:
        return None, None
    return fixed, moving
