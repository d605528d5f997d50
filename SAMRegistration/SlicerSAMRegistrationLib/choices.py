"""What the module offers in its menus: encoders, methods, presets and devices.

Method names are the modules of the engine's methods package, encoder names those declared in
its encoders package's sources (listed and read, not imported; a test keeps both equal to the
discovered plug-ins). Listing them imports neither torch nor pydantic: the GUI fills its menus
before the first Apply installs the engine's requirements.

Settings here are the engine's nested settings dict (``SAMRegistrationLib/settings.py``):
shared keys at the top, ``encoder_params`` and ``method_params`` nested.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from SAMRegistrationLib import plugins

DEVICES = ("auto", "cpu", "cuda")
SECTIONS = ("encoder_params", "prompt_params", "method_params")

#: preset -> engine settings that differ from the defaults
PRESETS: dict[str, dict[str, Any]] = {
    # MIND-SSC only with convexadam: no foundation-model encoding, fewer Adam steps
    "fast": {"encoder": "mind", "method": "convexadam", "method_params": {"iterations": 30, "ic_iterations": 5}},
    # the engine's measured defaults (LiteMedSAM fused with MIND-SSC; MIND alone across contrasts)
    "balanced": {},
    # denser slice encoding and a longer instance optimisation
    "accurate": {"encoder_params": {"slice_step": 2}, "method_params": {"iterations": 100}},
}
DEFAULT_PRESET = "balanced"

#: the engine defaults of what the panel shows, for before pydantic is installed (a test keeps
#: them equal to ``Settings()``)
PANEL_DEFAULTS: dict[str, Any] = {
    "encoder": "auto", "method": "pyramid", "device": "auto", "spacing": None,
    "encoder_params": {"slice_step": None, "pca_dims": 12},
    "method_params": {"lambda_reg": 0.3, "iterations": 50},
}


def encoder_names() -> list[str]:
    return plugins.declared_encoder_names()


def method_names() -> list[str]:
    return plugins.method_module_names()


def default_settings() -> dict[str, Any]:
    """The engine's default settings as a nested dict (``spacing``/``slice_step`` None = auto);
    the panel's part of them while the engine's requirements are not installed yet."""
    try:
        from SAMRegistrationLib.settings import Settings
    except ImportError:                     # pydantic comes with the first Apply's installation
        return copy.deepcopy(PANEL_DEFAULTS)
    return Settings().to_dict()


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` applied; the nested sections are merged key by key."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if key in SECTIONS and isinstance(value, dict):
            result[key] = {**(result.get(key) or {}), **value}
        else:
            result[key] = value
    return result


def settingValue(settings: dict[str, Any], path: str) -> Any:
    """The value at ``path`` ("spacing" or "method_params.iterations") of a settings dict."""
    section, _, name = path.rpartition(".")
    return (settings.get(section) or {}).get(name) if section else settings.get(name)


def settings_from(preset: str, nested: Optional[dict[str, Any]] = None,
                  advanced: Optional[dict[str, dict[str, Any]]] = None, **overrides: Any) -> dict[str, Any]:
    """The settings ``preset`` changes, with the non-None ``overrides`` (top-level settings) and
    ``nested`` (a settings dict, sections merged) applied on top.

    ``advanced`` (section -> name -> value, the panel's Advanced form), when given, takes the
    place of the preset's nested sections: the panel then states every nested value itself,
    and ``nested`` still applies over it.

    Settings left out keep the engine's defaults, so a job file states only what was chosen;
    the engine checks every key and value when the job runs (one line for a bad one).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    if advanced is not None:
        base = {key: value for key, value in base.items() if key not in SECTIONS}
        base.update({section: dict(values) for section, values in advanced.items() if section in SECTIONS})
    chosen = merged(base, {key: value for key, value in overrides.items() if value is not None})
    return merged(chosen, nested or {})
