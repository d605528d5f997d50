"""``samreg bench``: every (case, method) in a fresh subprocess, scored by one metric path.

Outputs in OUTDIR: ``results.json`` (rewritten after every run, so an interrupted benchmark
keeps what it measured), ``results.md``, PNG plots, and per-run folders under ``runs/``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import SimpleITK as sitk

from ..errors import InputError
from ..io_atomic import write_json_atomic
from .cases import Case, default_data_dir, load_cases, quick_cases
from .ours import OurMethod, our_methods
from .peers import PEER_INSTALL, PEER_LABELS, PEERS, package_available

Printer = Callable[[str], None]


@dataclass
class BenchOptions:
    output_dir: Path
    cases: Optional[list[str]] = None
    methods: Optional[list[str]] = None
    data_dir: Optional[Path] = None
    quick: bool = False
    synthetic: bool = False
    robustness: bool = True
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout_s: float = 1800.0
    keep_fields: bool = False
    command: str = ""


# ----------------------------------------------------------------------------- methods
def default_method_id() -> str:
    from ..settings import Settings
    s = Settings()
    return f"samreg/{s.method}/{s.encoder}"


def all_methods() -> dict[str, dict]:
    """Every benchmark method id -> {label, family}, in table order."""
    from ..settings import Settings
    s = Settings()
    methods = {"identity": {"label": PEER_LABELS["identity"], "family": "baseline"}}
    for ours in our_methods(s.encoder, s.method):
        methods[ours.id] = {"label": ours.label, "family": "samreg"}
    for name, (family, _, _) in PEERS.items():
        if name != "identity":
            methods[name] = {"label": PEER_LABELS[name], "family": family}
    return methods


def resolve_methods(requested: Optional[list[str]]) -> list[str]:
    """Method ids from names, ids or the groups ``samreg`` and ``peers`` (identity always first)."""
    known = all_methods()
    if not requested:
        return list(known)
    chosen = ["identity"]
    for name in requested:
        if name == "samreg":
            matches = [m for m in known if m.startswith("samreg/")]
        elif name == "peers":
            matches = [m for m, info in known.items() if info["family"] == "peer"]
        elif name in known:
            matches = [name]
        elif "?" in name and OurMethod.parse(name) and OurMethod.parse(name).cold_id.split("?")[0] in known:
            from ..settings import Settings
            Settings.from_dict(OurMethod.parse(name).settings())      # a bad setting: one line, before any run
            matches = [name]        # a known method of ours with settings of its own
        else:       # a bare encoder or method name selects our methods using it
            matches = [m for m in known if m.startswith("samreg/") and name in m.split("@")[0].split("/")[1:]]
        if not matches:
            raise InputError(f"unknown benchmark method {name!r}; known: {', '.join(known)}, or 'samreg', 'peers'")
        chosen += [m for m in matches if m not in chosen]
    # a warm run needs its cold run first
    for m in list(chosen):
        ours = OurMethod.parse(m)
        if ours and ours.warm and ours.cold_id not in chosen:
            chosen.insert(chosen.index(m), ours.cold_id)
    return chosen


def method_available(method_id: str) -> Optional[str]:
    """None when the method can run here, else why not."""
    if method_id in PEERS and PEERS[method_id][2] and not package_available(PEERS[method_id][2]):
        how = PEER_INSTALL.get(method_id, "pip install 'samregistration[bench]'")
        return f"{PEERS[method_id][2]} is not installed ({how})"
    return None


# ----------------------------------------------------------------------------- time estimates
# seconds = a + b * fixed megavoxels, fitted to runs on a 2-core CPU (cold feature cache)
_ESTIMATE = {"identity": (1, 0.2), "litemedsam": (35, 17), "mind": (12, 7), "litemedsam+mind": (40, 18),
             "auto": (40, 18),
             "warm": (20, 11), "ants-syn": (6, 8), "elastix": (25, 3), "convexadam-mind": (8, 9),
             "fireants": (5, 15)}     # fireants: 1-thread runs up to 0.8 Mvoxel gave about 4 + 21 s/Mvoxel


def _megavoxels(path: str) -> float:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    size = reader.GetSize()
    return size[0] * size[1] * size[2] / 1e6


def estimate_seconds(method_id: str, megavoxels: float) -> float:
    ours = OurMethod.parse(method_id)
    key = ("warm" if ours.warm else ours.encoder) if ours else method_id
    a, b = _ESTIMATE.get(key, (30, 15))
    return a + b * megavoxels


# ----------------------------------------------------------------------------- one run
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_one(case: Case, method_id: str, run_dir: Path, threads: int, cache_dir: Path,
            timeout_s: float, overrides: Optional[dict] = None, cache_state: str = "") -> dict:
    """Run one method on one case in a fresh Python process; return its run.json plus wall time."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    spec = {"method": method_id, "case": case.to_dict(), "workdir": str(run_dir), "threads": threads,
            "cache_dir": str(cache_dir), "overrides": overrides or {}, "cache_state": cache_state}
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        env[name] = str(threads)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    with open(run_dir / "child.log", "wb") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", "SAMRegistrationLib.bench.child", str(spec_path)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s,
                                  cwd=run_dir)      # peers that write to the cwd (transformix) write here
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.perf_counter() - start
    result_path = run_dir / "run.json"
    if code is None:
        return {"status": "failed", "error": f"timed out after {timeout_s:.0f} s", "end_to_end_s": round(wall, 2)}
    if not result_path.is_file():
        tail = (run_dir / "child.log").read_text(errors="replace").strip().splitlines()[-1:]
        return {"status": "failed", "error": f"the run exited with status {code} without a result"
                + (f": {tail[0][:200]}" if tail else ""), "end_to_end_s": round(wall, 2)}
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["end_to_end_s"] = round(wall, 2)      # process start to field written, as a user waits
    return result


