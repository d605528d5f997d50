"""Which 3D Slicer this module runs in.

Kept importable by any Python 3 (no newer syntax): it runs before the rest of the module is
imported, so that an older Slicer gets one clear message instead of an import error.

Why 5.10: Slicer 5.8 bundles Python 3.9, Slicer 5.10 and later Python 3.12, and the engine's
PyTorch 2.13 (and its own code) needs Python 3.10 or later.
"""

MINIMUM_SLICER_VERSION = (5, 10)
MINIMUM_PYTHON_VERSION = (3, 10)


def _dotted(version):
    return ".".join(str(part) for part in version)


def unsupportedReason(slicerVersion, pythonVersion):
    """A one-line explanation when this Slicer (``(major, minor)``) or its Python
    (``sys.version_info``-like) is too old for the module; None when both are recent enough."""
    slicerVersion = tuple(int(part) for part in tuple(slicerVersion)[:2])
    pythonVersion = tuple(int(part) for part in tuple(pythonVersion)[:2])
    if slicerVersion < MINIMUM_SLICER_VERSION or pythonVersion < MINIMUM_PYTHON_VERSION:
        return ("SAM Registration needs 3D Slicer {slicer} or later (with Python {python} or later); "
                "this is 3D Slicer {found} with Python {foundPython}. "
                "Install a newer 3D Slicer from https://download.slicer.org.").format(
                    slicer=_dotted(MINIMUM_SLICER_VERSION), python=_dotted(MINIMUM_PYTHON_VERSION),
                    found=_dotted(slicerVersion), foundPython=_dotted(pythonVersion))
    return None


def runningSlicerVersion(app):
    """``(major, minor)`` of the running application (``slicer.app``)."""
    return (int(app.majorVersion), int(app.minorVersion))
