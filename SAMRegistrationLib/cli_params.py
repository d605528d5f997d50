"""Command-line options made from the parameter classes, so a parameter declared once (type,
range, default, description) is also a ``samreg register`` option.

Three groups: the encoders' parameters (:class:`~.settings.EncoderParams`), the point-prompt
parameters (``--prompt-…``, :class:`~.settings.PromptParams`) and the methods' parameters (the
union over every method plug-in; each option says which methods take it, and a value for a
parameter the chosen method lacks is refused by that method's class with one line).
"""
from __future__ import annotations

import argparse
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


def _help(doc: ParameterDoc, methods: Optional[list[str]] = None) -> str:
    text = doc.description or doc.name
    default = "none" if doc.default is None else (",".join(map(str, doc.default)) if isinstance(doc.default, list)
                                                 else doc.default)
    text += f" (default: {default}"
    if doc.minimum is not None or doc.maximum is not None:
        text += f"; range {'' if doc.minimum is None else doc.minimum}..{'' if doc.maximum is None else doc.maximum}"
    if methods is not None:
        text += f"; methods: {', '.join(methods)}"
    return (text + ")").replace("%", "%%")


def _docs_by_section() -> dict[str, list[tuple[ParameterDoc, Optional[list[str]]]]]:
    from .plugins import methods
    from .settings import EncoderParams, PromptParams
    sections: dict[str, list] = {"encoder parameters": [(d, None) for d in describe(EncoderParams)],
                                 "point-prompt parameters": [(d, None) for d in describe(PromptParams)]}
    union: dict[str, tuple[ParameterDoc, list[str]]] = {}
    for name, plugin in sorted(methods().items()):
        for doc in describe(plugin.Params):
            union.setdefault(doc.name, (doc, []))[1].append(name)
    sections["method parameters"] = list(union.values())
    return sections


def add_parameter_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per parameter of every parameter class to ``parser``."""
    for title, entries in _docs_by_section().items():
        key, prefix = SECTIONS[title]
        group = parser.add_argument_group(title)
        for doc, methods in entries:
            option = "--" + prefix + doc.name.replace("_", "-")
            dest = key + _SEPARATOR + doc.name
            if doc.type == "bool":
                group.add_argument(option, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                   help=_help(doc, methods))
            else:
                choices = list(doc.choices) if doc.choices and not doc.type.startswith("list") else None
                group.add_argument(option, dest=dest, type=_converter(doc), choices=choices, default=None,
                                   metavar=None if choices else doc.name.split("_")[-1].upper(),
                                   help=_help(doc, methods))


def parameter_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The parameter options given on the command line, nested as in the settings dict."""
    nested: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if _SEPARATOR in dest and value is not None:
            key, name = dest.split(_SEPARATOR, 1)
            nested.setdefault(key, {})[name] = value
    return nested
