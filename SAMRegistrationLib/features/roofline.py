"""Matrix-multiply ceilings of this CPU in fp32, bf16 and int8, for placing the encoder on them.

    python -m SAMRegistrationLib.features.roofline [--size 2048] [--seconds 2] [--threads N]

Each row is the best of repeated square ``size`` x ``size`` products (GFLOP/s or GOP/s, one
multiply-add counted as two operations): fp32 ``torch.mm``, bf16 ``torch.mm`` (oneDNN uses
AVX-512 BF16 dot products where the CPU has them) and int8 ``torch._int_mm`` (int32
accumulation; VNNI where present). These are what this torch build reaches on dense products,
not vendor peak figures; a model's layers run below them (small matrices, convolutions,
softmax and layer norms are not matrix products).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass


@dataclass
class Ceiling:
    dtype: str
    ops_per_second: float        # multiply-adds x 2 per second
    note: str = ""


def _best_rate(product, operations: float, seconds: float) -> float:
    product()                                     # warm-up (kernel selection, packing)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return operations / best


def measure(size: int = 2048, seconds: float = 2.0) -> list[Ceiling]:
    """The fp32, bf16 and int8 ceilings on ``size``-square products."""
    import torch

    operations = 2.0 * size ** 3
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    rows = [Ceiling("fp32", _best_rate(lambda: torch.mm(a, b), operations, seconds))]
    a16, b16 = a.bfloat16(), b.bfloat16()
    rows.append(Ceiling("bf16", _best_rate(lambda: torch.mm(a16, b16), operations, seconds)))
    a8 = torch.randint(-127, 128, (size, size), dtype=torch.int8, generator=generator)
    b8 = torch.randint(-127, 128, (size, size), dtype=torch.int8, generator=generator)
    try:
        rows.append(Ceiling("int8", _best_rate(lambda: torch._int_mm(a8, b8), operations, seconds),
                            "torch._int_mm, int32 accumulation"))
    except RuntimeError as exc:                    # a build without a CPU int8 kernel
        rows.append(Ceiling("int8", float("nan"), f"unavailable: {str(exc).splitlines()[0][:60]}"))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="matrix side (default 2048)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per data type (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"matrix-multiply ceilings: torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, {args.size}^2, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = measure(args.size, args.seconds)
    fp32 = rows[0].ops_per_second
    print(f"{'dtype':<6} {'G(FL)OP/s':>10} {'x fp32':>7}  note")
    for row in rows:
        print(f"{row.dtype:<6} {row.ops_per_second / 1e9:10.1f} {row.ops_per_second / fp32:7.2f}  {row.note}")


if __name__ == "__main__":
    main()
