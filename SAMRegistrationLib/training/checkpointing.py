"""Training checkpoints: what they hold, writing them atomically, reading them back.

``checkpoints/step-XXXXXX.pt`` and ``last.pt`` hold everything a resumed run needs: model and
optimiser state, the step, the RNG states of every process, the task's config, the
TrainConfig, the data hash and the best validation so far. ``best.pt`` and ``model.pt`` hold
weights for use (``model.pt``: weights, the task's name and config and the data hash, with
its SHA-256 in ``model.sha256``; :func:`read_model` checks it). Everything is read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..checkpoints import file_sha256
from ..errors import CheckpointError
from ..io_atomic import atomic_path, write_text_atomic

FORMAT = 1
STEP_FILE = re.compile(r"^step-(\d{6,})\.pt$")


def step_name(step: int) -> str:
    return f"step-{step:06d}.pt"


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, numpy, Python), as weights-only-loadable values."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                                       "position": int(position), "has_gauss": int(has_gauss),
                                       "gauss": float(gauss)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save(payload: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def load(path: Path, what: str = "checkpoint", hint: str = "re-run with --restart to start over") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a file written by :func:`save`; CheckpointError
    naming ``what`` otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{what} {path} cannot be read ({exc.__class__.__name__}); {hint}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{what} {path} is not a samreg training file of format {FORMAT}")
    return state


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step-*.pt files of ``folder``."""
    steps = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name)))
    for _, path in steps[:-keep]:
        path.unlink(missing_ok=True)


def write_model(payload: dict[str, Any], path: Path) -> str:
    """``model.pt`` and ``model.sha256`` (sha256sum's format); returns the digest."""
    save(payload, path)
    digest = file_sha256(path)
    write_text_atomic(f"{digest}  {path.name}\n", path.with_suffix(".sha256"))
    return digest


def read_model(path: Path, sha256: Optional[str] = None, task: Optional[str] = None) -> dict[str, Any]:
    """A shipped ``model.pt`` (or a ``best.pt``), checked: against ``sha256`` if given, else against the
    ``model.sha256`` beside it if there is one; and, if ``task`` is given, trained by that task.
    Returns its dict (``model``, ``task``, ``task_config``, ``data_hash``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    expected = sha256
    sidecar = path.with_suffix(".sha256")
    if expected is None and sidecar.is_file():
        expected = (sidecar.read_text(encoding="utf-8").split() or [""])[0]      # sha256sum's "<hex>  <name>"
    if expected is not None and file_sha256(path) != expected.strip().lower():
        raise CheckpointError(f"model file {path} is corrupt or not the one expected: its SHA-256 is "
                              f"{file_sha256(path)}, not {expected}")
    state = load(path, "model file", "train it again or restore a good copy")
    if state.get("kind") not in ("samreg-model", "samreg-best"):
        raise CheckpointError(f"model file {path} is not a trained model (it holds {state.get('kind')!r})")
    if task is not None and state.get("task") != task:
        raise CheckpointError(f"model file {path} was trained by {state.get('task')!r}, not {task!r}")
    return state



def load_trained_model(path: Path, sha256: Optional[str], task: str, build: Callable[[dict], Any]):
    """The model of a ``samreg train TASK`` model file, ready for inference: ``build(task_config)``
    makes the module, the saved weights are loaded strictly, and it is put in eval mode. A
    missing file, a wrong SHA-256, another task's model or one of another shape is a
    :class:`CheckpointError` naming the file."""
    if not Path(path).is_file():
        raise CheckpointError(f"{task} model not found: {path}")
    saved = read_model(Path(path), sha256, task=task)
    try:
        model = build(saved["task_config"])
        model.load_state_dict(saved["model"], strict=True)
    except Exception as exc:  # a model file of another shape or version
        raise CheckpointError(f"{path} is not a usable {task} model ({exc.__class__.__name__}: {str(exc)[:120]}).") from exc
    return model.eval()

#: files of a run folder that ``--restart`` removes (nothing else is touched)
RUN_FILES = ("model.pt", "model.sha256", "metrics.csv", "curves.png", "train.log")


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files a killed process left behind while writing the run's files."""
    names = set(RUN_FILES) | {"last.pt", "best.pt"}
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.glob(".tmp-*"):
                parts = path.name.split("-", 2)       # .tmp-<16 hex>-<name>, io_atomic's pattern
                if len(parts) == 3 and len(parts[1]) == 16 and (parts[2] in names or STEP_FILE.match(parts[2])):
                    path.unlink(missing_ok=True)


def clear_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for path in folder.iterdir():
            if STEP_FILE.match(path.name) or path.name in ("last.pt", "best.pt"):
                path.unlink(missing_ok=True)
