"""SAM / MedSAM ViT slice encoders (``segment_anything.modeling.ImageEncoderViT``).

Registered names: ``sam-vit-b``, ``sam-vit-l``, ``sam-vit-h``, ``medsam-vit-b``. Weights come
from :func:`SAMRegistrationLib.checkpoints.resolve_sam_checkpoint` (never downloaded) and are
loaded with ``strict=True``; a checkpoint of another size raises :class:`CheckpointError`.

Preprocessing follows SAM: the [0, 1] slice is scaled to [0, 255], replicated to RGB and
normalised with SAM's pixel mean/std. The ViT has a fixed absolute position embedding, so it
only runs at ``canvas`` x ``canvas`` (1024): :meth:`SamViTEncoder.embed` accepts any height and
width that are multiples of 16 and at most the canvas, pads them at the bottom/right with zeros
*after* normalisation (which is what ``Sam.preprocess`` does) and crops the embedding back to
(H/16, W/16). Callers should still prefer to fill the canvas, since padding costs the same time.

Importing the ``segment_anything`` package runs its ``__init__``, which needs torchvision; only
the two modeling files are needed here, so they are loaded under a private module name.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from functools import partial
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints import load_into, load_state_dict, resolve_sam_checkpoint, submodule_state
from ..errors import CheckpointError, InputError
from .litemedsam import configure_threads, resolve_device

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

#: standard SAM image-encoder hyper-parameters per model
SAM_CONFIGS: Dict[str, dict] = {
    "sam-vit-b": dict(embed_dim=768, depth=12, heads=12, global_idx=(2, 5, 8, 11)),
    "sam-vit-l": dict(embed_dim=1024, depth=24, heads=16, global_idx=(5, 11, 17, 23)),
    "sam-vit-h": dict(embed_dim=1280, depth=32, heads=16, global_idx=(7, 15, 23, 31)),
    "medsam-vit-b": dict(embed_dim=768, depth=12, heads=12, global_idx=(2, 5, 8, 11)),
}
DEFAULT_BATCH_SIZE = 1   # a 1024x1024 ViT-B forward already needs ~2 GB of activations

_PRIVATE_PACKAGE = "_samreg_segment_anything_modeling"


def sam_modeling_class(module: str, name: str):
    """A class of ``segment_anything.modeling.<module>`` without executing
    ``segment_anything/__init__.py`` (which imports torchvision)."""
    module_name = f"{_PRIVATE_PACKAGE}.{module}"
    if module_name not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError("SAM models need the segment-anything package; "
                                  "install it with: pip install segment-anything==1.0")
        modeling_dir = Path(list(spec.submodule_search_locations)[0]) / "modeling"
        if _PRIVATE_PACKAGE not in sys.modules:
            package = types.ModuleType(_PRIVATE_PACKAGE)
            package.__path__ = [str(modeling_dir)]
            sys.modules[_PRIVATE_PACKAGE] = package
        for sub in ("common", module):   # every modeling module needs only ``common`` besides itself
            full = f"{_PRIVATE_PACKAGE}.{sub}"
            if full in sys.modules:
                continue
            sub_spec = importlib.util.spec_from_file_location(full, modeling_dir / f"{sub}.py")
            loaded = importlib.util.module_from_spec(sub_spec)
            sys.modules[full] = loaded
            sub_spec.loader.exec_module(loaded)
    return getattr(sys.modules[module_name], name)


def _image_encoder_class():
    return sam_modeling_class("image_encoder", "ImageEncoderViT")


def build_image_encoder(embed_dim: int, depth: int, heads: int, global_idx: Sequence[int],
                        img_size: int = 1024, patch_size: int = 16, window_size: int = 14,
                        out_chans: int = 256) -> nn.Module:
    """SAM's ``ImageEncoderViT`` with SAM's fixed choices (rel. pos., qkv bias, LayerNorm eps 1e-6).

    The defaults give the real models; tests build tiny ones (e.g. ``embed_dim=32, depth=2,
    heads=2, global_idx=(1,), img_size=64, window_size=2``).
    """
    cls = _image_encoder_class()
    return cls(depth=depth, embed_dim=embed_dim, img_size=img_size, mlp_ratio=4,
               norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=patch_size,
               qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(global_idx),
               window_size=window_size, out_chans=out_chans)


class SamViTEncoder:
    size_multiple = 16
    flexible_size = False
    channels = 256

    def __init__(self, name: str, checkpoint: Path, device: torch.device | str = "cpu",
                 config: Optional[dict] = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.name = name
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        config = dict(config or SAM_CONFIGS[name])
        self.model = build_image_encoder(**config)
        self.canvas = int(self.model.img_size)
        self.stride = int(config.get("patch_size", 16))
        self.size_multiple = self.stride
        self.channels = int(config.get("out_chans", 256))
        self.checkpoint_path = Path(checkpoint)
        state = submodule_state(load_state_dict(self.checkpoint_path), "image_encoder.", self.checkpoint_path)
        load_into(self.model, state, self.checkpoint_path, name)
        del state
        self.model.eval().requires_grad_(False).to(self.device)
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=self.device).view(1, 3, 1, 1)

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1], H, W multiples of 16 and <= canvas -> (B, 256, H/16, W/16) on CPU."""
        if not isinstance(slices, torch.Tensor) or slices.ndim != 4 or slices.shape[1] != 1:
            shape = tuple(slices.shape) if isinstance(slices, torch.Tensor) else type(slices).__name__
            raise InputError(f"{self.name} expects slices shaped (B, 1, H, W), got {shape}.")
        b, _, h, w = slices.shape
        s, canvas = self.stride, self.canvas
        if h % s or w % s or not 0 < h <= canvas or not 0 < w <= canvas:
            raise InputError(f"{self.name} needs slice sizes that are multiples of {s} and at most "
                             f"{canvas}x{canvas}, got {h}x{w}.")
        out = torch.empty(b, self.channels, h // s, w // s, dtype=torch.float32)
        with torch.inference_mode():
            for start in range(0, b, self.batch_size):
                chunk = slices[start:start + self.batch_size].to(self.device, torch.float32)
                x = torch.nan_to_num(chunk, nan=0.0).clamp_(0.0, 1.0) * 255.0
                x = (x.expand(-1, 3, -1, -1) - self._mean) / self._std
                x = F.pad(x, (0, canvas - w, 0, canvas - h))
                y = self.model(x)[:, :, : h // s, : w // s]
                out[start:start + y.shape[0]] = y.float().cpu()
        return out


def load_sam_encoder(name: str, settings, config: Optional[dict] = None) -> SamViTEncoder:
    """Resolve, verify and load the checkpoint of ``name``; ``config`` overrides the architecture (tests)."""
    configure_threads(getattr(settings, "threads", None))
    device = resolve_device(getattr(settings, "device", "auto"))
    path = resolve_sam_checkpoint(name, getattr(settings, "checkpoint", None))
    return SamViTEncoder(name, path, device=device, config=config)

