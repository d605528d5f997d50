"""Features of the training volumes, computed once: on disk and in memory.

A *feature provider* is a callable ``provider(image) -> (C, D', H', W')`` tensor, given a
:class:`SimpleITK.Image` on the training grid (float32 in [0, 1], with its geometry) and
returning features on a grid of D' x H' x W' cells over the same extent (cell-centred, as
average pooling makes them), with an ``identity`` string naming it and its settings.

:class:`FeatureCache` keys an entry by the content hash of the image (voxels and geometry)
and the provider's identity; entries are written atomically and carry the SHA-256 of their
tensor, so a corrupt or truncated entry is recomputed (and rewritten), never used.

For a synthetic pair the moving image is the fixed one warped by a known field, so its
features can be the cached ones warped by the same field (:func:`warp_features`) instead of
a second pass of the encoder; :func:`feature_warp_fidelity` measures what that costs.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..field_ops import warp
from ..io_atomic import atomic_path
from ..volume import FOREGROUND_THRESHOLD, content_hash

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@runtime_checkable
class FeatureProvider(Protocol):
    identity: str

    def __call__(self, image: sitk.Image) -> torch.Tensor:
        """(C, D', H', W') float features of ``image`` (a training-grid image in [0, 1])."""
        ...


def default_cache_dir() -> Path:
    base = os.environ.get("SAMREG_CACHE") or Path.home() / ".cache" / "samreg"
    return Path(base) / "training-features"


def tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def image_tensor(image: sitk.Image) -> torch.Tensor:
    """A SimpleITK image as a (1, 1, D, H, W) float32 tensor."""
    return torch.from_numpy(sitk.GetArrayFromImage(image).astype(np.float32))[None, None]


def tensor_image(tensor: torch.Tensor, like: sitk.Image) -> sitk.Image:
    """A (1, 1, D, H, W) tensor as a float32 image with ``like``'s geometry."""
    image = sitk.GetImageFromArray(tensor.detach().cpu().float()[0, 0].numpy())
    image.CopyInformation(like)
    return image


class FeatureCache:
    """``get(image)``: the provider's features of ``image``, from memory, else from disk, else
    computed and stored. ``folder=None`` keeps them in memory only. Counts what it did."""

    def __init__(self, provider: FeatureProvider, folder: Optional[Path] = None) -> None:
        self.provider = provider
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, torch.Tensor] = {}
        self.memory_hits = self.disk_hits = self.computed = 0

    def key(self, image: sitk.Image) -> str:
        text = f"{content_hash(image)}|{self.provider.identity}|{CACHE_FORMAT}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def path(self, image: sitk.Image) -> Optional[Path]:
        return None if self.folder is None else self.folder / f"{self.key(image)}.pt"

    def get(self, image: sitk.Image) -> torch.Tensor:
        key = self.key(image)
        if key in self._memory:
            self.memory_hits += 1
            return self._memory[key]
        features = self._load(key)
        if features is None:
            features = self.provider(image).detach().cpu().float().contiguous()
            self.computed += 1
            self._store(key, features)
        else:
            self.disk_hits += 1
        self._memory[key] = features
        return features

    def _load(self, key: str) -> Optional[torch.Tensor]:
        if self.folder is None:
            return None
        path = self.folder / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features = entry["features"]
            if (entry.get("identity") != self.provider.identity or not isinstance(features, torch.Tensor)
                    or tensor_digest(features) != entry.get("sha256")):
                raise ValueError("checksum or identity mismatch")
            return features
        except Exception as exc:    # a damaged entry is recomputed, never fatal
            log.warning("recomputing the damaged training feature cache entry %s (%s)", path, exc)
            return None

    def _store(self, key: str, features: torch.Tensor) -> None:
        if self.folder is None:
            return
        entry = {"features": features, "sha256": tensor_digest(features), "identity": self.provider.identity,
                 "format": CACHE_FORMAT}
        try:
            with atomic_path(self.folder / f"{key}.pt") as tmp:
                torch.save(entry, tmp)
        except OSError as exc:
            log.warning("could not write the training feature cache in %s (%s)", self.folder, exc)


# --------------------------------------------------------------------------- warping features
def field_on_grid(field: torch.Tensor, shape) -> torch.Tensor:
    """A (1, 3, D, H, W) voxel field resampled onto a cell-centred grid of ``shape`` over the same
    extent, its x, y, z components rescaled to that grid's voxels."""
    d, h, w = field.shape[-3:]
    if tuple(shape) == (d, h, w):
        return field
    resized = F.interpolate(field, size=tuple(shape), mode="trilinear", align_corners=False)
    scale = torch.tensor([shape[2] / w, shape[1] / h, shape[0] / d], dtype=field.dtype, device=field.device)
    return resized * scale.view(1, 3, 1, 1, 1)


def warp_features(features: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """(C, D', H', W') features warped by a (1, 3, D, H, W) image-grid field: (1, C, D', H', W')."""
    return warp(features[None].float(), field_on_grid(field.float(), features.shape[-3:]))


def foreground_cells(image: torch.Tensor, shape) -> torch.Tensor:
    """(D', H', W') bool: cells of ``shape`` whose image voxels are mostly foreground."""
    inside = (image > FOREGROUND_THRESHOLD).float()
    return F.interpolate(inside, size=tuple(shape), mode="area")[0, 0] > 0.5


def cosine_stats(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Cosine similarity over channels of (C, ...) ``a`` and ``b`` at ``mask``: mean and 1st
    percentile, raw and with each channel's mean over the mask removed first (foundation
    features carry large constant offsets that make any two of them look alike)."""
    a = a.reshape(a.shape[0], -1)[:, mask.reshape(-1)].double()
    b = b.reshape(b.shape[0], -1)[:, mask.reshape(-1)].double()
    out = {"voxels": float(a.shape[1])}
    for prefix, (x, y) in (("", (a, b)), ("centred_", (a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)))):
        cos = F.cosine_similarity(x, y, dim=0, eps=1e-12)
        out[f"{prefix}cosine_mean"] = float(cos.mean()) if cos.numel() else float("nan")
        # kthvalue, not quantile: quantile refuses inputs of more than 2^24 values
        out[f"{prefix}cosine_p1"] = (float(torch.kthvalue(cos, max(1, int(0.01 * cos.numel()))).values)
                                     if cos.numel() else float("nan"))
    return out


def feature_warp_fidelity(provider: FeatureProvider, volume: sitk.Image, field: torch.Tensor) -> dict[str, float]:
    """How well warped cached features stand in for re-encoding the warped image.

    ``volume`` is an image in [0, 1] (the training grid), ``field`` a (1, 3, D, H, W) voxel
    displacement on it. Compares warp_features(provider(volume), field) with
    provider(warp(volume, field)) over the warped image's foreground: cosine similarity mean and
    1st percentile (raw and channel-centred) and the number of feature cells compared.
    """
    image = image_tensor(volume)
    warped = warp(image, field.float())
    encoded = provider(volume).detach().cpu().float()
    reencoded = provider(tensor_image(warped, volume)).detach().cpu().float()
    moved = warp_features(encoded, field)[0]
    mask = foreground_cells(warped, encoded.shape[-3:])
    return cosine_stats(moved, reencoded, mask)
