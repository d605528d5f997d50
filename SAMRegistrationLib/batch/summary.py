"""The batch's tables and figures: ``summary.csv`` (one row per pair), ``summary.png``
(distributions of the metrics and times) and ``batch.json`` (the run itself). All written
atomically, so a reader never sees half a table."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

from ..io_atomic import atomic_path, write_json_atomic, write_text_atomic

METRIC_COLUMNS = ("dice_mean", "dice_mean_initial", "tre_mean_mm", "tre_mean_mm_initial", "fold_percent")
TIME_COLUMNS = ("total_s", "load_s", "affine_s", "encode_s", "prompts_s", "optimise_s", "write_s")
COLUMNS = ("id", "status", "error", "this_run", "fixed", "moving", "method", "encoder", *METRIC_COLUMNS,
           *TIME_COLUMNS, "peak_rss_mb", "fixed_encoded", "moving_encoded", "host", "threads", "output_dir")
#: (column, axis label) of the distributions drawn in summary.png, where a pair has them
PLOTTED = (("dice_mean", "mean Dice"), ("tre_mean_mm", "mean TRE (mm)"), ("fold_percent", "folding (%)"),
           ("total_s", "time per pair (s)"), ("peak_rss_mb", "peak memory per pair (MB)"))


def summary_row(record: dict) -> dict[str, Any]:
    row = {name: record.get(name, "") for name in COLUMNS}
    row.update({name: record.get("metrics", {}).get(name, "") for name in METRIC_COLUMNS})
    row.update({name: record.get("timings", {}).get(name, "") for name in TIME_COLUMNS})
    for name in ("fixed_encoded", "moving_encoded"):
        value = record.get(name)
        row[name] = "" if value is None else ("yes" if value else "no (cache)")
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_summary_csv(records: Iterable[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(summary_row(record))
    write_text_atomic(buffer.getvalue(), path)


def _numbers(records: list[dict], column: str) -> list[float]:
    values = []
    for record in records:
        value = summary_row(record).get(column)
        if isinstance(value, (int, float)):
            values.append(float(value))
    return values


def write_plots(records: list[dict], path: Path) -> bool:
    """Box and points of each metric over the pairs that completed; False when none has any."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.get("status") == "ok"]
    panels = [(label, _numbers(done, column)) for column, label in PLOTTED]
    panels = [(label, values) for label, values in panels if values]
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.4), squeeze=False)
    for axis, (label, values) in zip(axes[0], panels):
        axis.boxplot(values, widths=0.5, showfliers=False)
        jitter = [1 + 0.12 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]
        axis.scatter(jitter, values, s=10, alpha=0.7, color="tab:blue", zorder=3)
        axis.set_title(label, fontsize=9)
        axis.set_xticks([])
        axis.tick_params(labelsize=8)
    figure.suptitle(f"{len(done)} pair(s) registered", fontsize=10)
    figure.tight_layout()
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
    return True


def write_batch_json(info: dict, path: Path) -> None:
    write_json_atomic(info, path)
