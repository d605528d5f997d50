"""Encoder plug-ins: each module here declares one or more encoders (``PLUGIN`` or ``PLUGINS``,
an :class:`~SAMRegistrationLib.plugins.EncoderPlugin`) with a typed parameter class, and
imports its tensor code (:mod:`SAMRegistrationLib.features`) only when an encoder is built, so
listing encoders and their parameters needs no torch.

``build_encoder(name, settings)`` makes the volume encoder a run uses: an object with
``features(fixed01, moving01, affine, grid, reporter) -> (fixed, moving, info)``.
"""
from __future__ import annotations

from typing import Any


def build_encoder(name: str, settings: Any) -> Any:
    """The volume encoder ``name`` for ``settings`` (InputError naming the choices if unknown)."""
    from ..plugins import encoder_plugin
    return encoder_plugin(name).build(settings)
