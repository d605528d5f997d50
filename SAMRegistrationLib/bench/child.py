"""One benchmark run in its own process: ``python -m SAMRegistrationLib.bench.child SPEC.json``.

The spec names the method, the case and a work folder. The child registers, writes the
fixed->moving field to ``displacement.nrrd`` and its timing to ``run.json`` (both atomically);
scoring happens in the parent, so neither the metric code nor earlier runs count against this
run's time or peak memory. Exit status 0 on success, 1 on failure (the error is in run.json).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

START = time.perf_counter()


def run_spec(spec: dict) -> dict:
    from ..io_atomic import write_image_atomic
    from .cases import Case
    from .ours import OurMethod, run_ours
    from .peers import PEERS

    case = Case.from_dict(spec["case"])
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    threads = int(spec["threads"])
    ours = OurMethod.parse(spec["method"])
    if ours is not None:
        result = run_ours(ours, case, workdir, threads, Path(spec["cache_dir"]), spec.get("overrides"),
                          spec.get("cache_state", ""))
    elif spec["method"] in PEERS:
        result = PEERS[spec["method"]][1](case, workdir, threads)
    else:
        raise ValueError(f"unknown benchmark method {spec['method']!r}")
    write_image_atomic(result.field, workdir / "displacement.nrrd")
    return {"status": "ok", "registration_s": round(result.registration_s, 2), "note": result.note}


def main(argv: list[str]) -> int:
    from ..pipeline import peak_rss_mb

    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    threads = str(spec["threads"])
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[name] = threads           # before torch/ITK/ANTs load their thread pools
    try:
        outcome = run_spec(spec)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, never swallowed silently
        message = str(exc).strip().splitlines()
        outcome = {"status": "failed", "error": f"{exc.__class__.__name__}: {message[-1] if message else ''}",
                   "traceback": traceback.format_exc()}
        code = 1
    outcome.update(end_to_end_s=round(time.perf_counter() - START, 2), peak_rss_mb=round(peak_rss_mb(), 1))
    target = Path(spec["workdir"]) / "run.json"
    tmp = target.with_name(".run.json.tmp")
    tmp.write_text(json.dumps(outcome, indent=1), encoding="utf-8")
    os.replace(tmp, target)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
