"""Benchmark plots (PNG, matplotlib's Agg canvas, no pyplot state) from a ``samreg bench`` results dict."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

from ..io_atomic import atomic_path
from .report import _Results, _dice_of, _num, _safe_name, headline, metric_label

__all__ = ["write_plots"]


def _colors(R: _Results) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(R.method_order) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(R.method_order)}


_MARKERS = {"samreg": "o", "peer": "s", "baseline": "x"}


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no pyplot
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", bbox_inches="tight")
    return path


def _grouped_bars(ax: Any, groups: list[str],
                  series: list[tuple[str, Any, list[Optional[float]]]]) -> list[float]:
    """Grouped bar chart; None values leave a gap. Returns the bar centres' group offsets."""
    n = max(len(series), 1)
    width = 0.8 / n
    offsets = [(i - (n - 1) / 2) * width for i in range(n)]
    for (label, color, vals), off in zip(series, offsets):
        xs = [g + off for g, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        ax.bar(xs, ys, width * 0.95, label=label, color=color)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 4 else 0,
                       ha="right" if len(groups) > 4 else "center")
    return offsets


def _series(R: _Results, colors: dict[str, Any], values: Callable[[str], list[Optional[float]]]
            ) -> list[tuple[str, Any, list[Optional[float]]]]:
    """One bar series per method that has at least one value."""
    out = []
    for m in R.method_order:
        vals = values(m)
        if any(v is not None for v in vals):
            out.append((R.label(m), colors[m], vals))
    return out


def _legend(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)



def _finish_bars(fig: Any, ax: Any, ylabel: str, title: str) -> Any:
    """Labels, a light horizontal grid and the legend of a grouped-bar chart."""
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    return fig

def _plot_dice_per_method(R: _Results, colors: dict[str, Any]) -> Any:
    cases = [c for c in R.standard_cases()
             if R.label_keys(c) or any(_num(R.metrics(R.run(c, "standard", m)).get("dice_mean"))
                                       is not None for m in R.method_order)]

    def vals(m: str) -> list[Optional[float]]:
        out = []
        for c in cases:
            r = R.run(c, "standard", m)
            out.append(_num(R.metrics(r).get("dice_mean")) if R.ok(r) else None)
        return out

    series = _series(R, colors, vals)
    if not series:
        return None
    fig = _new_figure(max(6.0, 1.6 * len(cases) + 3), 4.5)
    ax = fig.subplots()
    _grouped_bars(ax, cases, series)
    ax.set_ylim(0, 1.05)
    return _finish_bars(fig, ax, "Dice mean (higher is better)", "Mean Dice per case and method")


def _plot_accuracy_vs_time(R: _Results, colors: dict[str, Any]) -> Any:
    panels = []
    for c in R.standard_cases():
        pts = [(m, _num(R.run(c, "standard", m).get("registration_s")),
                R.headline(c, R.run(c, "standard", m)))
               for m in R.method_order if R.ok(R.run(c, "standard", m))]
        pts = [p for p in pts if p[2] is not None]
        if pts:
            panels.append((c, pts))
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(5.2 * ncols, 4.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax, (case, pts) in zip(axes.flat, panels):
        key, _, higher = headline(R.case_info(case), {})
        scattered = False
        timed = [v for m, t, v in pts if R.family(m) != "baseline" and t is not None and t > 0]
        vals = timed or [v for _, _, v in pts]
        v_span = (max(vals) - min(vals)) or 1.0
        # a reference level far off the methods' range (lung TRE 35 mm vs 1-3 mm) would squash them
        far = (min(vals) - 2 * v_span, max(vals) + 2 * v_span)
        placed: list[tuple[float, float]] = []  # (log10 t, scaled v) of labelled points
        for m, t, v in pts:
            if R.family(m) == "baseline" or t is None or t <= 0:
                # No meaningful time on a log axis (identity): draw a reference level instead.
                if timed and not far[0] <= v <= far[1]:
                    ax.annotate(f"{R.label(m)}: {v:.3g} (off scale)", xy=(0.01, 0.97), xycoords="axes fraction",
                                fontsize=7, color=colors[m], va="top")
                    continue
                ax.axhline(v, color=colors[m], linestyle="--", linewidth=1)
                ax.annotate(R.label(m), xy=(0.01, v), xycoords=("axes fraction", "data"),
                            fontsize=7, color=colors[m], va="bottom")
                continue
            ax.scatter([t], [v], color=colors[m], marker=_MARKERS.get(R.family(m), "^"), s=45,
                       zorder=3)
            # Stack labels of (nearly) coinciding points instead of printing them on top of
            # each other.
            here = (math.log10(t), v / v_span)
            n_near = sum(abs(here[0] - a) < 0.15 and abs(here[1] - b) < 0.06 for a, b in placed)
            placed.append(here)
            ax.annotate(R.label(m), xy=(t, v), xytext=(4, 4 + 9 * n_near),
                        textcoords="offset points", fontsize=7)
            scattered = True
        if scattered:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.margins(x=0.25, y=0.15)
        ax.set_xlabel("registration time (s, log scale)")
        ax.set_ylabel(f"{metric_label(key)} ({'higher' if higher else 'lower'} is better)")
        ax.set_title(case)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Accuracy vs registration time")
    fig.tight_layout()
    return fig


def _plot_per_label(R: _Results, colors: dict[str, Any], case: str) -> Any:
    import numpy as np

    labels = R.label_keys(case)
    methods, rows = [], []
    for m in R.method_order:
        r = R.run(case, "standard", m)
        if not R.ok(r):
            continue
        vals = [_dice_of(R.metrics(r), k) for k in labels]
        if any(v is not None for v in vals):
            methods.append(m)
            rows.append(vals)
    keep = [j for j in range(len(labels)) if any(row[j] is not None for row in rows)]
    if len(keep) < 2 or not methods:
        return None
    labels = [labels[j] for j in keep]
    rows = [[row[j] for j in keep] for row in rows]
    names = [R.label_name(case, k) for k in labels]
    if len(labels) <= 5:
        fig = _new_figure(max(6.0, 1.5 * len(labels) + 3), 4.5)
        ax = fig.subplots()
        _grouped_bars(ax, names, [(R.label(m), colors[m], row) for m, row in zip(methods, rows)])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Dice (higher is better)")
        ax.grid(axis="y", alpha=0.3)
        _legend(ax)
    else:
        import matplotlib

        data = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row]
                                              for row in rows], dtype=float))
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        fig = _new_figure(max(6.0, 0.42 * len(labels) + 3.5), max(3.0, 0.45 * len(methods) + 2))
        ax = fig.subplots()
        im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                       interpolation="nearest")
        mask = np.ma.getmaskarray(data)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if not mask[i, j]:
                    v = float(data[i, j])
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels([R.label(m) for m in methods], fontsize=8)
        fig.colorbar(im, ax=ax, label="Dice (higher is better)", fraction=0.04, pad=0.02)
    ax.set_title(f"Per-label Dice: {case}")
    fig.tight_layout()
    return fig


