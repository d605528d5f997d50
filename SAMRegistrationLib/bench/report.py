"""Benchmark report: turn a ``samreg bench`` results dict into ``results.md`` (plots: plots.py).

The results dict holds ``meta`` (date, machine, command, threads, versions, default_method),
``methods`` (id -> label/family/note), ``cases`` (name -> kind/labels/label_names/landmarks/
variant) and ``runs`` (one entry per case x variant x method with status, timings and metrics).
Any number may be missing or ``None``; failed and unavailable runs are listed in the tables with
their status and error text and are left out of the plots.

Headline accuracy per case (see :func:`headline`): TRE for landmark cases (lower is better),
EPE for synthetic cases (lower is better), otherwise mean Dice (higher is better).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Optional

from ..io_atomic import atomic_path

__all__ = ["headline", "metric_label", "render_markdown", "write_markdown"]

DASH = "—"
CONVEXADAM_MIND = "convexadam-mind"
WARM_SUFFIX = "@warm"

_METRIC_LABELS = {
    "dice_mean": "Dice mean",
    "tre_mean_mm": "TRE mm",
    "epe_mean_mm": "EPE mean mm",
    "hd95_mean_mm": "HD95 mm",
}


# ----------------------------------------------------------------------------- small helpers

def _num(x: Any) -> Optional[float]:
    """``x`` as a finite float, or None (None, bools, strings, NaN and inf all give None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(x: Any, decimals: int) -> str:
    v = _num(x)
    return DASH if v is None else f"{v:.{decimals}f}"


def _decimals(key: str) -> int:
    """Display precision of a metric key: mm 2 decimals, Dice/fold/SDlogJ 3 decimals."""
    return 2 if key.endswith("_mm") else 3


def _cell(text: Any) -> str:
    """Make free text safe for one markdown table cell."""
    s = " ".join(str(text).split())
    return s.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _ratio(a: Any, b: Any) -> str:
    """``a / b`` as e.g. ``2.1×`` (two significant digits below 1×); DASH if not computable."""
    x, y = _num(a), _num(b)
    if x is None or y is None or y <= 0 or x < 0:
        return DASH
    r = x / y
    return f"{r:.1f}×" if r >= 1 else f"{r:.2g}×"


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_") or "case"


def _label_sort_key(k: str) -> tuple[int, float, str]:
    v = _num(k)
    return (0, v, "") if v is not None else (1, 0.0, k)


# ----------------------------------------------------------------------------- public helpers

def headline(case_info: dict, metrics: dict) -> tuple[str, Optional[float], bool]:
    """Headline accuracy of one run: ``(metric key, value or None, higher_is_better)``.

    Synthetic cases -> ``epe_mean_mm`` (lower is better); landmark cases -> ``tre_mean_mm``
    (lower is better); otherwise ``dice_mean`` (higher is better). The key is the metrics-dict
    key; :func:`metric_label` gives a human-readable name for it.
    """
    info = case_info or {}
    m = metrics or {}
    if info.get("variant") == "synthetic":
        key, higher = "epe_mean_mm", False
    elif info.get("landmarks"):
        key, higher = "tre_mean_mm", False
    else:
        key, higher = "dice_mean", True
    return key, _num(m.get(key)), higher


def metric_label(key: str) -> str:
    """Human-readable name of a metric key (e.g. ``tre_mean_mm`` -> ``TRE mm``)."""
    return _METRIC_LABELS.get(key, key)


# ----------------------------------------------------------------------------- results index

class _Results:
    """Read-only, forgiving view of a results dict (missing sections and fields tolerated)."""

    def __init__(self, results: dict) -> None:
        results = results or {}
        self.meta: dict = dict(results.get("meta") or {})
        self.methods: dict[str, dict] = {str(k): dict(v or {})
                                         for k, v in (results.get("methods") or {}).items()}
        self.cases: dict[str, dict] = {str(k): dict(v or {})
                                       for k, v in (results.get("cases") or {}).items()}
        self.runs: list[dict] = [r for r in (results.get("runs") or []) if isinstance(r, dict)]
        self.method_order: list[str] = list(self.methods)
        case_order: list[str] = list(self.cases)
        for r in self.runs:
            m, c = str(r.get("method")), str(r.get("case"))
            if m not in self.method_order:
                self.method_order.append(m)
            if c not in case_order:
                case_order.append(c)
        self.case_order = case_order
        self._run: dict[tuple[str, str, str], dict] = {}
        for r in self.runs:  # a later duplicate replaces an earlier one
            self._run[(str(r.get("case")), self.run_variant(r), str(r.get("method")))] = r

    # --- cases
    def case_info(self, case: str) -> dict:
        info = dict(self.cases.get(case) or {})
        if not info.get("variant"):
            variants = {self.run_variant(r) for r in self.runs if str(r.get("case")) == case}
            info["variant"] = "synthetic" if variants == {"synthetic"} else "standard"
        return info

    def run_variant(self, run: dict) -> str:
        v = run.get("variant")
        if v:
            return str(v)
        return "synthetic" if (self.cases.get(str(run.get("case"))) or {}).get(
            "variant") == "synthetic" else "standard"

    def standard_cases(self) -> list[str]:
        return [c for c in self.case_order if self.case_info(c)["variant"] != "synthetic"]

    def synthetic_cases(self) -> list[str]:
        return [c for c in self.case_order
                if self.case_info(c)["variant"] == "synthetic"
                or any(self.run(c, "synthetic", m) for m in self.method_order)]

    def label_keys(self, case: str) -> list[str]:
        """Label values (as strings) of a case: declared labels, then extra keys seen in runs."""
        keys = [str(k) for k in (self.case_info(case).get("labels") or [])]
        extra: set[str] = set()
        for r in self.runs:
            if str(r.get("case")) == case:
                dice = (r.get("metrics") or {}).get("dice") or {}
                if isinstance(dice, dict):
                    extra.update(str(k) for k in dice if str(k) not in keys)
        return keys + sorted(extra, key=_label_sort_key)

    def label_name(self, case: str, key: str) -> str:
        names = self.case_info(case).get("label_names") or {}
        return str(names.get(str(key)) or key)

    # --- methods
    def family(self, method: str) -> str:
        fam = (self.methods.get(method) or {}).get("family")
        if fam:
            return str(fam)
        if method == "identity":
            return "baseline"
        return "samreg" if method.startswith("samreg/") else "peer"

    def label(self, method: str) -> str:
        return str((self.methods.get(method) or {}).get("label") or method)

    def default_method(self) -> Optional[str]:
        d = self.meta.get("default_method")
        if d:
            return str(d)
        for m in self.method_order:
            if self.family(m) == "samreg" and not m.endswith(WARM_SUFFIX):
                return m
        return None

    def warm_method(self) -> Optional[str]:
        d = self.default_method()
        warm = [m for m in self.method_order if m.endswith(WARM_SUFFIX)]
        if d and d + WARM_SUFFIX in warm:
            return d + WARM_SUFFIX
        return warm[0] if warm else None

    def peers(self) -> list[str]:
        std = set(self.standard_cases())
        return [m for m in self.method_order if self.family(m) == "peer"
                and any(self.run(c, "standard", m) for c in std)]

    # --- runs
    def run(self, case: str, variant: str, method: str) -> Optional[dict]:
        return self._run.get((case, variant, method))

    @staticmethod
    def ok(run: Optional[dict]) -> bool:
        return run is not None and (run.get("status") or "ok") == "ok"

    @staticmethod
    def metrics(run: Optional[dict]) -> dict:
        m = (run or {}).get("metrics") or {}
        return m if isinstance(m, dict) else {}

    def headline(self, case: str, run: Optional[dict]) -> Optional[float]:
        """Headline value of a run, None unless the run is ok and has the value."""
        if not self.ok(run):
            return None
        return headline(self.case_info(case), self.metrics(run))[1]

    def best(self, case: str, variant: str, methods: list[str], key: str,
             higher: bool) -> Optional[float]:
        """Best value of ``key`` among ok, non-baseline runs."""
        vals = [_num(self.metrics(r).get(key)) for m in methods
                if self.family(m) != "baseline"
                for r in [self.run(case, variant, m)] if self.ok(r)]
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        return max(vals) if higher else min(vals)


def _status_text(run: Optional[dict]) -> str:
    """Short status of a run that is not ok (``not run`` when missing)."""
    if run is None:
        return "not run"
    status = str(run.get("status") or "ok")
    err = run.get("error")
    return status + (f": {err}" if err else "")


# ----------------------------------------------------------------------------- markdown

_Column = tuple[str, Callable[[dict, dict], str]]


def _common_tail_columns() -> list[_Column]:
    return [
        ("SDlogJ", lambda r, m: _fmt(m.get("sdlogj"), 3)),
        ("% fold", lambda r, m: _fmt(m.get("fold_percent"), 3)),
        ("Reg. s", lambda r, m: _fmt(r.get("registration_s"), 1)),
        ("End-to-end s", lambda r, m: _fmt(r.get("end_to_end_s"), 1)),
        ("Peak RSS MB", lambda r, m: _fmt(r.get("peak_rss_mb"), 0)),
    ]


def _note_cell(run: dict) -> str:
    parts = []
    if not _Results.ok(run):
        status = str(run.get("status") or "failed").upper()
        err = run.get("error")
        parts.append(f"**{status}**" + (f": {_cell(err)}" if err else ""))
    if run.get("note"):
        parts.append(_cell(run["note"]))
    return "; ".join(parts) if parts else ""


def _method_table(R: _Results, case: str, variant: str, columns: list[_Column],
                  bold_key: str, higher: bool) -> list[str]:
    """Rows = methods with a run of (case, variant), in method order; bold the best headline."""
    methods = [m for m in R.method_order if R.run(case, variant, m) is not None]
    if not methods:
        return ["_No runs recorded._"]
    best = R.best(case, variant, methods, bold_key, higher)
    header = ["Method"] + [name for name, _ in columns] + ["Note"]
    rows = []
    for m in methods:
        run = R.run(case, variant, m) or {}
        ok = R.ok(run)
        met = R.metrics(run) if ok else {}
        cells = [f"{_cell(R.label(m))} (`{m}`)"]
        for name, fn in columns:
            text = fn(run, met)
            if getattr(fn, "bold_key", None) == bold_key and ok and best is not None \
                    and R.family(m) != "baseline" and _num(met.get(bold_key)) == best:
                text = f"**{text}**"
            cells.append(text)
        cells.append(_note_cell(run))
        rows.append(cells)
    return _table(header, rows)


def _col(fn: Callable[[dict, dict], str], key: Optional[str] = None) -> Callable[[dict, dict], str]:
    """Tag a column function with the metric key it shows (used for bolding the best)."""
    fn.bold_key = key  # type: ignore[attr-defined]
    return fn


def _case_columns(R: _Results, case: str) -> list[_Column]:
    info = R.case_info(case)
    labels = R.label_keys(case)
    runs = [R.run(case, "standard", m) for m in R.method_order]
    has = {k: any(_num(R.metrics(r).get(k)) is not None for r in runs if r)
           for k in ("dice_mean", "hd95_mean_mm", "tre_mean_mm")}
    cols: list[_Column] = []
    if labels or has["dice_mean"]:
        cols.append(("Dice mean", _col(lambda r, m: _fmt(m.get("dice_mean"), 3), "dice_mean")))
        if 0 < len(labels) <= 5:
            for k in labels:
                cols.append((f"Dice {_cell(R.label_name(case, k))}",
                             _col(lambda r, m, k=k: _fmt(_dice_of(m, k), 3))))
    if labels or has["hd95_mean_mm"]:
        cols.append(("HD95 mm", _col(lambda r, m: _fmt(m.get("hd95_mean_mm"), 2))))
    if info.get("landmarks") or has["tre_mean_mm"]:
        cols.append(("TRE mm (mean ± sd)", _col(_tre_cell, "tre_mean_mm")))
    return cols + _common_tail_columns()


def _dice_of(metrics: dict, key: str) -> Optional[float]:
    dice = metrics.get("dice") or {}
    return _num(dice.get(str(key))) if isinstance(dice, dict) else None


def _tre_cell(run: dict, m: dict) -> str:
    mean, sd = _num(m.get("tre_mean_mm")), _num(m.get("tre_sd_mm"))
    if mean is None:
        return DASH
    return f"{mean:.2f} ± {sd:.2f}" if sd is not None else f"{mean:.2f}"


def _header_section(R: _Results) -> list[str]:
    meta = R.meta
    out = ["# SAMRegistration benchmark", ""]
    out.append(f"- Date: {_cell(meta.get('date') or DASH)}")
    out.append(f"- Machine: {_cell(meta.get('machine') or DASH)}")
    out.append(f"- Threads: {_cell(meta.get('threads') if meta.get('threads') is not None else DASH)}")
    if meta.get("quick"):
        out.append("- Mode: quick (reduced settings; numbers are not final)")
    d = R.default_method()
    if d:
        out.append(f"- Default method: {_cell(R.label(d))} (`{d}`)")
    versions = meta.get("versions") or {}
    if versions:
        out.append("- Versions: " + ", ".join(f"{_cell(k)} {_cell(v)}" for k, v in versions.items()))
    out += ["", "Command:", "", "```", str(meta.get("command") or "").strip(), "```", ""]
    if R.method_order:
        out += ["## Methods", ""]
        out += _table(["Method", "Id", "Family", "Note"],
                      [[_cell(R.label(m)), f"`{m}`", R.family(m),
                        _cell((R.methods.get(m) or {}).get("note") or "")]
                       for m in R.method_order])
        out.append("")
    return out


def _case_sections(R: _Results) -> list[str]:
    out: list[str] = []
    for case in R.standard_cases():
        info = R.case_info(case)
        key, _, higher = headline(info, {})
        desc = [str(info.get("kind"))] if info.get("kind") else []
        n_labels = len(R.label_keys(case))
        if n_labels:
            desc.append(f"{n_labels} labels")
        if info.get("landmarks"):
            desc.append("landmarks")
        out += [f"## Case `{case}`", ""]
        if desc:
            out += [_cell(", ".join(desc)) + f". Headline: {metric_label(key)} "
                    f"({'higher' if higher else 'lower'} is better; best non-identity in bold).", ""]
        out += _method_table(R, case, "standard", _case_columns(R, case), key, higher)
        out.append("")
    return out


def _diff_cell(ours: Optional[float], peer: Optional[float], key: str, higher: bool) -> str:
    if ours is None or peer is None:
        return DASH
    d = ours - peer
    text = f"{d:+.{_decimals(key)}f}"
    if d == 0:
        return text + " (tie)"
    better = (d > 0) == higher
    return text + (" (ours better)" if better else " (peer better)")


def _summary_section(R: _Results) -> list[str]:
    cases = R.standard_cases()
    ours = R.default_method()
    if not cases or not ours:
        return []
    peers = R.peers()
    warm = R.warm_method()
    header = ["Case", "Metric", f"Ours ({_cell(R.label(ours))})", "Best peer", "Ours − best peer"]
    header += [f"Time ours/{_cell(R.label(p))}" for p in peers]
    if warm:
        header.append(f"Time warm/{_cell(R.label(CONVEXADAM_MIND))}")
    rows = []
    for case in cases:
        info = R.case_info(case)
        key, _, higher = headline(info, {})
        dec = _decimals(key)
        run = R.run(case, "standard", ours)
        our_val = R.headline(case, run)
        if our_val is not None:
            ours_cell = f"{our_val:.{dec}f}"
        else:
            ours_cell = DASH if R.ok(run) else _cell(_status_text(run))
        best_peer, best_val = None, None
        for p in peers:
            v = R.headline(case, R.run(case, "standard", p))
            if v is not None and (best_val is None or (v > best_val if higher else v < best_val)):
                best_peer, best_val = p, v
        peer_cell = f"{best_val:.{dec}f} ({_cell(R.label(best_peer))})" if best_peer else DASH
        arrow = "↑" if higher else "↓"
        row = [f"`{case}`", f"{metric_label(key)} {arrow}", ours_cell, peer_cell,
               _diff_cell(our_val, best_val, key, higher)]
        our_t = (run or {}).get("registration_s") if R.ok(run) else None
        for p in peers:
            pr = R.run(case, "standard", p)
            row.append(_ratio(our_t, pr.get("registration_s")) if R.ok(pr) else DASH)
        if warm:
            wr, cr = R.run(case, "standard", warm), R.run(case, "standard", CONVEXADAM_MIND)
            row.append(_ratio(wr.get("registration_s"), cr.get("registration_s"))
                       if R.ok(wr) and R.ok(cr) else DASH)
        rows.append(row)
    out = ["## Summary", ""]
    out += _table(header, rows)
    out += ["",
            f"Ours = the default method {_cell(R.label(ours))} (`{ours}`); best peer = the most "
            "accurate of the peer methods on that case. \"Ours − best peer\" is signed: for Dice "
            "(higher is better) a positive difference means ours is better; for TRE and EPE (mm, "
            "lower is better) a negative difference means ours is better. Time columns are "
            "registration-time ratios ours / peer (below 1× means ours is faster)."
            + (f" \"Time warm\" is {_cell(R.label(warm))} (`{warm}`, the default re-run with a "
               "warm feature cache) against ConvexAdam-MIND." if warm else ""),
            ""]
    return out


def _robustness_section(R: _Results) -> list[str]:
    rows = []
    for case in R.case_order:
        info = R.case_info(case)
        key, _, higher = headline(info, {})
        dec = _decimals(key)
        for m in R.method_order:
            reo = R.run(case, "reoriented", m)
            if reo is None:
                continue
            std = R.run(case, "standard", m)
            vs, vr = R.headline(case, std), R.headline(case, reo)

            def show(run: Optional[dict], v: Optional[float]) -> str:
                if v is not None:
                    return f"{v:.{dec}f}"
                return DASH if R.ok(run) else _cell(_status_text(run))

            diff = f"{vr - vs:+.{dec}f}" if vs is not None and vr is not None else DASH
            rows.append([f"`{case}`", _cell(R.label(m)),
                         f"{metric_label(key)} {'↑' if higher else '↓'}",
                         show(std, vs), show(reo, vr), diff])
    if not rows:
        return []
    out = ["## Robustness", "",
           "Same case and method with the moving image stored in a different orientation and "
           "spacing. A robust method gives (nearly) the same accuracy: the difference "
           "(reoriented − standard) should be close to 0.", ""]
    out += _table(["Case", "Method", "Metric", "Standard", "Reoriented",
                   "Reoriented − standard"], rows)
    out.append("")
    return out


def _synthetic_section(R: _Results) -> list[str]:
    cases = [c for c in R.synthetic_cases()
             if any(R.run(c, "synthetic", m) for m in R.method_order)]
    if not cases:
        return []
    cols: list[_Column] = [
        ("EPE mean mm", _col(lambda r, m: _fmt(m.get("epe_mean_mm"), 2), "epe_mean_mm")),
        ("EPE p95 mm", _col(lambda r, m: _fmt(m.get("epe_p95_mm"), 2))),
        ("Dice mean", _col(lambda r, m: _fmt(m.get("dice_mean"), 3))),
        ("% fold", _col(lambda r, m: _fmt(m.get("fold_percent"), 3))),
        ("Reg. s", _col(lambda r, m: _fmt(r.get("registration_s"), 1))),
        ("End-to-end s", _col(lambda r, m: _fmt(r.get("end_to_end_s"), 1))),
    ]
    out = ["## Synthetic", "",
           "Known synthetic deformations: end-point error (EPE) of the recovered displacement, "
           "lower is better (best non-identity in bold).", ""]
    for case in cases:
        info = R.case_info(case)
        out += [f"### Synthetic case `{case}`", ""]
        if info.get("kind"):
            out += [_cell(info["kind"]), ""]
        out += _method_table(R, case, "synthetic", cols, "epe_mean_mm", False)
        out.append("")
    return out


def render_markdown(results: dict) -> str:
    """The full ``results.md`` text for a results dict (see the module docstring)."""
    R = _Results(results)
    lines = (_header_section(R) + _case_sections(R) + _summary_section(R)
             + _robustness_section(R) + _synthetic_section(R))
    return "\n".join(lines).rstrip("\n") + "\n"


def write_markdown(results: dict, path: Path) -> None:
    """Write the benchmark report as markdown to ``path`` atomically (temp file + os.replace)."""
    text = render_markdown(results)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
