"""What a run folder holds besides checkpoints: ``train.log``, ``metrics.csv``, ``curves.png``.

Written by the main process only. ``metrics.csv`` (one row per step: the loss and its parts,
the validation metrics on the steps that validated, seconds of training so far) and
``curves.png`` are rewritten whole and atomically; ``train.log`` is appended to.
"""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Optional

from ..io_atomic import atomic_path, write_text_atomic

VALIDATION_PREFIX = "val_"


class RunFiles:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.rows: dict[int, dict[str, float]] = {}

    @property
    def log_path(self) -> Path:
        return self.run_dir / "train.log"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def curves_path(self) -> Path:
        return self.run_dir / "curves.png"

    def log(self, line: str) -> None:
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}\n")

    # ----------------------------------------------------------------- metrics
    def resume(self, step: int) -> None:
        """Reload the rows of steps 1..``step`` from an earlier process's metrics.csv (rows after
        the checkpoint it resumes from are dropped: those steps run again)."""
        self.rows = {}
        if not self.enabled or not self.metrics_path.is_file():
            return
        with self.metrics_path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    number = int(row.pop("step"))
                    values = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
                except (TypeError, ValueError):
                    continue
                if number <= step:
                    self.rows[number] = values

    def record(self, step: int, values: dict[str, float]) -> None:
        self.rows.setdefault(step, {}).update(values)

    def columns(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self.rows.values():
            names.update(dict.fromkeys(k for k in row if not k.startswith(VALIDATION_PREFIX) and k != "seconds"))
        for row in self.rows.values():
            names.update(dict.fromkeys(k for k in row if k.startswith(VALIDATION_PREFIX)))
        return ["step", *names, "seconds"]

    def write_metrics(self) -> None:
        if not self.enabled:
            return
        columns = self.columns()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for step in sorted(self.rows):
            row = self.rows[step]
            writer.writerow([step] + [_cell(row.get(name)) for name in columns[1:]])
        write_text_atomic(buffer.getvalue(), self.metrics_path)

    # ----------------------------------------------------------------- curves
    def draw_curves(self, title: str = "") -> None:
        """Training loss (and its parts) and each validation metric against the step."""
        if not self.enabled or not self.rows:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg   # Agg: no display needed
        from matplotlib.figure import Figure

        columns = self.columns()[1:-1]
        training = [c for c in columns if not c.startswith(VALIDATION_PREFIX)]
        validation = [c for c in columns if c.startswith(VALIDATION_PREFIX)]
        panels = 1 + len(validation)
        fig = Figure(figsize=(4.5 * min(panels, 4), 3.4 * math.ceil(panels / 4)), dpi=100)
        FigureCanvasAgg(fig)
        steps = sorted(self.rows)
        ax = fig.add_subplot(math.ceil(panels / 4), min(panels, 4), 1)
        for name in training:
            xs, ys = _series(self.rows, steps, name)
            ax.plot(xs, ys, label=name, linewidth=1.0 if name != "loss" else 1.6)
        ax.set_xlabel("step")
        ax.set_title("training loss")
        ax.legend(fontsize=7)
        for i, name in enumerate(validation, start=2):
            ax = fig.add_subplot(math.ceil(panels / 4), min(panels, 4), i)
            xs, ys = _series(self.rows, steps, name)
            ax.plot(xs, ys, marker="o", markersize=3)
            ax.set_xlabel("step")
            ax.set_title(f"validation {name[len(VALIDATION_PREFIX):]}")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(self.curves_path) as tmp:
            fig.savefig(str(tmp), format="png")


def _series(rows: dict[int, dict[str, float]], steps: list[int], name: str) -> tuple[list[int], list[float]]:
    xs = [s for s in steps if name in rows[s] and math.isfinite(rows[s][name])]
    return xs, [rows[s][name] for s in xs]


def _cell(value: Optional[float]) -> str:
    if value is None:
        return ""
    return repr(float(value)) if math.isfinite(value) else "nan"
