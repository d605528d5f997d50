"""The generated part of the panel's Advanced section: every engine parameter of the chosen
encoder and method, Qt-free.

The engine declares each parameter once, on its parameter classes (``SAMRegistrationLib/params.py``:
type, default, range, choices, description), and ``settings.parameter_sections(encoder, method)``
names the class of each nested settings section for a choice. Here each parameter becomes a
:class:`FieldSpec` (which widget, its range, label, tool tip and default); the widget only turns
specs into Qt widgets and moves raw widget values through :func:`editedValue` and
:func:`widgetValue`.

The values that differ from the engine defaults are kept in the parameter node as one JSON
string (:data:`PARAMETER`), nested by section, e.g. ``{"method_params": {"ic_iterations": 5}}``:
saved with the scene and merged into the settings a run sends
(``widget_helpers.settingsFromParameters``). Values for parameters the chosen encoder or method
lacks are dropped (:func:`pruned`, :func:`withoutUnknown`), never sent.

Lists are typed as comma-separated text; an "or null" parameter left empty (or typed ``auto``)
is None, the engine's automatic choice. Text that does not convert is kept as typed, so the
engine's check names the setting and the value in one line (:func:`problem`).

The engine (pydantic) is imported only when a function needs it; before the first Apply installs
it, :func:`sectionDocs` raises ImportError and the panel shows :data:`UNAVAILABLE` instead of a form.
"""
from __future__ import annotations

import ast
import copy
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

#: parameter-node field holding the advanced values as JSON
PARAMETER = "advancedSettings"
#: the nested settings sections the form covers, in the order it shows them
SECTIONS = ("encoder_params", "prompt_params", "method_params")
SECTION_TITLES = {"encoder_params": "Encoder parameters", "prompt_params": "Prompt parameters",
                  "method_params": "Method parameters"}
#: shown instead of the form while the engine's Python packages are not installed
UNAVAILABLE = ("All engine parameters are listed here once the engine's Python packages are "
               "installed (the first Apply installs them).")
#: the text an empty "or null" field shows (None: the engine chooses)
AUTO_TEXT = "auto"
INT_LIMIT = 2 ** 31 - 1          # QSpinBox's range is a C int
FLOAT_LIMIT = 1e9
_NONE_WORDS = ("", "auto", "none", "null")
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class FieldSpec:
    """One generated row: which widget shows parameter ``section.name``, and how.

    ``kind`` is ``int`` (spin box), ``float`` (double spin box), ``bool`` (check box), ``choice``
    (combo box of ``choices``) or ``text`` (line edit: lists, "or null" and other types, read by
    :func:`parseText` according to ``typeName``)."""
    section: str
    name: str
    kind: str
    typeName: str
    label: str
    toolTip: str
    default: Any
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    decimals: int = 0
    singleStep: float = 1
    choices: tuple = ()
    placeholder: str = ""

    @property
    def key(self) -> str:
        """The dotted setting name the engine's messages use (``method_params.iterations``)."""
        return f"{self.section}.{self.name}"


# ----------------------------------------------------------------------------- the engine's classes
def _engine():
    from SAMRegistrationLib.errors import InputError
    from SAMRegistrationLib.params import describe
    from SAMRegistrationLib.settings import Settings, parameter_sections
    return parameter_sections, describe, Settings, InputError


def unavailableReason() -> Optional[str]:
    """:data:`UNAVAILABLE` while the engine (pydantic) cannot be imported, else None."""
    try:
        _engine()
    except ImportError:
        return UNAVAILABLE
    return None


def sectionDocs(encoder: str, method: str) -> dict[str, list]:
    """The engine's ``ParameterDoc`` list of each section for ``encoder`` and ``method`` (empty
    names: the engine's defaults). ImportError without the engine; ValueError (one line) for an
    unknown encoder or method."""
    parameter_sections, describe, Settings, InputError = _engine()
    encoder = encoder or Settings.model_fields["encoder"].default
    method = method or Settings.model_fields["method"].default
    try:
        classes = parameter_sections(encoder, method)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    return {section: describe(cls) for section, cls in classes.items()}


def offeredPaths(docs: Mapping[str, Iterable]) -> set[str]:
    """``section.name`` of every parameter in ``docs``."""
    return {f"{section}.{doc.name}" for section, items in docs.items() for doc in items}


# ----------------------------------------------------------------------------- docs -> specs
def labelText(name: str) -> str:
    """``mind_weight`` -> ``Mind weight:``."""
    words = name.replace("_", " ").strip()
    return (words[:1].upper() + words[1:] + ":") if words else ":"


def _typeParts(typeName: str) -> tuple[bool, bool, str]:
    """(nullable, is a list, element type) of a ``describe`` type name: ``int or null``,
    ``list[int]``, ``list[Literal['a', 'b']]``, ``tuple[float, ...]``."""
    name = str(typeName).strip()
    nullable = name.endswith(" or null")
    if nullable:
        name = name[: -len(" or null")].strip()
    match = re.fullmatch(r"(?:list|List|tuple|Tuple|set|Set|Sequence)\[(.*)\]", name)
    isList = match is not None
    if isList:
        name = re.sub(r",\s*\.\.\.$", "", match.group(1).strip())
    if name.startswith("Literal[") or name == "choice":
        name = "choice"
    return nullable, isList, name


