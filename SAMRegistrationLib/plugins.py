"""Registration methods as plug-ins, found without importing torch.

A method is one module in ``SAMRegistrationLib/methods/`` that defines ``PLUGIN =
MethodPlugin(...)``: its name, a one-line summary, its typed parameter class (a
:class:`~SAMRegistrationLib.params.Parameters` subclass), what it needs, and
``run(problem, params) -> MethodResult`` (see :mod:`SAMRegistrationLib.problem`); optionally
``train``. Modules there import torch only inside ``run``, so listing the methods and their
parameters (the CLI help, the Slicer panel's menus) stays light; a test holds every module
to that. Adding a method is adding a module: nothing else lists the names.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional

from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:      # the listing below needs neither pydantic nor torch
    from .params import Parameters

METHODS_PACKAGE = "SAMRegistrationLib.methods"


@dataclass(frozen=True)
class MethodPlugin:
    name: str
    summary: str
    Params: "type[Parameters]"
    run: Callable                       # run(problem, params) -> MethodResult
    needs_prompts: bool = False         # point prompts (clicks or --auto-prompts) are required
    needs_weights: bool = False         # trained weights (a checkpoint) are required
    prefers_gpu: bool = False           # runs on the CPU, but is meant for a GPU
    train: Optional[Callable] = None    # train(config) for learned methods


_methods: Optional[dict[str, MethodPlugin]] = None


def methods() -> dict[str, MethodPlugin]:
    """Every method plug-in, by name (modules of the methods package that define PLUGIN)."""
    global _methods
    if _methods is None:
        package = importlib.import_module(METHODS_PACKAGE)
        found: dict[str, MethodPlugin] = {}
        for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{METHODS_PACKAGE}.{module_info.name}")
            plugin = getattr(module, "PLUGIN", None)
            if not isinstance(plugin, MethodPlugin):
                continue
            if plugin.name in found:
                raise ValueError(f"method {plugin.name!r} is defined twice")
            found[plugin.name] = plugin
        _methods = found
    return _methods


def method_names() -> list[str]:
    return sorted(methods())


def method_module_names() -> list[str]:
    """The method names without importing anything: each plug-in module is named after its
    method (a test holds them to that). For menus filled before the requirements are installed."""
    spec = importlib.util.find_spec(METHODS_PACKAGE)
    paths = list(spec.submodule_search_locations or []) if spec is not None else []
    return sorted(m.name for m in pkgutil.iter_modules(paths) if not m.name.startswith("_"))


def method_plugin(name: str) -> MethodPlugin:
    try:
        return methods()[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}") from None


def prompt_methods() -> set[str]:
    """Methods that need point prompts (a benchmark without clicks leaves them out)."""
    return {name for name, plugin in methods().items() if plugin.needs_prompts}