def _plot_synthetic_epe(R: _Results, colors: dict[str, Any]) -> Any:
    cases = R.synthetic_cases()

    def get(m: str, key: str) -> list[Optional[float]]:
        out = []
        for c in cases:
            r = R.run(c, "synthetic", m)
            out.append(_num(R.metrics(r).get(key)) if R.ok(r) else None)
        return out

    methods = [m for m in R.method_order
               if any(v is not None for v in get(m, "epe_mean_mm"))]
    if not methods:
        return None
    fig = _new_figure(max(6.0, 1.6 * len(cases) + 3), 4.5)
    ax = fig.subplots()
    offsets = _grouped_bars(ax, cases, [(R.label(m), colors[m], get(m, "epe_mean_mm"))
                                        for m in methods])
    p95_drawn = False
    for m, off in zip(methods, offsets):
        p95 = get(m, "epe_p95_mm")
        xs = [g + off for g, v in enumerate(p95) if v is not None]
        ys = [v for v in p95 if v is not None]
        if xs:
            ax.scatter(xs, ys, marker="_", color="black", s=120, zorder=3,
                       label=None if p95_drawn else "EPE p95")
            p95_drawn = True
    ax.set_ylim(bottom=0)
    return _finish_bars(fig, ax, "EPE mm (lower is better); bars = mean", "Synthetic deformations: end-point error")


def write_plots(results: dict, outdir: Path) -> list[Path]:
    """Write the benchmark PNGs into ``outdir``; returns the files written.

    ``dice_per_method.png``, ``accuracy_vs_time.png``, ``per_label_dice_<case>.png`` (standard
    cases with >= 2 labels; grouped bars up to 5 labels, else a methods x labels heatmap) and
    ``synthetic_epe.png``. A plot with nothing to show (e.g. every run failed) is skipped.
    Uses matplotlib's ``Figure`` + Agg canvas directly, so pyplot's global state is untouched.
    """
    R = _Results(results)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    colors = _colors(R)
    jobs: list[tuple[str, Callable[[], Any]]] = [
        ("dice_per_method.png", lambda: _plot_dice_per_method(R, colors)),
        ("accuracy_vs_time.png", lambda: _plot_accuracy_vs_time(R, colors)),
    ]
    for case in R.standard_cases():
        if len(R.label_keys(case)) >= 2:
            jobs.append((f"per_label_dice_{_safe_name(case)}.png",
                         lambda case=case: _plot_per_label(R, colors, case)))
    jobs.append(("synthetic_epe.png", lambda: _plot_synthetic_epe(R, colors)))
    written: list[Path] = []
    for name, build in jobs:
        fig = build()
        if fig is not None:
            written.append(_save(fig, outdir / name))
    return written
