"""The training loop: ``train(task, dataset, run_dir, config)``.

Adam on the task's loss; each step draws ``batch`` pairs per process (gradients accumulated)
from the :class:`~.pairs.PairSampler`, sample ``rank * batch + i`` of the step, so that N
processes under torchrun see exactly the pairs one process with ``batch * N`` would. The main
process (rank 0) alone validates, logs and writes; the others wait at a barrier around each
checkpoint. Run folder::

    checkpoints/step-XXXXXX.pt, last.pt   everything to resume (every checkpoint_every steps, and at the end)
    checkpoints/best.pt                   weights at the best validation metric so far
    model.pt, model.sha256                final weights for shipping (+ task config, data hash)
    train.log, metrics.csv, curves.png    see run_files

Re-running the same command on the same folder resumes from ``last.pt``, and refuses (one
line) when the settings that shape the result or the data differ; ``restart`` starts over.
A resumed run ends with the weights an uninterrupted one would have had: the sampler is
stateless, and the optimiser state and RNG states are restored.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..device import configure_threads
from ..errors import InputError
from . import checkpointing as ckpt
from .config import RESUMABLE_CHANGES, TrainConfig
from .dataset import Dataset, data_hash
from .distributed import Context, barrier, gather, setup, teardown
from .pairs import PairSampler
from .run_files import VALIDATION_PREFIX, RunFiles
from .task import TrainingTask, best_metric


@dataclass
class TrainResult:
    run_dir: Path
    step: int                         # steps done
    resumed_from: int                 # 0 for a fresh run
    loss: Optional[float]             # mean loss of the last step run here (None if none ran)
    best: Optional[dict[str, Any]]    # {"name", "mode", "value", "step"} of best.pt
    model_sha256: str
    data_hash: str


def identity(task: TrainingTask, config: TrainConfig, world: int, hash_: str) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    train = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES and k != "batch"}
    train["global_batch"] = config.batch * world
    return {"task": task.name, "task_config": task.config.to_dict(), "train_config": train, "data_hash": hash_}


def _difference(then: dict[str, Any], now: dict[str, Any]) -> Optional[str]:
    """The first setting that differs, as 'name: X then, Y now'."""
    if then["task"] != now["task"]:
        return f"task {then['task']!r} then, {now['task']!r} now"
    for section in ("train_config", "task_config"):
        a, b = then[section], now[section]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"{key.replace('_', '-')}: {a.get(key)!r} then, {b.get(key)!r} now"
    return None


class _Trainer:
    def __init__(self, task: TrainingTask, dataset: Dataset, run_dir: Path, config: TrainConfig,
                 context: Context, restart: bool, show_progress: bool) -> None:
        self.task, self.dataset, self.config, self.context = task, dataset, config, context
        self.run_dir = Path(run_dir)
        self.restart, self.show_progress = restart, show_progress
        self.folder = self.run_dir / "checkpoints"
        self.files = RunFiles(self.run_dir, enabled=context.is_main)
        self.hash = data_hash(dataset)
        self.identity = identity(task, config, context.world, self.hash)
        self.best: Optional[dict[str, Any]] = None
        self.seconds_before = 0.0

    # ----------------------------------------------------------------- set-up
    def _build(self) -> None:
        config, context = self.config, self.context
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        self.model = self.task.build_model().to(context.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.wrapped: torch.nn.Module = self.model
        if context.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.wrapped = DistributedDataParallel(
                self.model, device_ids=[context.device.index] if context.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(self.task, "find_unused_parameters", False)))

    def _last_state(self) -> Optional[dict[str, Any]]:
        """last.pt when there is one to resume from, after checking that it is this run's."""
        last = self.folder / "last.pt"
        if self.restart or not last.is_file():
            return None
        state = ckpt.load(last, "the run's last checkpoint")
        then = {"task": state.get("task"), "task_config": state.get("task_config", {}),
                "train_config": state.get("identity_train_config", {}), "data_hash": state.get("data_hash")}
        if then["data_hash"] != self.hash:
            raise InputError(f"run folder {self.run_dir} was trained on other data (dataset hash "
                             f"{str(then['data_hash'])[:12]}... then, {self.hash[:12]}... now: a file or an entry "
                             "changed); restore the data, or add --restart to start over, or choose another -o")
        difference = _difference(then, self.identity)
        if difference is not None:
            raise InputError(f"run folder {self.run_dir} holds a run with other settings ({difference}); "
                             "re-run with the same ones, or add --restart to start over, or choose another -o")
        if int(state["step"]) > self.config.steps:
            raise InputError(f"run folder {self.run_dir} holds a run at step {int(state['step'])}, beyond --steps "
                             f"{self.config.steps}; give at least {int(state['step'])} steps, or --restart")
        return state

    def _restore(self, state: Optional[dict[str, Any]]) -> int:
        """Model, optimiser, RNG and best-so-far from ``state``; returns the steps already done."""
        if state is None:
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        states = state["rng"]
        ckpt.set_rng_state(states[self.context.rank] if len(states) == self.context.world else states[0],
                           self.context.device)
        self.best = dict(state["best"]) if state.get("best") else None
        self.seconds_before = float(state.get("seconds", 0.0))
        return int(state["step"])

    # ----------------------------------------------------------------- one step
    def _step(self, sampler: PairSampler, step: int) -> dict[str, float]:
        config, context = self.config, self.context
        self.wrapped.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, list[float]] = {}
        for i in range(config.batch):
            pair = sampler.sample(step, context.rank * config.batch + i).to(context.device)
            last = i == config.batch - 1
            sync = nullcontext() if last or not context.distributed else self.wrapped.no_sync()
            with sync:
                total, parts = self.task.loss(self.wrapped, pair)
                (total / config.batch).backward()
            for name, value in {"loss": float(total.detach()), **parts}.items():
                entry = sums.setdefault(name, [0.0, 0.0])
                entry[0] += float(value)
                entry[1] += 1.0
        if config.clip_grad_norm is not None:      # the gradients are already averaged across processes
            torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), config.clip_grad_norm)
        self.optimizer.step()
        merged: dict[str, list[float]] = {}
        for part in gather(context, sums):        # parts may differ by pair kind: mean over those reporting
            for name, (total_value, count) in part.items():
                entry = merged.setdefault(name, [0.0, 0.0])
                entry[0] += total_value
                entry[1] += count
        return {name: total_value / count for name, (total_value, count) in merged.items()}

    # ----------------------------------------------------------------- validation
    def _validate(self, sampler: PairSampler, step: int) -> Optional[dict[str, float]]:
        pairs = sampler.validation_pairs()
        if not pairs:
            return None
        saved = ckpt.rng_state(self.context.device)     # validation leaves the training stream untouched
        self.model.eval()
        results: dict[str, list[float]] = {}
        with torch.no_grad():
            for pair in pairs:
                for name, value in self.task.validate(self.model, pair.to(self.context.device)).items():
                    results.setdefault(name, []).append(float(value))
        self.model.train()
        ckpt.set_rng_state(saved, self.context.device)
        metrics = {name: float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else float("nan")
                   for name, values in results.items()}
        if metrics:
            if self.best is None:
                name, mode = best_metric(self.task, metrics)
            else:
                name, mode = self.best["name"], self.best["mode"]
            value = metrics.get(name, float("nan"))
            better = (self.best is None or math.isnan(self.best["value"])
                      or (value > self.best["value"] if mode == "max" else value < self.best["value"]))
            if not math.isnan(value) and better:
                self.best = {"name": name, "mode": mode, "value": value, "step": step}
                self._write_best(step, metrics)
        return metrics

    # ----------------------------------------------------------------- writing
    def _shipping(self) -> dict[str, Any]:
        return {"kind": "samreg-model", "task": self.task.name, "model": ckpt.cpu_state(self.model),
                "task_config": self.task.config.to_dict(), "data_hash": self.hash}

    def _write_best(self, step: int, metrics: dict[str, float]) -> None:
        ckpt.save({**self._shipping(), "kind": "samreg-best", "step": step, "metrics": metrics,
                   "train_config": self.config.to_dict()}, self.folder / "best.pt")

    def _checkpoint(self, step: int, seconds: float) -> None:
        rngs = gather(self.context, ckpt.rng_state(self.context.device))
        if self.context.is_main:
            payload = {"kind": "samreg-training-checkpoint", "task": self.task.name, "step": step,
                       "model": ckpt.cpu_state(self.model), "optimizer": self.optimizer.state_dict(), "rng": rngs,
                       "task_config": self.task.config.to_dict(), "train_config": self.config.to_dict(),
                       "identity_train_config": self.identity["train_config"], "world": self.context.world,
                       "data_hash": self.hash, "seconds": seconds, "best": self.best or {}}
            path = self.folder / ckpt.step_name(step)
            ckpt.save(payload, path)
            ckpt.copy(path, self.folder / "last.pt")
            if self.config.keep_checkpoints:
                ckpt.prune(self.folder, self.config.keep_checkpoints)
            self.files.log(f"checkpoint {path.name} written")
        barrier(self.context)

    # ----------------------------------------------------------------- the run
    def _announce(self, line: str) -> None:
        """A phase of the run, in the log and (main process, progress shown) on stderr."""
        if self.context.is_main:
            self.files.log(line)
            if self.show_progress:
                print(f"samreg train: {line}", file=sys.stderr, flush=True)

    def _loading(self, sampler: PairSampler, validation: bool) -> None:
        from tqdm import tqdm
        with tqdm(total=sampler.load_count(validation), unit="item", file=sys.stderr, dynamic_ncols=True,
                  disable=not self.show_progress, desc="data") as bar:
            sampler.load_all(validation, progress=lambda what: (bar.set_postfix_str(what, refresh=False),
                                                                bar.update(1)))

    def run(self) -> TrainResult:
        config, context = self.config, self.context
        if context.is_main:
            if self.restart:
                ckpt.clear_run(self.run_dir)
            ckpt.remove_temporaries(self.run_dir)
            self.folder.mkdir(parents=True, exist_ok=True)
        barrier(context)
        state = self._last_state()
        prepare = getattr(self.task, "prepare", None)
        if prepare is not None:           # e.g. a frozen projection fitted on the data, before the model exists
            self._announce(f"preparing {self.task.name}")
            prepare(self.dataset, config.sampling())
        self._build()
        sampler = PairSampler(self.dataset, config.sampling(), config.seed, self.task.feature_provider)
        if context.is_main:                # the main process encodes and caches; the others then read
            self._announce("reading the training data onto the training grid"
                           + (" and encoding it" if self.task.feature_provider is not None else ""))
            self._loading(sampler, validation=True)
        barrier(context)
        if not context.is_main:
            sampler.load_all(validation=False)
        start = self._restore(state)       # after loading: a provider drawing random numbers changes nothing
        self.files.resume(start)
        what = f"resuming {self.task.name} at step {start}" if start else f"training {self.task.name}"
        self.files.log(f"{what} on {self.dataset.name} (data {self.hash[:12]}): {config.steps} steps of "
                       f"{config.batch * context.world} pairs ({context.world} process(es) x {config.batch}), "
                       f"lr {config.lr:g}, device {context.device}, seed {config.seed}")
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True,
                   disable=not (context.is_main and self.show_progress), desc="train")
        began = time.perf_counter()
        values: dict[str, float] = {}
        try:
            for step in range(start, config.steps):
                values = self._step(sampler, step)
                done = step + 1
                seconds = self.seconds_before + time.perf_counter() - began
                bar.update(1)
                bar.set_postfix_str(f"loss {values['loss']:.4g}", refresh=False)
                if context.is_main:
                    self.files.record(done, {**values, "seconds": seconds})
                if done % config.val_every == 0 or done == config.steps:
                    if context.is_main:
                        metrics = self._validate(sampler, done) or {}
                        self.files.record(done, {VALIDATION_PREFIX + k: v for k, v in metrics.items()})
                        parts = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "loss")
                        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                        self.files.log(f"step {done}/{config.steps}: loss {values['loss']:.5g}"
                                       f"{' (' + parts + ')' if parts else ''}"
                                       f"{'; validation ' + shown if shown else ''}; {seconds:.1f} s")
                        self.files.write_metrics()
                        self.files.draw_curves(f"{self.task.name} on {self.dataset.name}")
                if done % config.checkpoint_every == 0 or done == config.steps:
                    if context.is_main:
                        self.files.write_metrics()
                    self._checkpoint(done, seconds)
        finally:
            bar.close()
        digest = ""
        if context.is_main:
            digest = ckpt.write_model(self._shipping(), self.run_dir / "model.pt")
            self.files.log(f"done at step {config.steps}: model.pt sha256 {digest}")
        barrier(context)
        return TrainResult(self.run_dir, config.steps, start, values.get("loss"), self.best, digest, self.hash)


def train(task: TrainingTask, dataset: Dataset, run_dir: Path | str, config: TrainConfig, *,
          restart: bool = False, show_progress: bool = True) -> TrainResult:
    """Train ``task`` on ``dataset`` into ``run_dir`` (resuming what is there); see the module doc."""
    context = setup(config.device)
    try:
        configure_threads(config.threads or max(1, (os.cpu_count() or 1) // max(1, context.local_world)))
        return _Trainer(task, dataset, Path(run_dir), config, context, restart, show_progress).run()
    finally:
        teardown(context)
