"""The measurement behind docs/batch.md "Measured": 20 pairs sharing one template, run by
``samreg batch`` with 1 and 2 workers and by ``samreg register`` 20 times in a shell loop.

    .venv/bin/python Resources/Benchmark/2026-11-30-batch/run.py [--data ../shared/data] [--work DIR]

The pairs: the template is acdc067's end-diastole frame (with its labels); the moving images
are the real end-systole frame, 10 random smooth deformations (up to 6 mm, with gamma, bias
and noise changes) of the template and 9 of the end-systole frame. Every run starts with an
empty feature cache of its own. Peak memory is the largest summed RSS of the run's process
tree, sampled every 0.2 s. Prints a Markdown table; writes results.json into --work.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import SimpleITK as sitk

from SAMRegistrationLib.bench.perturb import make_synthetic_pair

SAMREG = [sys.executable, "-m", "SAMRegistrationLib.cli"]


def make_pairs(data: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    case = data / "acdc067"
    rows = [["id", "fixed", "moving", "fixed_seg", "moving_seg"],
            ["real-es", str(case / "fixed.nii.gz"), str(case / "moving.nii.gz"), str(case / "fixed_seg.nii.gz"),
             str(case / "moving_seg.nii.gz")]]
    sources = {"ed": (case / "fixed.nii.gz", case / "fixed_seg.nii.gz"),
               "es": (case / "moving.nii.gz", case / "moving_seg.nii.gz")}
    for name, count in (("ed", 10), ("es", 9)):
        image, seg = (sitk.ReadImage(str(p)) for p in sources[name])
        for seed in range(count):
            pair = make_synthetic_pair(image, seg, seed=100 + seed)
            moving, moving_seg = folder / f"{name}-def{seed}.nii.gz", folder / f"{name}-def{seed}_seg.nii.gz"
            sitk.WriteImage(pair.moving, str(moving))
            sitk.WriteImage(pair.moving_seg, str(moving_seg))
            rows.append([f"{name}-def{seed}", str(case / "fixed.nii.gz"), str(moving), str(case / "fixed_seg.nii.gz"),
                         str(moving_seg)])
    table = folder / "pairs.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return table


class PeakMemory:
    """Largest summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._roots: list[int] = []

    def watch(self, pid: int) -> None:
        self._roots.append(pid)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in list(self._roots):
                try:
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        try:
                            total += proc.memory_info().rss
                        except psutil.Error:
                            pass
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(0.2)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(command: list[str], memory: PeakMemory) -> subprocess.CompletedProcess:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory.watch(process.pid)
    out, err = process.communicate()
    memory._roots.remove(process.pid)
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {shlex.join(command)}\n{err[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def shell_loop(table: Path, out: Path, cache: Path) -> dict:
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    start = time.perf_counter()
    with PeakMemory() as memory:
        for row in rows:
            run([*SAMREG, "register", row["fixed"], row["moving"], "-o", str(out / row["id"]), "--fixed-seg",
                 row["fixed_seg"], "--moving-seg", row["moving_seg"], "--cache-dir", str(cache), "-q"], memory)
    wall = time.perf_counter() - start
    reports = [json.loads((out / row["id"] / "report.json").read_text()) for row in rows]
    from SAMRegistrationLib.batch.task import encoded
    return {"wall_s": wall, "peak_mb": memory.peak_mb,
            "template_encodes": sum(bool(encoded(r["resolved"]["encoder"], "fixed")) for r in reports),
            "dice": [r["metrics"]["dice_mean"] for r in reports]}


def batch(table: Path, out: Path, cache: Path, workers: int) -> dict:
    start = time.perf_counter()
    with PeakMemory() as memory:
        run([*SAMREG, "batch", str(table), "-o", str(out), "--cache-dir", str(cache), "--workers", str(workers),
             "-q"], memory)
    wall = time.perf_counter() - start
    info = json.loads((out / "batch.json").read_text())
    shared = next(iter(info["shared_images"].values()))
    with (out / "summary.csv").open() as handle:
        dice = [float(r["dice_mean"]) for r in csv.DictReader(handle)]
    return {"wall_s": wall, "peak_mb": memory.peak_mb, "template_encodes": shared["encoded"], "dice": dice,
            "cluster": info["cluster"], "status": info["status"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3].parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("batch-measurement"))
    parser.add_argument("--only", help="loop,batch1,batch2 (default: all)")
    args = parser.parse_args()
    table = make_pairs(args.data, args.work / "pairs")
    wanted = (args.only or "loop,batch1,batch2").split(",")
    results = {}
    for name in wanted:
        cache = args.work / f"cache-{name}"
        if name == "loop":
            results[name] = shell_loop(table, args.work / "loop", cache)
        else:
            results[name] = batch(table, args.work / name, cache, int(name[-1]))
        print(name, {k: v for k, v in results[name].items() if k != "dice"}, flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    loop = results.get("loop", {}).get("wall_s")
    print("\n| run | wall (s) | vs shell loop | peak memory (MB) | template encoded | mean Dice |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{loop / r['wall_s']:.2f}x" if loop else ""
        print(f"| {name} | {r['wall_s']:.1f} | {ratio} | {r['peak_mb']:.0f} | {r['template_encodes']} | "
              f"{sum(r['dice']) / len(r['dice']):.3f} |")


if __name__ == "__main__":
    main()
