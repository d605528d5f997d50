"""Name -> factory registries for encoders; methods are plug-ins found by :mod:`.plugins`.

A new encoder is one module that calls one of the ``register_*`` decorators at import time;
:func:`load_plugins` imports the built-in modules so the registries are full.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List

from .errors import InputError

#: 2D slice encoders (foundation models): name -> loader(settings) -> SliceEncoder
SLICE_ENCODERS: Dict[str, Callable] = {}
#: volume feature extractors: name -> factory(settings) -> VolumeEncoder
VOLUME_ENCODERS: Dict[str, Callable] = {}

_BUILTIN_MODULES = (
    "SAMRegistrationLib.encoders.litemedsam",
    "SAMRegistrationLib.encoders.sam_vit",
    "SAMRegistrationLib.encoders.mind",
    "SAMRegistrationLib.encoders.slicewise",
    "SAMRegistrationLib.encoders.fusion",
    "SAMRegistrationLib.encoders.auto",
)
_loaded = False

#: names the built-in modules register, listed without importing them (torch may not be
#: installed yet where a GUI fills its menus); a test keeps these equal to the registries
BUILTIN_ENCODER_NAMES = ("auto", "litemedsam", "litemedsam+mind", "medsam-vit-b", "mind",
                         "sam-vit-b", "sam-vit-h", "sam-vit-l")


def _register(table: Dict[str, Callable], kind: str, name: str):
    def decorator(factory: Callable) -> Callable:
        if name in table and table[name] is not factory:
            raise ValueError(f"{kind} {name!r} registered twice")
        table[name] = factory
        return factory
    return decorator


def register_slice_encoder(name: str):
    return _register(SLICE_ENCODERS, "slice encoder", name)


def register_volume_encoder(name: str):
    return _register(VOLUME_ENCODERS, "encoder", name)


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    importlib.import_module("SAMRegistrationLib.encoders.slicewise").register_slice_based()
    _loaded = True


def encoder_names() -> List[str]:
    load_plugins()
    return sorted(VOLUME_ENCODERS)


def method_names() -> List[str]:
    from .plugins import method_names as names
    return names()


def get_volume_encoder(name: str) -> Callable:
    load_plugins()
    try:
        return VOLUME_ENCODERS[name]
    except KeyError:
        raise InputError(f"unknown encoder {name!r}; choose one of: {', '.join(sorted(VOLUME_ENCODERS))}") from None


def get_method(name: str):
    """The method plug-in called ``name`` (InputError naming the choices otherwise)."""
    from .plugins import method_plugin
    return method_plugin(name)
