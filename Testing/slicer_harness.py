"""Runs 3D Slicer's own Python layers headless, for the module's tests.

``../shared/slicer-python/`` holds Slicer v5.12.3's ``slicer/parameterNodeWrapper/``,
``slicer/ScriptedLoadableModule.py`` and ``slicer/i18n.py``, unchanged. ``slicer-core`` (PyPI)
provides the real MRML scene and ``slicer.util``; its ``slicer`` package extends its path, so
those layers join it here. The Qt side that they and the module import is stood in for by
``slicer_standins`` (``qt``, ``ctk``, ``slicer.app`` and the Qt widget classes on ``slicer``).

:class:`SlicerHarness` installs all of it into this process, loads the module as Slicer does
(module object, ``SAMRegistration(parent)``, the panel built on first use) and undoes every
change afterwards, so other tests see a plain ``slicer-core`` again.
"""
from __future__ import annotations

import importlib
import os
import stat
import sys
import types
from pathlib import Path
from typing import Any, Optional

import slicer_standins

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "SAMRegistration"
MODULE_PY = MODULE_DIR / "SAMRegistration.py"
SLICER_PYTHON = ROOT.parent / "shared" / "slicer-python"

#: Slicer's own Python layers that the harness runs (module name -> file under SLICER_PYTHON)
SLICER_LAYERS = {
    "slicer.i18n": "slicer/i18n.py",
    "slicer.parameterNodeWrapper": "slicer/parameterNodeWrapper/__init__.py",
    "slicer.ScriptedLoadableModule": "slicer/ScriptedLoadableModule.py",
}


def unavailableReason() -> Optional[str]:
    """Why the harness cannot run here, or None."""
    missing = [f for f in SLICER_LAYERS.values() if not (SLICER_PYTHON / f).is_file()]
    if missing:
        return (f"Slicer's Python layers are not at {SLICER_PYTHON} (../shared/slicer-python, missing "
                f"{', '.join(missing)}): the module's Slicer-layer tests need them")
    try:
        import slicer
    except ImportError:
        return "slicer-core (Slicer's MRML for Python) is not installed"
    if not hasattr(slicer, "vtkMRMLScene"):
        return "the 'slicer' package here is not slicer-core"
    return None


def _pythonSlicerShim(folder: Path) -> Path:
    """A ``PythonSlicer`` launcher for this interpreter, as Slicer ships one beside the app."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.name == "nt":
        shim = folder / "PythonSlicer.bat"
        shim.write_text(f'@"{sys.executable}" %*\n', encoding="utf-8")
    else:
        shim = folder / "PythonSlicer"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return shim


class SlicerHarness:
    """Slicer's Python layers on slicer-core with Qt stand-ins, installed until :meth:`uninstall`."""

    def __init__(self, workDir: Path, slicerVersion: tuple = (5, 12)) -> None:
        self.workDir = Path(workDir)
        self.slicerVersion = slicerVersion
        self._savedModules: dict[str, Any] = {}
        self._savedAttributes: dict[str, Any] = {}
        self._savedPath: Optional[str] = None
        self._savedSysPath: list[str] = []
        self.layers: dict[str, str] = {}     # Slicer layer -> the file it was imported from
        self.module = None                  # the imported SAMRegistration.py
        self.moduleObject = None            # stand-in of the qSlicerScriptedLoadableModule
        self.pythonSlicerDir = self.workDir / "slicer-bin"

    # ------------------------------------------------------------------ install / uninstall
    def install(self) -> "SlicerHarness":
        import slicer
        import vtk   # noqa: F401  (slicer-core's VTK; ScriptedLoadableModule imports it)
        qt, ctk, slicerClasses = slicer_standins.makeModules()
        for name in ("qt", "ctk", "SAMRegistration", *self._slicerModuleNames()):
            self._savedModules[name] = sys.modules.pop(name, None)
        sys.modules["qt"], sys.modules["ctk"] = qt, ctk
        attributes = dict(slicerClasses, app=slicer_standins.Application(*self.slicerVersion),
                          mrmlScene=slicer.vtkMRMLScene(), modules=types.SimpleNamespace())
        for name, value in attributes.items():
            self._savedAttributes[name] = getattr(slicer, name, _MISSING)
            setattr(slicer, name, value)
        self._savedAttributes["selfTests"] = getattr(slicer, "selfTests", _MISSING)   # ScriptedLoadableModule sets it
        self._savedAttributes["__path__"] = list(slicer.__path__)
        slicer.__path__.append(str(SLICER_PYTHON / "slicer"))
        self._savedSysPath = list(sys.path)
        for path in (str(MODULE_DIR), str(ROOT)):   # Slicer puts a scripted module's folder on sys.path
            if path not in sys.path:
                sys.path.insert(0, path)
        self._savedPath = os.environ.get("PATH")
        _pythonSlicerShim(self.pythonSlicerDir)
        os.environ["PATH"] = os.pathsep.join([str(self.pythonSlicerDir), self._savedPath or ""])
        for name, relative in SLICER_LAYERS.items():
            layer = importlib.import_module(name)
            expected = (SLICER_PYTHON / relative).resolve()
            if Path(layer.__file__).resolve() != expected:
                raise RuntimeError(f"{name} came from {layer.__file__}, not Slicer's copy {expected}")
            self.layers[name] = str(expected)
        return self

    def uninstall(self) -> None:
        import slicer
        if self.moduleObject is not None and self.moduleObject.isWidgetRepresentationCreated():
            # as when Slicer exits: the panel's cleanup() drops its scene observers
            slicer.app.moduleManager().emit("moduleAboutToBeUnloaded(QString)", "SAMRegistration")
        slicer_standins.Application.timers.clear()
        for name in [n for n in sys.modules if n == "SAMRegistration" or n in self._slicerModuleNames()]:
            del sys.modules[name]
        for name, module in self._savedModules.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
        for name, value in self._savedAttributes.items():
            if name == "__path__":
                slicer.__path__[:] = value
            elif value is _MISSING:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        for layer in ("i18n", "parameterNodeWrapper", "ScriptedLoadableModule"):
            if layer in vars(slicer) and layer not in self._savedAttributes:
                delattr(slicer, layer)
        sys.path[:] = self._savedSysPath
        if self._savedPath is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = self._savedPath

    @staticmethod
    def _slicerModuleNames() -> list[str]:
        names = [n for n in sys.modules if n.startswith("slicer.parameterNodeWrapper")]
        return names + ["slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.i18n"]

    # ------------------------------------------------------------------ the module
    def loadModule(self) -> types.ModuleType:
        """Import ``SAMRegistration.py`` and register it as Slicer's module manager does."""
        import slicer
        sys.modules.pop("SAMRegistration", None)
        self.module = importlib.import_module("SAMRegistration")
        self.moduleObject = slicer.qSlicerScriptedLoadableModule("SAMRegistration", str(MODULE_PY))
        self.module.SAMRegistration(self.moduleObject)
        self.moduleObject.widgetClass = self.module.SAMRegistrationWidget
        slicer.app.moduleManager().modules["SAMRegistration"] = self.moduleObject
        slicer.modules.samregistration = self.moduleObject
        return self.module

    def processEventsUntil(self, condition, timeout: float = 120.0, step: float = 0.02) -> bool:
        """Run the stand-in event loop (timers) until ``condition()`` or ``timeout`` seconds."""
        import time

        import slicer
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            slicer.app.processEvents()
            time.sleep(step)
        return True


_MISSING = object()
