"""The measurements of docs/methods.md ("assisted"): assisted (the shipped model and the two
ablation models) beside convexadam, promptreg and samir on the shared cardiac cases, and
assisted without masks on brain and lung, each run as `samreg register` (2 threads).

Usage, from the repository root, with ../shared/data beside it and the ablation runs of
Resources/Training/train-assisted.sh in runs/assisted-none and runs/assisted-proto:
    .venv/bin/python Resources/Benchmark/2026-11-30-assisted/evaluate.py OUT [--only SUBSTRING]
Writes OUT/results.jsonl (one line per run; a rerun skips the runs already there) and each
run's output folder; tables.py turns results.jsonl into the tables."""
import json, subprocess, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
import SimpleITK as sitk  # noqa: E402
from SAMRegistrationLib.bench.cases import load_cases  # noqa: E402
from SAMRegistrationLib.prompting.from_labels import centre_clicks  # noqa: E402
DATA = REPO.parent / "shared" / "data"
OUT = Path(sys.argv[1]); OUT.mkdir(parents=True, exist_ok=True)
ONLY = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
MODELS = {"full": str(REPO / "SAMRegistrationLib/learned/assisted/shipped/assisted-cardiac.pt"),
          "none": str(REPO / "runs/assisted-none/model.pt"), "proto": str(REPO / "runs/assisted-proto/model.pt")}
CACHE = str(OUT / "cache")

cases = {c.name: c for c in load_cases(DATA, None)}
acdc_fs1 = dict(fixed=str(DATA / "acdc_fs1/fixed.nii.gz"), moving=str(DATA / "acdc_fs1/moving.nii.gz"),
                fixed_seg=str(DATA / "acdc_fs1/fixed_seg.nii.gz"), moving_seg=str(DATA / "acdc_fs1/moving_seg.nii.gz"),
                labels=[1, 2, 3])


def case_args(name):
    if name == "acdc_fs1":
        c = acdc_fs1
        return [c["fixed"], c["moving"], "--fixed-seg", c["fixed_seg"], "--moving-seg", c["moving_seg"], "--labels", "1,2,3"], c
    c = cases[name]
    args = [c.fixed, c.moving]
    if c.has_labels:
        args += ["--fixed-seg", c.fixed_seg, "--moving-seg", c.moving_seg, "--labels", ",".join(map(str, c.labels))]
    if c.fixed_landmarks:
        args += ["--fixed-landmarks", c.fixed_landmarks, "--moving-landmarks", c.moving_landmarks]
    return args, dict(fixed_seg=c.fixed_seg, moving_seg=c.moving_seg, labels=c.labels)


def clicks_file(name, info):
    path = OUT / f"{name}_moving_clicks.json"
    if not path.exists():
        seg = sitk.ReadImage(info["moving_seg"])
        path.write_text(json.dumps(centre_clicks(seg, info["labels"])))
    return str(path)


def runs():
    for name in ("acdc067", "acdc_fs1"):
        _, info = case_args(name)
        clicks = clicks_file(name, info)
        yield name, "convexadam", ["--method", "convexadam"]
        yield name, "promptreg clicks", ["--method", "promptreg", "--moving-prompts", clicks]
        yield name, "samir", ["--method", "samir"]
        yield name, "samir it0", ["--method", "samir", "--iterations", "0"]
        for model, path in MODELS.items():
            for masks, extra in (("clicks", ["--masks", "prompts", "--moving-prompts", clicks]),
                                 ("gt", ["--masks", "files", "--fixed-mask", info["fixed_seg"], "--moving-mask", info["moving_seg"]]),
                                 ("none", ["--masks", "none"]),
                                 ("auto3", ["--masks", "prompts", "--auto-prompts", "3"])):
                if masks in ("auto3", "none") and model != "full":
                    continue
                for iterations in (0, 60):
                    yield name, f"assisted-{model} {masks} it{iterations}", ["--method", "assisted", "--model", path,
                                                                              "--iterations", str(iterations), *extra]
    for name in ("brain", "lung"):
        for iterations in (0, 60):
            yield name, f"assisted-full none it{iterations}", ["--method", "assisted", "--model", MODELS["full"],
                                                               "--iterations", str(iterations)]


results = OUT / "results.jsonl"
done = {(r["case"], r["label"]) for r in map(json.loads, results.read_text().splitlines())} if results.exists() else set()
for name, label, extra in runs():
    if (name, label) in done or ONLY not in f"{name} {label}":
        continue
    args, _ = case_args(name)
    out = OUT / name / label.replace(" ", "_")
    cmd = [str(REPO / ".venv/bin/samreg"), "register", *args, "-o", str(out), "--cache-dir", CACHE, "--threads", "2",
           "-q", *extra]
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    row = {"case": name, "label": label, "wall_s": round(wall, 1), "rc": proc.returncode}
    if proc.returncode:
        row["error"] = proc.stderr.strip().splitlines()[-1:] 
    else:
        report = json.loads((out / "report.json").read_text())
        m, method = report["metrics"], report["resolved"]["method"]
        row.update({k: m.get(k) for k in ("dice", "dice_mean", "tre_mean_mm", "fold_percent", "sdlogj")})
        row["optimise_s"] = report["timings"].get("optimise_s")
        row["total_s"] = report["timings"].get("total_s")
        row["method"] = {k: v for k, v in method.items() if k in ("masks", "structures", "network_seconds",
                                                                   "refine_seconds", "encode_seconds", "regions_used")}
        if m.get("regions"):
            row["regions"] = m["regions"]
    print(json.dumps(row), flush=True)
    with results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
