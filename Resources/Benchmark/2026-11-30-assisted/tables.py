"""Markdown tables from evaluate.py's results.jsonl. Usage: tables.py OUT"""
import json, sys
from pathlib import Path

OUT = Path(sys.argv[1])
rows = [json.loads(l) for l in (OUT / "results.jsonl").read_text().splitlines()]
by = {(r["case"], r["label"]): r for r in rows}
NAMES = {"1": "RV", "2": "Myo", "3": "LV"}


def f(v, n=3):
    return "—" if v is None else f"{v:.{n}f}"


def method_time(r):
    m = r.get("method") or {}
    if "network_seconds" in m:
        return m.get("network_seconds", 0) + m.get("refine_seconds", 0) + m.get("encode_seconds", 0)
    return r.get("optimise_s")


print("## Cardiac (both cases' images seen in training, as single volumes: not held out)\n")
print("| method | case | RV | Myo | LV | mean | fold % | method s | total s |")
print("|---|---|---|---|---|---|---|---|---|")
labels = ["convexadam", "promptreg clicks", "samir it0", "samir"]
for masks in ("clicks", "auto3", "gt", "none"):
    for it in (0, 60):
        labels.append(f"assisted-full {masks} it{it}")
for label in labels:
    for case in ("acdc067", "acdc_fs1"):
        r = by.get((case, label))
        if not r:
            continue
        if r["rc"]:
            print(f"| {label} | {case} | error: {r.get('error')} |"); continue
        d = r.get("dice") or {}
        print(f"| {label} | {case} | {f(d.get('1'))} | {f(d.get('2'))} | {f(d.get('3'))} | **{f(r['dice_mean'])}** | "
              f"{f(r['fold_percent'], 4)} | {f(method_time(r), 1)} | {f(r.get('total_s'), 1)} |")

print("\n## Ablation (mean Dice of RV, Myo, LV)\n")
print("| model (training losses) | masks | acdc067 alone | acdc067 + IO | acdc_fs1 alone | acdc_fs1 + IO |")
print("|---|---|---|---|---|---|")
for model, name in (("none", "NCC + diffusion + Dice"), ("proto", "+ prototype"), ("full", "+ prototype + contour (shipped)")):
    for masks in (("clicks", "gt", "none") if model == "full" else ("clicks", "gt")):
        cells = []
        for case in ("acdc067", "acdc_fs1"):
            for it in (0, 60):
                r = by.get((case, f"assisted-{model} {masks} it{it}"))
                cells.append(f(r.get("dice_mean")) if r and not r["rc"] else "—")
        print(f"| {name} | {masks} | " + " | ".join(cells) + " |")

print("\n## Masks given (Dice of each region against the label it overlaps most)\n")
for case in ("acdc067", "acdc_fs1"):
    for masks in ("clicks", "auto3"):
        r = by.get((case, f"assisted-full {masks} it0"))
        if r and r.get("regions"):
            parts = []
            for side, regions in r["regions"].items():
                parts.append(side + ": " + ", ".join(f"{g.get('name', g.get('region'))}→{NAMES.get(str(g.get('label')), g.get('label'))} "
                                                     f"{f(g.get('dice'), 2)}" for g in regions))
            print(f"- {case}, {masks}: " + "; ".join(parts) + f" (structures used: {r['method'].get('structures')})")

print("\n## Brain and lung without masks\n")
print("| method | brain Dice | brain fold % | brain method s | lung TRE mm | lung fold % | lung method s |")
print("|---|---|---|---|---|---|---|")
for label in ("convexadam", "assisted-full none it0", "assisted-full none it60"):
    b, l = by.get(("brain", label)), by.get(("lung", label))
    cells = []
    for r, key in ((b, "dice_mean"), (l, "tre_mean_mm")):
        if r and not r["rc"]:
            cells += [f(r.get(key)), f(r.get("fold_percent"), 4), f(method_time(r), 1)]
        else:
            cells += ["—"] * 3
    print(f"| {label} | " + " | ".join(cells) + " |")
