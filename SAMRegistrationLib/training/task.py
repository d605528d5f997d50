"""The protocol between the trainer and a learned registration method.

A method plug-in that can be trained declares ``train=factory`` (and optionally
``TrainParams``, else its ``Params`` are used): ``factory(params) -> TrainingTask``. The
trainer owns everything generic (data, optimiser, checkpoints, resume, validation schedule,
DDP); the task owns the model, the loss and the metrics.

Rules a task keeps:

* ``loss`` calls ``model(...)`` (its forward) to compute the prediction: under DDP the model
  it receives is the ``DistributedDataParallel`` wrapper, whose gradient hooks only run
  through ``forward``. ``validate`` receives the bare module, in eval mode, without gradients.
* ``loss`` returns the total (a scalar tensor with a gradient) and its parts as floats, the
  same keys at every step (they become metrics.csv columns).
* ``config`` holds everything that shapes the model (it is saved in every checkpoint and in
  ``model.pt``; a resumed run must have the same).
* An optional ``prepare(dataset, sampling_config)`` runs once per process before
  ``build_model`` (and before pairs are made), for what a task derives from the data itself,
  such as a frozen projection of an encoder's channels; it must be deterministic.
* Randomness comes from torch's global generator (seeded and checkpointed by the trainer) or
  from the pair itself; nothing else.
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch

from ..params import Parameters
from .feature_cache import FeatureProvider
from .pairs import TrainingPair


@runtime_checkable
class TrainingTask(Protocol):
    name: str
    config: Parameters                          # training/architecture config, saved in checkpoints
    feature_provider: Optional[FeatureProvider]  # features added to every pair (None: none)

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (the trainer has seeded torch's generator)."""
        ...

    def loss(self, model: torch.nn.Module, pair: TrainingPair) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss of one pair and its parts."""
        ...

    def validate(self, model: torch.nn.Module, pair: TrainingPair) -> dict[str, float]:
        """Metrics of one validation pair (e.g. dice, tre_mm, fold_percent)."""
        ...


#: substrings of metric names for which smaller is better (when the task does not say)
_LOWER_IS_BETTER = ("loss", "tre", "error", "fold", "hd95", "distance", "epe")


def best_metric(task: TrainingTask, metrics: dict[str, float]) -> tuple[str, str]:
    """(metric name, 'max' or 'min') that picks ``best.pt``: the task's ``best_metric`` attribute
    when it has one, else the first metric it returns, larger being better unless the name
    says otherwise (loss, tre, error, fold, hd95, distance, epe)."""
    declared = getattr(task, "best_metric", None)
    if declared is not None:
        name, mode = declared
        if mode not in ("max", "min"):
            raise ValueError(f"best_metric mode must be 'max' or 'min', got {mode!r}")
        return name, mode
    name = next(iter(metrics))
    return name, "min" if any(word in name.lower() for word in _LOWER_IS_BETTER) else "max"
