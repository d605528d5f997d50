"""Typed, validated parameters: the base class of every settings and plug-in parameter class.

A parameter is declared once, on a :class:`Parameters` subclass, with its type, default,
range or choices and a one-line description (``Field(description=...)``). The same class then
checks a CLI option, a job file's settings and the Slicer panel's values, and describes itself
for the CLI help and the docs (:func:`describe`). Validation is pydantic's (v2); its errors
become one :class:`~SAMRegistrationLib.errors.InputError` line naming the setting, the problem
and the value, and an unknown key lists the known ones.

pydantic is imported by this module only; nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InputError

P = TypeVar("P", bound="Parameters")


class Parameters(BaseModel):
    """Base of parameter classes: unknown keys refused, values checked on assignment too."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True,
                              allow_inf_nan=False, protected_namespaces=())

    @classmethod
    def parse(cls: type[P], values: Optional[Mapping[str, Any]] = None, where: str = "") -> P:
        """Validate ``values`` (missing keys take their defaults); InputError on one line."""
        if values is None:
            values = {}
        if isinstance(values, cls):
            return values
        if not isinstance(values, Mapping):
            raise InputError(f"{where or 'settings'} must be an object of name: value pairs, got {values!r}")
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise InputError(validation_message(exc, cls, where)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (nested parameter classes as dicts)."""
        return self.model_dump(mode="json")

    def replaced(self: P, **changes: Any) -> P:
        """A validated copy with ``changes``."""
        return type(self).parse({**self.model_dump(), **changes})


def _known(cls: type[BaseModel], location: tuple) -> list[str]:
    """The field names of the (possibly nested) class an error location points into."""
    current: Any = cls
    for part in location[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            return []
    return sorted(getattr(current, "model_fields", {}))


def validation_message(exc: ValidationError, cls: type[BaseModel], where: str = "") -> str:
    """One line for the first error of ``exc``: the dotted setting name, what is wrong, the value."""
    error = exc.errors(include_url=False)[0]
    location = tuple(str(part) for part in error.get("loc", ()))
    name = ".".join(((where,) if where else ()) + location) or where or "settings"
    if error.get("type") == "extra_forbidden":
        known = _known(cls, location)
        return f"unknown setting {name!r}" + (f"; known: {', '.join(known)}" if known else "")
    message = str(error.get("msg", "invalid value")).replace("\n", " ")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if "input" in error and error.get("type") != "missing":
        return f"setting {name!r}: {message} (got {error['input']!r})"
    return f"setting {name!r}: {message}"


@dataclass(frozen=True)
class ParameterDoc:
    """What the CLI help, the docs and the Slicer panel show of one parameter."""
    name: str
    type: str
    default: Any
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[tuple] = None


def _bounds(field) -> tuple[Optional[float], Optional[float]]:
    low = high = None
    for item in field.metadata:
        for attribute in ("ge", "gt"):
            if getattr(item, attribute, None) is not None:
                low = getattr(item, attribute)
        for attribute in ("le", "lt"):
            if getattr(item, attribute, None) is not None:
                high = getattr(item, attribute)
    return low, high


def _type_name(annotation: Any) -> tuple[str, Optional[tuple]]:
    import typing
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "choice", tuple(args)
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        name, choices = _type_name(inner[0]) if len(inner) == 1 else ("value", None)
        return f"{name} or null", choices
    if isinstance(annotation, type):
        return annotation.__name__, None
    return str(annotation).replace("typing.", ""), None


def describe(cls: type[BaseModel]) -> list[ParameterDoc]:
    """The parameters of ``cls`` in declaration order (nested parameter classes left out)."""
    docs = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            continue
        type_name, choices = _type_name(annotation)
        low, high = _bounds(field)
        docs.append(ParameterDoc(name, type_name, field.get_default(call_default_factory=True),
                                 field.description or "", low, high, choices))
    return docs