def _literalChoices(typeName: str) -> tuple:
    """The values of a ``Literal[...]`` inside a type name (``list[Literal['a', 'b']]``), or ()."""
    match = re.search(r"Literal\[(.*?)\]", str(typeName))
    if match is None:
        return ()
    try:
        values = ast.literal_eval(f"({match.group(1)},)")
    except (ValueError, SyntaxError):
        return ()
    return tuple(values)


def _decimalPlaces(value: float) -> int:
    for places in range(7):
        if abs(round(value, places) - value) < 1e-12:
            return places
    return 6


def _displayValue(value: Any) -> str:
    if value is None:
        return AUTO_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(_displayValue(item) for item in value) if value else "(none)"
    return str(value)


def fieldSpec(section: str, doc: Any) -> FieldSpec:
    """The row for one ``ParameterDoc`` (anything with its attributes) of ``section``."""
    typeName = str(doc.type)
    kind = typeName if typeName in ("int", "float", "bool") else "choice" if typeName == "choice" else "text"
    if kind == "choice" and not doc.choices:
        kind = "text"
    description = (doc.description or "").strip()
    toolTip = f"{section}.{doc.name}: {description}" if description else f"{section}.{doc.name}"
    if doc.minimum is not None or doc.maximum is not None:
        low = "" if doc.minimum is None else f"{doc.minimum:g}"
        high = "" if doc.maximum is None else f"{doc.maximum:g}"
        toolTip += f"\nRange: {low} to {high}" if low and high else f"\nAt least {low}" if low else f"\nAt most {high}"
    choices = tuple(doc.choices or ()) or _literalChoices(typeName)
    if choices and typeName != "choice":
        toolTip += f"\nChoices: {', '.join(_displayValue(c) for c in choices)}"
    toolTip += f"\nDefault: {_displayValue(doc.default)}"
    common = dict(section=section, name=doc.name, kind=kind, typeName=typeName, label=labelText(doc.name),
                  toolTip=toolTip, default=copy.deepcopy(doc.default))
    if kind == "int":
        low = -INT_LIMIT if doc.minimum is None else max(-INT_LIMIT, math.ceil(doc.minimum))
        high = INT_LIMIT if doc.maximum is None else min(INT_LIMIT, math.floor(doc.maximum))
        return FieldSpec(**common, minimum=low, maximum=high, singleStep=1)
    if kind == "float":
        low = -FLOAT_LIMIT if doc.minimum is None else float(doc.minimum)
        high = FLOAT_LIMIT if doc.maximum is None else float(doc.maximum)
        shown = [v for v in (doc.default, doc.minimum, doc.maximum)
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        decimals = min(6, max([3] + [_decimalPlaces(float(v)) + 1 for v in shown]))
        default = float(doc.default) if isinstance(doc.default, (int, float)) else 0.0
        step = 10.0 ** math.floor(math.log10(abs(default))) if default else 10.0 ** (1 - decimals)
        return FieldSpec(**common, minimum=low, maximum=high, decimals=decimals,
                         singleStep=max(step, 10.0 ** -decimals))
    if kind == "choice":
        return FieldSpec(**common, choices=tuple(doc.choices))
    if kind == "bool":
        return FieldSpec(**common)
    nullable, isList, _ = _typeParts(typeName)
    if isList:
        placeholder = "comma-separated values" + (f", {AUTO_TEXT} for automatic" if nullable else "")
    else:
        placeholder = AUTO_TEXT if nullable else ""
    return FieldSpec(**common, placeholder=placeholder)


def formSpecs(docs: Mapping[str, Iterable], skip: Iterable[str] = ()) -> list[FieldSpec]:
    """One spec per parameter of ``docs`` (section -> ParameterDocs), sections in
    :data:`SECTIONS` order, parameters in declaration order, except the ``skip`` paths
    (``section.name``: the ones the basic panel shows already)."""
    skipped = set(skip)
    ordered = [s for s in SECTIONS if s in docs] + [s for s in docs if s not in SECTIONS]
    return [fieldSpec(section, doc) for section in ordered for doc in docs[section]
            if f"{section}.{doc.name}" not in skipped]


def groupedSpecs(specs: Iterable[FieldSpec]) -> list[tuple[str, list[FieldSpec]]]:
    """(section, its specs) in the order of ``specs``; sections without specs left out."""
    groups: dict[str, list[FieldSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.section, []).append(spec)
    return list(groups.items())


def sectionTitle(section: str, method: str = "") -> str:
    title = SECTION_TITLES.get(section, section.replace("_", " ").capitalize())
    return f"{title} ({method})" if section == "method_params" and method else title


# ----------------------------------------------------------------------------- text <-> value
def _element(text: str, element: str) -> Any:
    """One typed item; text that does not convert is returned as typed (the engine names it)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        if element == "int":
            return int(text)
        if element == "float":
            return float(text)
    except ValueError:
        return text
    if element == "bool":
        if text.lower() in _TRUE_WORDS:
            return True
        if text.lower() in _FALSE_WORDS:
            return False
    return text


def parseText(spec: FieldSpec, text: str) -> Any:
    """The value typed in a line edit: comma-separated for lists; empty (or ``auto``, ``none``)
    is None for "or null" types and an empty list for plain lists."""
    nullable, isList, element = _typeParts(spec.typeName)
    text = str(text or "").strip()
    if nullable and text.lower() in _NONE_WORDS:
        return None
    if isList:
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return [_element(item, element) for item in text.split(",") if item.strip()] if text.strip() else []
    return _element(text, element)


def formatText(spec: FieldSpec, value: Any) -> str:
    """What a line edit shows for ``value`` (None: empty, the placeholder says automatic)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(formatText(spec, item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def editedValue(spec: FieldSpec, raw: Any) -> Any:
    """The setting's value from its widget's: a spin box's value, a check box's state, a combo
    box's current index, a line edit's text."""
    if spec.kind == "int":
        return int(raw)
    if spec.kind == "float":
        return float(raw)
    if spec.kind == "bool":
        return bool(raw)
    if spec.kind == "choice":
        index = int(raw)
        return spec.choices[index] if 0 <= index < len(spec.choices) else spec.default
    return parseText(spec, raw)


def widgetValue(spec: FieldSpec, value: Any) -> Any:
    """What the widget is set to for ``value`` (see :func:`editedValue`); a value the widget
    cannot show (a hand-edited scene) shows the default, and :func:`problem` names it."""
    if spec.kind in ("int", "float"):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else spec.default
        number = min(max(number, spec.minimum), spec.maximum)
        return int(number) if spec.kind == "int" else float(number)
    if spec.kind == "bool":
        return bool(value) if isinstance(value, bool) else bool(spec.default)
    if spec.kind == "choice":
        for index, choice in enumerate(spec.choices):
            if choice == value:
                return index
        return spec.choices.index(spec.default) if spec.default in spec.choices else 0
    return formatText(spec, value)


def sameValue(a: Any, b: Any) -> bool:
    """Equal as settings: ``True`` is not ``1``, lists and tuples compare by items."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(sameValue(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------------- stored values
def loads(text: Optional[str]) -> dict[str, dict[str, Any]]:
    """The stored values (section -> name -> value); empty text is none. A stored text that is not
    such an object is a one-line ValueError."""
    text = str(text or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the advanced settings stored in the parameter node are not valid JSON "
                         f"({getattr(exc, 'msg', exc)}): {text[:80]!r}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"the advanced settings stored in the parameter node must be an object of "
                         f"sections ({', '.join(SECTIONS)}), got {text[:80]!r}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown advanced settings section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    return {section: dict(values) for section, values in data.items() if values}


def dumps(values: Mapping[str, Mapping[str, Any]]) -> str:
    """The JSON stored in the parameter node: sections in :data:`SECTIONS` order, names sorted,
    empty sections left out."""
    ordered = {section: dict(sorted(values[section].items())) for section in SECTIONS if values.get(section)}
    return json.dumps(ordered)


def currentValue(values: Mapping[str, Mapping[str, Any]], spec: FieldSpec) -> Any:
    section = values.get(spec.section) or {}
    return section[spec.name] if spec.name in section else spec.default


def withValue(values: Mapping[str, Mapping[str, Any]], spec: FieldSpec, value: Any) -> dict[str, dict[str, Any]]:
    """``values`` with ``spec`` set to ``value``; a value equal to the default is removed."""
    result = {section: dict(items) for section, items in values.items()}
    section = result.setdefault(spec.section, {})
    if sameValue(value, spec.default):
        section.pop(spec.name, None)
    else:
        section[spec.name] = copy.deepcopy(value)
    return {name: items for name, items in result.items() if items}


def pruned(values: Mapping[str, Mapping[str, Any]], docs: Mapping[str, Iterable]) -> dict[str, dict[str, Any]]:
    """``values`` less the parameters that ``docs`` (the chosen encoder and method) lack."""
    known = offeredPaths(docs)
    result = {}
    for section, items in values.items():
        kept = {name: value for name, value in items.items() if f"{section}.{name}" in known}
        if kept:
            result[section] = kept
    return result


def withoutUnknown(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A settings dict whose nested sections keep only the parameters of its encoder and method:
    what a run sends after the method changed. Unchanged without the engine or for an unknown
    encoder or method (the engine's check then says so)."""
    result = copy.deepcopy(dict(settings))
    try:
        docs = sectionDocs(result.get("encoder") or "", result.get("method") or "")
    except (ImportError, ValueError):
        return result
    known = offeredPaths(docs)
    for section in SECTIONS:
        if isinstance(result.get(section), dict):
            result[section] = {name: value for name, value in result[section].items()
                               if f"{section}.{name}" in known}
    return result


def problem(settings: Mapping[str, Any]) -> Optional[str]:
    """The engine's one-line complaint about ``settings``, or None (also without the engine)."""
    try:
        _, _, Settings, InputError = _engine()
    except ImportError:
        return None
    try:
        Settings.parse(dict(settings))
    except (InputError, TypeError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None
