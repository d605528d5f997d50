"""Speed / memory / fidelity benchmark of the LiteMedSAM slice encoder's routes.

    python -m SAMRegistrationLib.features.speed [--slices 8] [--repeats 2] [--quick] [--runtimes] [--device cuda]

Each configuration runs in a fresh subprocess so that its peak RSS (VmHWM) is its own.
Columns: ms/slice (wall time, best of ``--repeats`` timed runs of ``--slices`` slices, after
one warm-up batch), CPU ms/slice (process CPU time of the same runs: all threads together, a
steadier measure of the work when other processes share the cores), GFLOP/s achieved (the
model's counted floating-point operations per slice over the wall time; compare with
``python -m SAMRegistrationLib.features.roofline``), warm-up time (for torch.compile:
compilation + first run; for other runtimes: conversion, quantisation and first run), peak RSS (on a
GPU: the device memory allocated), and the fidelity of the first batch's embeddings against
the plain fp32 configuration of the same size: the cosine similarity of each token's
256-vector, mean and 1st percentile.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = dict(h=256, w=256, batch=2, fold=True, channels_last=False, bf16=False, compile=False, precision="fp32",
            runtime="torch")


def _configs(quick: bool, device: str = "cpu", runtimes: bool = False):
    out = []

    def add(label, **kw):
        out.append(dict(BASE, label=label, **kw))

    # BASE is the plain fp32 model (BN folded, contiguous NCHW); the encoder runs channels_last (CL)
    for b in (1, 2, 4, 8):
        add(f"256x256 b{b}", batch=b)
    add("256x256 b1 no-BN-fold", batch=1, fold=False)
    add("256x256 b1 CL (fp32 route)", batch=1, channels_last=True)
    add("256x256 b1 CL bf16 autocast", batch=1, channels_last=True, bf16=True)
    add("256x256 b1 bf16", batch=1, precision="bf16")
    add("256x256 b1 CL bf16 (bf16 route)", batch=1, channels_last=True, precision="bf16")
    add("256x256 b2 CL bf16", channels_last=True, precision="bf16")
    add("256x256 b1 int8 dynamic", batch=1, precision="int8")
    add("256x256 b1 CL torch.compile", batch=1, channels_last=True, compile=True)
    add("256x256 b1 CL bf16 torch.compile", batch=1, channels_last=True, precision="bf16", compile=True)
    for side in (224, 192, 160, 128):        # smaller canvases, each after its own fp32 reference
        add(f"{side}x{side} b1 CL", batch=1, h=side, w=side, channels_last=True)
        add(f"{side}x{side} b1 CL bf16", batch=1, h=side, w=side, channels_last=True, precision="bf16")
    if runtimes:            # ONNX Runtime and OpenVINO (features/speed_runtimes.py), against the 256x256 fp32 rows
        from .speed_runtimes import ROUTES
        for runtime in ROUTES:
            add(f"256x256 b1 {runtime}", batch=1, runtime=runtime)
    if device == "cuda":    # a GPU's batches (the encoder's CUDA_BATCH_SIZE)
        add("256x256 b16", batch=16)
        add("256x256 b16 bf16", batch=16, precision="bf16")
    if quick:
        out = [c for c in out if c["label"] in ("256x256 b1", "256x256 b1 CL bf16 (bf16 route)", "128x128 b1 CL")]
    return out


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _test_slices(n: int, h: int, w: int):
    """Smooth random 'images' in [0, 1] (identical for every configuration of a size)."""
    import torch
    import torch.nn.functional as F

    out = []
    for i in range(n):   # slice i depends only on i, whatever n is
        g = torch.Generator().manual_seed(i)
        low = torch.rand(1, 1, max(h // 16, 2), max(w // 16, 2), generator=g)
        x = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        out.append((x + 0.05 * torch.rand(1, 1, h, w, generator=g)).clamp(0, 1))
    return torch.cat(out)


def _child(cfg: dict, slices: int, repeats: int, out_dir: Path) -> dict:
    import torch

    from .litemedsam import LiteMedSAMEncoder, configure_threads

    threads = configure_threads(cfg.get("threads"))
    if cfg.get("runtime", "torch") != "torch":
        from .speed_runtimes import measure
        row, first = measure(cfg, _test_slices(max(slices, cfg["batch"]), cfg["h"], cfg["w"]), repeats, _status_mb)
        torch.save(first.clone(), out_dir / f"{cfg['index']}.pt")
        return row
    t0 = time.perf_counter()
    device = cfg.get("device", "cpu")
    enc = LiteMedSAMEncoder(device=device, batch_size=cfg["batch"], fold_bn=cfg["fold"],
                            channels_last=cfg["channels_last"], bf16=cfg["bf16"], compile=cfg["compile"],
                            precision=cfg.get("precision", "fp32"))
    load_s = time.perf_counter() - t0
    rss_load = _status_mb("VmRSS")
    n = max(slices, cfg["batch"])
    x = _test_slices(n, cfg["h"], cfg["w"])
    t0 = time.perf_counter()
    first = enc.embed(x[: cfg["batch"]])
    warm_s = time.perf_counter() - t0
    torch.save(first.clone(), out_dir / f"{cfg['index']}.pt")
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        enc.embed(x)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    # on a GPU the peak that matters is the device's (embed() returns on the CPU, so timing is synchronous)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _status_mb("VmHWM")
    return dict(ms_per_slice=1000.0 * best / n, cpu_ms_per_slice=1000.0 * best_cpu / n, warm_s=warm_s, load_s=load_s,
                rss_load_mb=rss_load, peak_mb=peak, threads=threads)


def fidelity(embedding, reference) -> tuple[float, float]:
    """Cosine similarity of each token's channel vector, (B, C, h, w) against the reference:
    (mean, 1st percentile)."""
    import torch
    cos = torch.nn.functional.cosine_similarity(embedding.float(), reference.float(), dim=1).flatten()
    return float(cos.mean()), float(torch.quantile(cos, 0.01))


def flops_per_slice(h: int, w: int) -> float:
    """Floating-point operations of the fp32 image encoder on one h x w slice (torch's counter:
    matrix products and convolutions, a multiply-add counted as two)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .tinyvit import build_litemedsam_encoder, prepare_for_inference
    model = prepare_for_inference(build_litemedsam_encoder())
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, h, w))
    return float(counter.get_total_flops())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8, help="slices per timed run (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration; best is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="only three configurations")
    parser.add_argument("--runtimes", action="store_true",
                        help="add ONNX Runtime and OpenVINO routes (need onnxruntime, onnx, openvino installed)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to run (cuda: peak MB is the GPU's allocated memory; int8 is CPU-only)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = _child(json.loads(args.child), args.slices, args.repeats, Path(args.out_dir))
        print("RESULT " + json.dumps(result))
        return

    import torch

    print(f"LiteMedSAM encoder benchmark: torch {torch.__version__}, {os.cpu_count()} CPU cores, "
          f"threads={args.threads or 'all'}, {args.slices} slices x best of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f}")
    header = (f"{'configuration':<34} {'ms/slice':>9} {'CPU ms/sl':>10} {'GFLOP/s':>8} {'warm-up s':>10} "
              f"{'peak MB':>8} {'cos mean':>9} {'cos p1':>8}")
    print(header)
    print("-" * len(header))
    refs, flops = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, cfg in enumerate(_configs(args.quick, args.device, args.runtimes)):
            if args.device == "cuda" and cfg["precision"] == "int8":
                continue
            cfg = dict(cfg, index=index, threads=args.threads, device=args.device)
            cmd = [sys.executable, "-m", "SAMRegistrationLib.features.speed", "--child", json.dumps(cfg),
                   "--out-dir", tmp, "--slices", str(args.slices), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                reason = (proc.stderr.strip().splitlines() or ["failed"])[-1][:60]
                print(f"{cfg['label']:<34} failed: {reason}", flush=True)
                continue
            r = json.loads(lines[-1][len("RESULT "):])
            emb = torch.load(Path(tmp) / f"{index}.pt", weights_only=True)[:1]
            shape_key = (cfg["h"], cfg["w"])
            # the reference of a size: its first fp32 eager row (memory layout does not change the numbers)
            plain = cfg["fold"] and not (cfg["bf16"] or cfg["compile"]) \
                and cfg["precision"] == "fp32" and cfg["runtime"] == "torch"
            if shape_key not in refs and plain:
                refs[shape_key] = emb
            cos_mean, cos_p1 = fidelity(emb, refs[shape_key]) if shape_key in refs else (float("nan"),) * 2
            if shape_key not in flops:
                flops[shape_key] = flops_per_slice(cfg["h"], cfg["w"])
            gflops = flops[shape_key] / (r["ms_per_slice"] / 1000.0) / 1e9
            print(f"{cfg['label']:<34} {r['ms_per_slice']:9.0f} {r['cpu_ms_per_slice']:10.0f} {gflops:8.1f} "
                  f"{r['warm_s']:10.1f} {r['peak_mb']:8.0f} {cos_mean:9.5f} {cos_p1:8.5f}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes on the machine inflate ms/slice)")


if __name__ == "__main__":
    main()
