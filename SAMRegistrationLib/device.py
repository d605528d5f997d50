"""Compute device and thread count, shared by encoders and the pipeline."""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from .errors import InputError

log = logging.getLogger(__name__)


def resolve_device(requested: Optional[str]) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU -> cpu with a warning."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {requested!r}; choose auto, cpu or cuda.")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("CUDA was requested but is not available; running on the CPU instead.")
    return torch.device("cpu")


def configure_threads(threads: Optional[int]) -> int:
    """Set torch's intra-op threads to ``threads`` (None or <= 0: all cores); returns the count."""
    count = int(threads) if threads and int(threads) > 0 else (os.cpu_count() or 1)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
