"""Command-line options made from the parameter classes, so a parameter declared once (type,
range, default, description) is also a ``samreg register`` option.

``samreg train`` gets one option per :class:`~.training.config.TrainConfig` field and per
training parameter of the trainable methods (:func:`add_training_options`).

``samreg register`` has three groups: the encoders' parameters (the union over every encoder
plug-in), the point-prompt parameters (``--prompt-…``, :class:`~.settings.PromptParams`) and the
methods' parameters (the union over every method plug-in). Each plug-in option says which
encoders or methods take it; a value for a parameter the chosen one lacks is refused by its
class with one line.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any, Callable, Optional

from .params import ParameterDoc, describe

#: option group -> (key in the settings dict, prefix of the option names)
SECTIONS = {"encoder parameters": ("encoder_params", ""),
            "point-prompt parameters": ("prompt_params", "prompt-"),
            "method parameters": ("method_params", "")}
_SEPARATOR = "__"


def _converter(doc: ParameterDoc) -> Callable[[str], Any]:
    base = doc.type.replace(" or null", "")

    def convert(text: str) -> Any:
        if doc.type.endswith("or null") and text.lower() in ("none", "null", "auto"):
            return None
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
        if base.startswith("list"):
            parts = [part.strip() for part in text.split(",") if part.strip()]
            return [int(p) for p in parts] if base == "list[int]" else parts
        return text
    convert.__name__ = base.split("[")[0]       # argparse names the type in its error message
    return convert


def _help(doc: ParameterDoc, plugins: Optional[list[str]] = None) -> str:
    text = doc.description or doc.name
    default = "none" if doc.default is None else (",".join(map(str, doc.default)) if isinstance(doc.default, list)
                                                 else doc.default)
    text += f" (default: {default}"
    if doc.minimum is not None or doc.maximum is not None:
        text += f"; range {'' if doc.minimum is None else doc.minimum}..{'' if doc.maximum is None else doc.maximum}"
    if plugins is not None:
        text += f"; for: {', '.join(plugins)}"
    return (text + ")").replace("%", "%%")


def _union(plugins: dict, attribute: str = "Params") -> list[tuple[ParameterDoc, list[str]]]:
    """Each parameter of any of ``plugins`` once, with the names of the plug-ins that take it;
    ``attribute`` names the parameter class (a missing TrainParams falls back to Params)."""
    union: dict[str, tuple[ParameterDoc, list[str]]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for name, plugin in sorted(plugins.items()):
        for doc in describe(getattr(plugin, attribute, None) or plugin.Params):
            union.setdefault(doc.name, (doc, []))[1].append(name)
            defaults.setdefault(doc.name, {})[name] = doc.default
    out = []
    for key, (doc, owners) in union.items():
        if len({repr(v) for v in defaults[key].values()}) > 1:     # the owners' defaults differ: name each
            doc = replace(doc, default=", ".join(f"{value} for {owner}" for owner, value in defaults[key].items()))
        out.append((doc, owners))
    return out


def _docs_by_section() -> dict[str, list[tuple[ParameterDoc, Optional[list[str]]]]]:
    from .plugins import encoders, methods
    from .settings import PromptParams
    sections: dict[str, list] = {"encoder parameters": _union(encoders()),
                                 "point-prompt parameters": [(d, None) for d in describe(PromptParams)],
                                 "method parameters": _union(methods())}
    return sections


def add_parameter_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per parameter of every parameter class to ``parser``."""
    for title, entries in _docs_by_section().items():
        key, prefix = SECTIONS[title]
        add_options(parser.add_argument_group(title), entries, key, prefix)


def add_options(group, entries: list[tuple[ParameterDoc, Optional[list[str]]]], key: str, prefix: str) -> None:
    """One option ``--<prefix><name>`` per parameter, its value stored under ``key`` (see
    :func:`parameter_values`); ``owners`` (the plug-ins that take it) go into the help."""
    for doc, owners in entries:
        option = "--" + prefix + doc.name.replace("_", "-")
        dest = key + _SEPARATOR + doc.name
        if doc.type == "bool":
            group.add_argument(option, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                               help=_help(doc, owners))
        else:
            choices = list(doc.choices) if doc.choices and not doc.type.startswith("list") else None
            group.add_argument(option, dest=dest, type=_converter(doc), choices=choices, default=None,
                               metavar=None if choices else doc.name.split("_")[-1].upper(),
                               help=_help(doc, owners))


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """``samreg train``'s options: one per TrainConfig field (under ``train_config``), and one per
    training parameter of every trainable method (under ``method_params``; a name TrainConfig
    already uses gets the prefix ``method-``)."""
    from .plugins import methods
    from .training.config import SamplingConfig, TrainConfig
    docs = [(doc, None) for doc in describe(TrainConfig)]
    sampling = set(SamplingConfig.model_fields)
    add_options(parser.add_argument_group("training"), [d for d in docs if d[0].name not in sampling],
                "train_config", "")
    add_options(parser.add_argument_group("training pairs"), [d for d in docs if d[0].name in sampling],
                "train_config", "")
    taken = {doc.name for doc, _ in docs} | {"data", "output", "restart", "quiet", "help"}   # train's own options
    entries = _union({n: p for n, p in methods().items() if p.train is not None}, "TrainParams")
    group = parser.add_argument_group("method training parameters")
    add_options(group, [e for e in entries if e[0].name not in taken], "method_params", "")
    add_options(group, [e for e in entries if e[0].name in taken], "method_params", "method-")


def parameter_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The parameter options given on the command line, nested as in the settings dict."""
    nested: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if _SEPARATOR in dest and value is not None:
            key, name = dest.split(_SEPARATOR, 1)
            nested.setdefault(key, {})[name] = value
    return nested
