"""A batch killed halfway and resumed (docs/batch.md "Measured"): the 20 pairs of run.py, two
workers; the whole batch (driver, scheduler, workers) is SIGKILLed once 10 pairs are done, then
the same command is run again. Prints which pairs each run did and compares every output of
the resumed batch with the uninterrupted 2-worker batch of run.py, voxel for voxel.

    .venv/bin/python Resources/Benchmark/2026-11-30-batch/interrupt.py --work DIR   # after run.py
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

OUTPUTS = ("displacement.nrrd", "warped.nii.gz", "jacobian.nii.gz", "warped_seg.nii.gz")


def ok_records(out: Path) -> set[str]:
    folder = out / ".samreg-batch" / "records"
    done = set()
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            if json.loads(path.read_text())["status"] == "ok":
                done.add(path.stem)
        except (OSError, ValueError):
            pass
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("batch-measurement"))
    parser.add_argument("--kill-after", type=int, default=10)
    args = parser.parse_args()
    table, reference, out = args.work / "pairs" / "pairs.csv", args.work / "batch2", args.work / "interrupted"
    command = [sys.executable, "-m", "SAMRegistrationLib.cli", "batch", str(table), "-o", str(out), "--cache-dir",
               str(args.work / "cache-interrupted"), "--workers", "2", "-q"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while len(ok_records(out)) < args.kill_after:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first = sorted(ok_records(out))
    leftovers = sorted(str(p.relative_to(out)) for p in out.glob("*/.samreg-staging-*"))
    print(f"killed after {time.perf_counter() - start:.1f} s with {len(first)} pairs done: {', '.join(first)}")
    print(f"staging folders left by the kill: {leftovers or 'none'}")
    start = time.perf_counter()
    resumed = subprocess.run(command, capture_output=True, text=True)
    info = json.loads((out / "batch.json").read_text())
    print(f"resumed in {time.perf_counter() - start:.1f} s (exit {resumed.returncode}): ran {', '.join(info['ran'])}; "
          f"skipped {len(info['skipped'])}")
    same = differ = 0
    for pair in sorted(p.name for p in reference.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for name in OUTPUTS:
            a, b = reference / pair / name, out / pair / name
            if a.is_file():
                equal = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a))),
                                       sitk.GetArrayFromImage(sitk.ReadImage(str(b))))
                same, differ = same + equal, differ + (not equal)
                if not equal:
                    print(f"differs: {pair}/{name}")
    left = sorted(str(p.relative_to(out)) for p in out.glob("*/.samreg-staging-*"))
    print(f"outputs identical to the uninterrupted batch: {same}, different: {differ}; staging left: {left or 'none'}")
    (args.work / "interrupt.json").write_text(json.dumps({"done_before_kill": first, "leftovers_after_kill": leftovers,
                                                          "ran_on_resume": info["ran"], "identical": same,
                                                          "different": differ}, indent=1))


if __name__ == "__main__":
    main()
