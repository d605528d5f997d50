"""What the module offers in its menus: encoders, methods, presets and devices.

Names come from the engine's registry: its torch-free list of built-in names (a test keeps it
equal to the loaded registries) plus anything registered already. Listing them never imports
torch: the GUI fills its menus before the first Apply installs the engine's dependencies.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from SAMRegistrationLib import registry
from SAMRegistrationLib.settings import Settings

DEVICES = ("auto", "cpu", "cuda")

#: preset -> engine settings that differ from the defaults
PRESETS: dict[str, dict[str, Any]] = {
    # MIND-SSC only: no foundation-model encoding, fewer Adam steps
    "fast": {"encoder": "mind", "iterations": 30, "ic_iterations": 5},
    # the engine's measured defaults (LiteMedSAM fused with MIND-SSC; MIND alone across contrasts)
    "balanced": {},
    # denser slice encoding and a longer instance optimisation
    "accurate": {"slice_step": 2, "iterations": 100},
}
DEFAULT_PRESET = "balanced"


def _names(table: dict, builtin) -> list[str]:
    # The built-in names plus whatever is registered already; plugins are not loaded here,
    # because that would import torch into the GUI process (only the worker needs it).
    return sorted(set(builtin) | set(table))


def encoder_names() -> list[str]:
    return _names(registry.VOLUME_ENCODERS, registry.BUILTIN_ENCODER_NAMES)


def method_names() -> list[str]:
    return _names(registry.METHODS, registry.BUILTIN_METHOD_NAMES)


def default_settings() -> dict[str, Any]:
    """The engine's default settings as a plain dict (``spacing``/``slice_step`` None = auto)."""
    return dataclasses.asdict(Settings())


def settings_from(preset: str, **overrides: Any) -> dict[str, Any]:
    """The settings ``preset`` changes, with every non-None override applied on top.

    Settings left out keep the engine's defaults, so a job file states only what was chosen.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    known = set(default_settings())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    chosen = dict(PRESETS[preset])
    chosen.update({key: value for key, value in overrides.items() if value is not None})
    return chosen