# ----------------------------------------------------------------------------- variants
def reoriented_case(case: Case, folder: Path) -> Case:
    """The case with its moving image (and labels) stored permuted, flipped and at another spacing."""
    from .perturb import reoriented_copy

    folder.mkdir(parents=True, exist_ok=True)
    moving = folder / "moving.nii.gz"
    sitk.WriteImage(reoriented_copy(sitk.ReadImage(case.moving)), str(moving), True)
    data = case.to_dict()
    data.update(moving=str(moving), variant="reoriented")
    if case.moving_seg:
        seg = folder / "moving_seg.nii.gz"
        sitk.WriteImage(reoriented_copy(sitk.ReadImage(case.moving_seg), is_label=True), str(seg), True)
        data["moving_seg"] = str(seg)
    return Case.from_dict(data)


def synthetic_cases(sources: list[Case], folder: Path, seed: int = 7) -> list[Case]:
    """Random smooth deformations (and intensity changes) of each case's fixed image and of the demo brain."""
    from ..demo import load_template, tissue_labels
    from .perturb import make_synthetic_pair

    made = []
    inputs: list[tuple[str, sitk.Image, Optional[sitk.Image], dict, str]] = []
    for case in sources:
        fixed = sitk.ReadImage(case.fixed, sitk.sitkFloat32)
        seg = sitk.ReadImage(case.fixed_seg, sitk.sitkUInt8 if max(case.labels or [1]) < 256 else sitk.sitkInt32) \
            if case.fixed_seg else None
        if seg is not None:
            seg.CopyInformation(fixed)
        inputs.append((f"syn-{case.name}", fixed, seg, case.label_names, case.kind))
    t1, gm, wm = load_template()
    labels = sitk.GetImageFromArray(tissue_labels(sitk.GetArrayFromImage(gm), sitk.GetArrayFromImage(wm)).astype("uint8"))
    labels.CopyInformation(t1)
    inputs.append(("syn-demo", t1, labels, {"1": "GM", "2": "WM"}, "MNI152 2009a T1, 2 mm"))
    for index, (name, fixed, seg, names, kind) in enumerate(inputs):
        pair = make_synthetic_pair(fixed, seg, seed=seed + index)
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        files = {"fixed": out / "fixed.nii.gz", "moving": out / "moving.nii.gz", "true_field": out / "true_field.nrrd"}
        sitk.WriteImage(pair.fixed, str(files["fixed"]), True)
        sitk.WriteImage(pair.moving, str(files["moving"]), True)
        sitk.WriteImage(pair.true_field, str(files["true_field"]), True)
        extra: dict = {}
        if pair.fixed_seg is not None:
            extra = {"fixed_seg": out / "fixed_seg.nii.gz", "moving_seg": out / "moving_seg.nii.gz"}
            sitk.WriteImage(pair.fixed_seg, str(extra["fixed_seg"]), True)
            sitk.WriteImage(pair.moving_seg, str(extra["moving_seg"]), True)
        present = sorted(int(v) for v in set(sitk.GetArrayViewFromImage(seg).ravel().tolist()) - {0}) if seg is not None else []
        made.append(Case(name=name, kind=f"synthetic deformation of: {kind}", variant="synthetic",
                         labels=present, label_names=dict(names),
                         **{k: str(v) for k, v in {**files, **extra}.items()}))
    return made


