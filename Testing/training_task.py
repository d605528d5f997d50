"""A small but real learned registration task, for the tests of the training machinery.

``tiny-net``: a three-layer 3D convolutional network reads the fixed and moving images and
predicts a displacement (training-grid voxels); the loss is 1 - NCC (global, or local in a
box window) between the warped moving image and the fixed one, plus a diffusion penalty;
validation scores the Dice of the warped label maps, the folding and the NCC. It is not in
the package: ``train_cli.py`` registers it in its own process only.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.field_ops import jacobian_det, warp
from SAMRegistrationLib.params import Parameters
from SAMRegistrationLib.plugins import MethodPlugin
from SAMRegistrationLib.training.pairs import TrainingPair
from SAMRegistrationLib.training.synthesis import warp_nearest


class TinyParams(Parameters):
    channels: int = Field(8, ge=1, le=64, description="feature channels of the hidden layers")
    lambda_diffusion: float = Field(0.05, ge=0.0, le=100.0, description="weight of the diffusion penalty")
    similarity: Literal["ncc", "lncc"] = Field("ncc", description="global or local (box-window) NCC")
    window: int = Field(5, ge=3, le=15, description="local NCC window, voxels")


class TinyNet(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(2, channels, 3, padding=1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv3d(channels, channels, 3, padding=1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv3d(channels, 3, 3, padding=1))
        last = self.body[-1]
        torch.nn.init.normal_(last.weight, std=1e-3)      # start near the identity
        torch.nn.init.zeros_(last.bias)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([fixed, moving], dim=1))


def global_ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.pow(2).sum() * b.pow(2).sum()).sqrt().clamp_min(1e-8)


def local_ncc(a: torch.Tensor, b: torch.Tensor, window: int) -> torch.Tensor:
    def mean(x):
        return F.avg_pool3d(x, window, stride=1, padding=window // 2, count_include_pad=False)
    ma, mb = mean(a), mean(b)
    cross = mean(a * b) - ma * mb
    var_a, var_b = mean(a * a) - ma * ma, mean(b * b) - mb * mb
    return (cross * cross / (var_a * var_b).clamp_min(1e-5)).mean()


def diffusion(u: torch.Tensor) -> torch.Tensor:
    return sum(u.diff(dim=d).pow(2).mean() for d in (2, 3, 4))


def dice(a: torch.Tensor, b: torch.Tensor, labels) -> float:
    scores = []
    for value in labels:
        x, y = a == value, b == value
        total = int(x.sum()) + int(y.sum())
        if total:
            scores.append(2.0 * int((x & y).sum()) / total)
    return sum(scores) / len(scores) if scores else float("nan")


class TinyTask:
    name = "tiny-net"
    feature_provider = None
    best_metric = ("dice", "max")

    def __init__(self, params: TinyParams) -> None:
        self.config = params

    def build_model(self) -> torch.nn.Module:
        return TinyNet(self.config.channels)

    def _similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.config.similarity == "lncc":
            return local_ncc(a, b, self.config.window)
        return global_ncc(a, b)

    def loss(self, model: torch.nn.Module, pair: TrainingPair) -> tuple[torch.Tensor, dict[str, float]]:
        u = model(pair.fixed, pair.moving)
        similarity = self._similarity(warp(pair.moving, u), pair.fixed)
        smooth = diffusion(u)
        total = (1.0 - similarity) + self.config.lambda_diffusion * smooth
        return total, {"ncc": float(similarity.detach()), "diffusion": float(smooth.detach())}

    def validate(self, model: torch.nn.Module, pair: TrainingPair) -> dict[str, float]:
        u = model(pair.fixed, pair.moving)
        metrics = {"dice": float("nan")}
        if pair.fixed_label is not None and pair.moving_label is not None:
            labels = pair.labels or [int(v) for v in torch.unique(pair.fixed_label) if v != 0]
            metrics["dice"] = dice(warp_nearest(pair.moving_label, u), pair.fixed_label, labels)
        metrics["fold_percent"] = 100.0 * float((jacobian_det(u) <= 0).float().mean())
        metrics["ncc"] = float(global_ncc(warp(pair.moving, u), pair.fixed))
        return metrics


def run(problem, params):
    raise InputError("tiny-net exists to exercise `samreg train`; it does not register images")


PLUGIN = MethodPlugin(name="tiny-net", summary="three-layer 3D CNN (tests of the training machinery)",
                      Params=TinyParams, run=run, train=TinyTask, TrainParams=TinyParams)
