"""Registration methods and feature encoders as plug-ins, found without importing torch.

A method is one module in ``SAMRegistrationLib/methods/`` that defines ``PLUGIN =
MethodPlugin(...)``: its name, a one-line summary, its typed parameter class (a
:class:`~SAMRegistrationLib.params.Parameters` subclass), what it needs, and
``run(problem, params) -> MethodResult`` (see :mod:`SAMRegistrationLib.problem`); optionally
``train``, a factory ``train(params) -> TrainingTask`` for ``samreg train`` (see
:mod:`SAMRegistrationLib.training`), with its parameter class ``TrainParams``. Modules there import torch only inside ``run``, so listing the methods and their
parameters (the CLI help, the Slicer panel's menus) stays light; a test holds every module
to that. Adding a method is adding a module: nothing else lists the names.

Encoders work the same way: a module in ``SAMRegistrationLib/encoders/`` defines ``PLUGIN``
(or ``PLUGINS`` for a family, such as the SAM ViTs) as an :class:`EncoderPlugin` with its
parameter class and ``build(settings)``; the tensor code lives in
:mod:`SAMRegistrationLib.features` and is imported by ``build``.
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
ENCODERS_PACKAGE = "SAMRegistrationLib.encoders"


@dataclass(frozen=True)
class MethodPlugin:
    name: str
    summary: str
    Params: "type[Parameters]"
    run: Callable                       # run(problem, params) -> MethodResult
    needs_prompts: bool = False         # point prompts (clicks or --auto-prompts) are required
    needs_weights: bool = False         # trained weights (a checkpoint) are required
    prefers_gpu: bool = False           # runs on the CPU, but is meant for a GPU
    train: Optional[Callable] = None    # train(params) -> TrainingTask, for learned methods
    TrainParams: "Optional[type[Parameters]]" = None   # train's parameters (default: Params)
    preflight: Optional[Callable] = None  # preflight(params): raise before any work (e.g. a missing model)
    own_features: Optional[str] = None  # the encoder the method always uses itself (a model trained on its
    #                                     features): the pipeline encodes nothing and --encoder is not used


@dataclass(frozen=True)
class EncoderPlugin:
    name: str
    summary: str
    Params: "type[Parameters]"
    build: Callable                     # build(settings) -> volume encoder (see SAMRegistrationLib.encoders)
    needs_checkpoint: bool = False      # a model checkpoint file must be supplied
    slice_model: Optional[Callable] = None   # slice_model(settings) -> 2D SliceEncoder, for slice-wise encoders
    channels: Optional[Callable] = None      # channels(params) -> feature channels it yields (memory estimates)


_found: dict[str, dict] = {}


def _discover(package_name: str, kind: type) -> dict:
    """``{name: plug-in}`` from the modules and packages of ``package_name`` that define
    ``PLUGIN`` or ``PLUGINS`` instances of ``kind``; a name defined twice is an error."""
    if package_name not in _found:
        package = importlib.import_module(package_name)
        found: dict = {}
        for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{package_name}.{module_info.name}")
            declared = list(getattr(module, "PLUGINS", ())) + [getattr(module, "PLUGIN", None)]
            for plugin in declared:
                if not isinstance(plugin, kind):
                    continue
                if plugin.name in found:
                    raise ValueError(f"{kind.__name__} {plugin.name!r} is defined twice")
                found[plugin.name] = plugin
        _found[package_name] = found
    return _found[package_name]


def methods() -> dict[str, MethodPlugin]:
    """Every method plug-in, by name (modules of the methods package that define PLUGIN)."""
    return _discover(METHODS_PACKAGE, MethodPlugin)


def encoders() -> dict[str, EncoderPlugin]:
    """Every encoder plug-in, by name (modules of the encoders package that define PLUGIN or PLUGINS)."""
    return _discover(ENCODERS_PACKAGE, EncoderPlugin)


def encoder_names() -> list[str]:
    return sorted(encoders())


def encoder_plugin(name: str) -> EncoderPlugin:
    try:
        return encoders()[name]
    except KeyError:
        raise InputError(f"unknown encoder {name!r}; choose one of: {', '.join(encoder_names())}") from None


def register_method(plugin: MethodPlugin) -> None:
    """Add a method plug-in defined outside the methods package (a notebook, a test's own
    learned task), for this process only; its name must not be taken."""
    found = methods()
    if found.get(plugin.name, plugin) is not plugin:
        raise ValueError(f"MethodPlugin {plugin.name!r} is defined twice")
    found[plugin.name] = plugin


def trainable_method_names() -> list[str]:
    """The methods that ``samreg train`` can train (those with a ``train`` factory)."""
    return sorted(name for name, plugin in methods().items() if plugin.train is not None)


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


def declared_encoder_names() -> list[str]:
    """The encoder names read from the plug-in modules' source, importing nothing (neither
    pydantic nor torch): the string given as ``name="..."`` in each call there. For menus filled
    before the requirements are installed; a test holds this equal to :func:`encoder_names`."""
    import ast
    spec = importlib.util.find_spec(ENCODERS_PACKAGE)
    names: set[str] = set()
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for module_info in pkgutil.iter_modules([folder]):
            path = f"{folder}/{module_info.name}.py"
            try:
                with open(path, encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
            except OSError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    names.update(keyword.value.value for keyword in node.keywords
                                 if keyword.arg == "name" and isinstance(keyword.value, ast.Constant)
                                 and isinstance(keyword.value.value, str))
    return sorted(names)