# ----------------------------------------------------------------------------- the benchmark
def _versions() -> dict:
    import importlib.metadata as md
    out = {}
    for dist in ("samregistration", "torch", "SimpleITK", "numpy", "antspyx", "itk-elastix", "convexadam",
                 "fireants"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _machine() -> str:
    import psutil
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GB RAM, {platform.system()} {platform.release()}")


def run_bench(options: BenchOptions, say: Printer = print) -> dict:
    """Run the benchmark described by ``options``; returns the results dict (also written to disk)."""
    from ..settings import Settings
    from .score import initial_metrics, score_field

    out = Path(options.output_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    methods = resolve_methods(options.methods)
    if options.quick:
        cases = quick_cases(out / "inputs" / "quick")
    else:
        cases = load_cases(Path(options.data_dir) if options.data_dir else default_data_dir(), options.cases)
    if options.synthetic:
        cases += synthetic_cases([c for c in cases if c.variant == "standard"], out / "inputs" / "synthetic")
    default_id = default_method_id()
    jobs: list[tuple[Case, str]] = [(c, m) for c in cases for m in methods]
    if options.robustness:
        for case in [c for c in cases if c.variant == "standard" or (options.quick and c.name == "shift")]:
            rc = reoriented_case(case, out / "inputs" / f"{case.name}-reoriented")
            jobs += [(rc, m) for m in ("identity", default_id) if m in methods]   # identity is always in
    overrides: dict = {}
    results = {
        "meta": {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": _machine(),
                 "command": options.command, "threads": options.threads, "versions": _versions(),
                 "quick": options.quick, "default_method": default_id,
                 "defaults": Settings().to_dict()},
        "methods": {**{m: info for m, info in all_methods().items() if m in methods},
                    **{m: {"label": OurMethod.parse(m).label, "family": "samreg"}
                       for m in methods if "?" in m}},
        "cases": {c.name: c.info() for c in cases},
        "runs": [], "sanity": {},
    }
    estimates = [estimate_seconds(m, _megavoxels(c.fixed)) for c, m in jobs]
    say(f"samreg bench: {len(jobs)} runs ({len(cases)} cases x {len(methods)} methods"
        f"{' + robustness' if options.robustness else ''}), {options.threads} threads; "
        f"expected duration about {sum(estimates) / 60:.0f} min")
    json_path = out / "results.json"
    for index, ((case, method_id), estimate) in enumerate(zip(jobs, estimates)):
        label = f"[{index + 1}/{len(jobs)}] {case.name}{'' if case.variant == 'standard' else ' (' + case.variant + ')'} / {method_id}"
        record = {"case": case.name, "variant": case.variant, "method": method_id, "status": "ok", "error": None,
                  "registration_s": None, "end_to_end_s": None, "peak_rss_mb": None, "note": "", "metrics": {}}
        why_not = method_available(method_id)
        if why_not:
            record.update(status="unavailable", error=why_not)
            say(f"{label}: unavailable ({why_not})")
        else:
            say(f"{label}: running (about {estimate:.0f} s)")
            ours = OurMethod.parse(method_id)
            cache = out / "cache" / _safe(case.name + "-" + case.variant) / _safe(ours.cold_id if ours else method_id)
            if options.quick:                         # speed over timing: encoders share one cache
                cache = out / "cache" / _safe(case.name + "-" + case.variant)
                state = "shared feature cache (quick mode)"
            elif ours and not ours.warm:
                shutil.rmtree(cache, ignore_errors=True)  # cold means cold: no features from an earlier bench
                state = "cold: empty feature cache"
            else:
                state = "warm: feature cache filled by the cold run"
            run_dir = out / "runs" / _safe(f"{case.name}-{case.variant}") / _safe(method_id)
            outcome = run_one(case, method_id, run_dir, options.threads, cache, options.timeout_s, overrides,
                              state if ours else "")
            record.update({k: outcome.get(k) for k in ("status", "error", "registration_s", "end_to_end_s",
                                                        "peak_rss_mb", "note") if k in outcome})
            field_path = run_dir / "displacement.nrrd"
            if record["status"] == "ok":
                try:
                    record["metrics"] = score_field(case, sitk.ReadImage(str(field_path), sitk.sitkVectorFloat64))
                except Exception as exc:  # noqa: BLE001 - a scoring failure is reported, not fatal
                    record.update(status="failed", error=f"scoring failed: {exc.__class__.__name__}: {exc}")
            if not options.keep_fields:              # a brain field is ~80 MB per run
                field_path.unlink(missing_ok=True)
                shutil.rmtree(run_dir / "samreg-output", ignore_errors=True)
            say(f"{label}: {_one_line(record, case)}")
        results["runs"].append(record)
        write_json_atomic(results, json_path)
    results["sanity"] = sanity_checks(results, cases, initial_metrics)
    write_json_atomic(results, json_path)
    from .plots import write_plots
    from .report import write_markdown
    write_markdown(results, out / "results.md")
    plots = write_plots(results, out / "plots")
    say(f"results: {json_path}, {out / 'results.md'}, {len(plots)} plots in {out / 'plots'}")
    return results


def _one_line(record: dict, case: Case) -> str:
    if record["status"] != "ok":
        return f"{record['status']}: {record['error']}"
    m = record["metrics"]
    parts = []
    for key, fmt in (("dice_mean", "Dice {:.3f}"), ("tre_mean_mm", "TRE {:.2f} mm"), ("epe_mean_mm", "EPE {:.2f} mm"),
                     ("fold_percent", "fold {:.3f} %")):
        if m.get(key) is not None:
            parts.append(fmt.format(m[key]))
    parts.append(f"{record['registration_s']:.1f} s registration, {record['end_to_end_s']:.1f} s end to end, "
                 f"{record['peak_rss_mb']:.0f} MB")
    return ", ".join(parts)


def sanity_checks(results: dict, cases: list[Case], initial_metrics) -> dict:
    """Identity must reproduce the directly computed initial metrics; known translations must come back."""
    checks: dict = {}
    for case in cases:
        identity = next((r for r in results["runs"] if r["case"] == case.name and r["method"] == "identity"
                         and r["variant"] == case.variant and r["status"] == "ok"), None)
        if identity is None:
            continue
        direct = initial_metrics(case)
        for key in ("dice_mean", "tre_mean_mm"):
            if key in direct and direct[key] is not None:
                got = identity["metrics"].get(key)
                checks[f"{case.name}/{case.variant}: identity {key}"] = {
                    "direct": direct[key], "identity_run": got,
                    "ok": got is not None and abs(got - direct[key]) < 1e-6}
    for run in results["runs"]:
        epe = run["metrics"].get("epe_mean_mm") if run["status"] == "ok" else None
        if run["case"] == "shift" and run["method"] != "identity" and epe is not None:
            checks[f"shift/{run['variant']}: {run['method']} recovers the known translation"] = {
                "epe_mean_mm": epe, "ok": epe < 1.0}
    return checks
