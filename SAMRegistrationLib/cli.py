"""Command line: ``samreg register | demo | bench | train | apply | invert | batch | worker |
encoders | methods``.

Cheap checks (files exist, labels parse, names known) run before heavy imports; torch is
only imported by the pipeline, so ``samreg --help`` stays fast. User errors
(:class:`SamregError`) print one line ``samreg: error: ...`` and exit 2; not enough memory
exits 3; outputs that cannot be written (disk full) exit 5; cancel (Ctrl-C, SIGTERM) exits
130; anything else is a bug and keeps its traceback (docs/reliability.md).
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import Cancelled, InputError, OutputError, ResourceError, SamregError
from .cli_params import add_training_options, parameter_values
from .ownership import OutputLedger
from .signals import CancelOnSignal
from .batch.command import add_batch_parser
from .register_args import add_pair_options, add_setting_options, positive, prepare_register
from .worker import (EXIT_CANCELLED, EXIT_MEMORY, EXIT_OUTPUT, EXIT_USER, is_out_of_memory, key_metrics, one_line,
                     package_version, validate_names)


# ----------------------------------------------------------------------------- progress bars
class StageBars:
    """Progress callback drawing one tqdm bar per stage on stderr (nothing when disabled)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = None
        self._stage: Optional[str] = None

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            from tqdm import tqdm
            self._stage = stage
            self._bar = tqdm(total=100, desc=f"{stage:<8}", file=sys.stderr, leave=True,
                             dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}{postfix}")
        bar = self._bar
        if message:
            bar.set_postfix_str(str(message)[:60], refresh=False)
        target = int(round(100 * min(max(fraction, 0.0), 1.0)))
        if target > bar.n:
            bar.update(target - bar.n)      # redraws
        else:
            bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._stage = None


# ----------------------------------------------------------------------------- argument parsing
class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes are one ``samreg: error:`` line too (exit 2), not a usage screen."""

    def error(self, message: str):
        print(f"samreg: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USER)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``samreg`` (no heavy imports)."""
    parser = _OneLineParser(
        prog="samreg", description="Deformable registration of 3D medical images with "
        "Segment-Anything-family features.")
    parser.add_argument("--version", action="version", version=f"samreg {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    reg = sub.add_parser("register", help="register MOVING to FIXED",
                         description="Register MOVING to FIXED and write warped.nii.gz, displacement.nrrd, "
                         "jacobian.nii.gz, qc.png and report.json into OUTDIR. Only the options given "
                         "override the defaults.")
    add_pair_options(reg)
    add_setting_options(reg)
    reg.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    reg.set_defaults(func=cmd_register)

    demo = sub.add_parser("demo", help="register a built-in brain example with a known deformation",
                          description="Offline demo on the MNI152 template (from nilearn) warped by a "
                          "known random deformation; prints endpoint error, Dice and folding.")
    demo.add_argument("-o", "--output", dest="output_dir", metavar="OUTDIR", type=Path,
                      default=Path("samreg-demo"), help="output folder (default: ./samreg-demo)")
    demo.add_argument("--encoder", help="override the default encoder (e.g. mind for a quick run)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    work = sub.add_parser("worker", help="run a JSON job, streaming JSON events on stdout",
                          description="Run the job in JOB.json and stream one JSON event per line "
                          "on stdout (see SAMRegistrationLib/worker.py for the schema).")
    work.add_argument("--job", required=True, metavar="JOB.json", type=Path)
    work.set_defaults(func=cmd_worker)

    bench = sub.add_parser("bench", help="benchmark against ANTs SyN, Elastix and ConvexAdam on the shared cases",
                           description="Run SAMRegistration's methods and the peer tools on each case, each "
                           "run in a fresh process with the same thread count, score them with one metric "
                           "path, and write results.json, results.md and plots into OUTDIR.")
    bench.add_argument("--cases", metavar="A,B", help="cases from cases.json (default: brain,acdc067,lung,spine)")
    bench.add_argument("--methods", metavar="A,B", help="method ids, encoder names, or the groups "
                       "'samreg' and 'peers' (default: all; identity always runs)")
    bench.add_argument("--data", type=Path, metavar="DIR", help="folder with cases.json (default: ../shared/data)")
    bench.add_argument("--quick", action="store_true", help="tiny data-free cases, a few minutes (used in CI)")
    bench.add_argument("--synthetic", action="store_true",
                       help="add random smooth deformations of each case's fixed image and of the demo brain")
    bench.add_argument("--no-robustness", dest="robustness", action="store_false",
                       help="skip the re-oriented, re-sampled moving-image run of each case")
    bench.add_argument("--threads", type=positive(int), metavar="N", help="threads per run (default: all cores)")
    bench.add_argument("--timeout", type=positive(float), default=1800.0, metavar="S", help="limit per run (s)")
    bench.add_argument("--keep-fields", action="store_true", help="keep every run's displacement field")
    bench.add_argument("-o", "--output", dest="output_dir", type=Path, default=Path("samreg-bench"), metavar="OUTDIR",
                       help="output folder (default: ./samreg-bench)")
    bench.set_defaults(func=cmd_bench)

    tr = sub.add_parser("train", help="train a learned registration method on a dataset",
                        description="Train METHOD on the pairs of DATASET.json (real pairs, and synthetic "
                        "pairs made from single volumes and label maps) into RUN_DIR: checkpoints, "
                        "model.pt, train.log, metrics.csv, curves.png. Re-running the same command "
                        "resumes from the last checkpoint. Under torchrun it trains with DDP. "
                        "See docs/training.md.")
    tr.add_argument("method", metavar="METHOD", help="a method that can be trained")
    tr.add_argument("--data", required=True, type=Path, metavar="DATASET.json", help="the dataset file")
    tr.add_argument("-o", "--output", dest="output_dir", required=True, type=Path, metavar="RUN_DIR",
                    help="run folder (created if missing; resumed if it holds a run)")
    tr.add_argument("--restart", action="store_true", help="discard the run in RUN_DIR and start over")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_training_options(tr)
    tr.set_defaults(func=cmd_train)

    ap = sub.add_parser("apply", help="apply a registration's displacement field to images, label maps and points",
                        description="Bring data of the moving image's space into the fixed image's space (or, "
                        "with --from fixed, the other way) through a displacement.nrrd written by "
                        "'samreg register', without registering again. Images and label maps are "
                        "resampled; point sets (CSV, elastix point files, Slicer .mrk.json) are mapped and "
                        "written in their own format. Each output keeps its input's name, in OUTDIR.")
    ap.add_argument("field", metavar="TRANSFORM", type=Path,
                    help="displacement.nrrd, or the output folder of 'samreg register'")
    ap.add_argument("inputs", metavar="INPUT", type=Path, nargs="+", help="images, label maps or point files")
    ap.add_argument("-o", "--output", dest="output_dir", required=True, type=Path, metavar="OUTDIR")
    ap.add_argument("--from", dest="space", choices=("moving", "fixed"), default="moving",
                    help="the space the inputs are in (default: moving, brought to the fixed image)")
    ap.add_argument("--labels", action="store_true", help="the images are label maps (nearest neighbour, "
                    "label values kept)")
    ap.add_argument("--interpolation", choices=("linear", "bspline", "nearest"), default="linear",
                    help="image interpolation (default: linear)")
    ap.add_argument("--reference", type=Path, metavar="IMAGE", help="with --from fixed: the grid of the output "
                    "images (the moving image; default: the field's grid); also the image of elastix 'index' points")
    ap.add_argument("--iterations", type=positive(int), default=60, metavar="N",
                    help="fixed-point iterations of the inverse, where it is needed (default: 60)")
    ap.set_defaults(func=cmd_apply)

    inv = sub.add_parser("invert", help="write the inverse of a displacement field",
                         description="Invert a displacement field by fixed-point iteration and write it "
                         "(the moving -> fixed mapping, on the same grid); prints its inverse-consistency "
                         "error |phi(phi^-1(y)) - y|: largest, mean and 99th percentile, in mm.")
    inv.add_argument("field", metavar="TRANSFORM", type=Path,
                     help="displacement.nrrd, or the output folder of 'samreg register'")
    inv.add_argument("-o", "--output", dest="output", required=True, type=Path, metavar="INVERSE.nrrd")
    inv.add_argument("--iterations", type=positive(int), default=60, metavar="N",
                     help="fixed-point iterations (default: 60)")
    inv.set_defaults(func=cmd_invert)

    add_batch_parser(sub)

    sub.add_parser("encoders", help="list the available encoders").set_defaults(func=cmd_encoders)
    sub.add_parser("methods", help="list the available registration methods").set_defaults(func=cmd_methods)
    return parser


# ----------------------------------------------------------------------------- commands
def _print_summary(output_dir: Path, seconds: float, report: dict) -> None:
    metrics = key_metrics(report if isinstance(report, dict) else {})
    print(f"Output folder: {Path(output_dir).absolute()}")
    print(f"Total time:    {seconds:.1f} s")
    labels = {"dice_mean": ("Mean Dice", "{:.3f}"), "tre_mean_mm": ("Mean TRE", "{:.2f} mm"),
              "fold_percent": ("Folding", "{:.3f} %")}
    for name, (label, fmt) in labels.items():
        if name in metrics:
            line = f"{label + ':':<15}{fmt.format(metrics[name])}"
            if f"{name}_initial" in metrics:
                line += f"  (initial {fmt.format(metrics[f'{name}_initial'])})"
            print(line)


def cmd_register(args: argparse.Namespace) -> int:
    """``samreg register``: validate cheaply, then run the pipeline with progress bars."""
    inputs, settings = prepare_register(args)
    from .pipeline import register

    return _run_guarded(not args.quiet,
                        lambda progress, cancel, ledger: register(inputs, settings, progress=progress,
                                                                  cancel=cancel, ledger=ledger),
                        summary=lambda report, seconds: _print_summary(args.output_dir, seconds, report))


def cmd_demo(args: argparse.Namespace) -> int:
    """``samreg demo``: the built-in brain example."""
    from .demo import print_results, run_demo
    settings = None
    if args.encoder is not None:
        validate_names(args.encoder, None)
        from .settings import Settings
        settings = Settings(encoder=args.encoder)
    return _run_guarded(not args.quiet,
                        lambda progress, cancel, ledger: run_demo(args.output_dir, progress=progress, cancel=cancel,
                                                                  settings=settings, verbose=False, ledger=ledger),
                        summary=lambda results, seconds: print_results(results))


def _run_guarded(show_progress: bool,
                 job: Callable[[Callable, threading.Event, OutputLedger], dict],
                 summary: Optional[Callable[[dict, float], None]]) -> int:
    """Run ``job(progress, cancel, ledger)``; on failure/cancel remove what the job recorded in the ledger."""
    ledger = OutputLedger()
    bars = StageBars(show_progress)
    cancel = threading.Event()
    start = time.perf_counter()
    ok = False
    try:
        with CancelOnSignal(cancel):
            result = job(bars, cancel, ledger)
        bars.close()
        if cancel.is_set():
            raise Cancelled("cancelled")
        ok = True
    finally:
        bars.close()
        if not ok:
            ledger.discard()
    if summary is not None:
        summary(result, time.perf_counter() - start)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_job
    return run_job(args.job)


def cmd_encoders(args: argparse.Namespace) -> int:
    from .plugins import encoders
    width = max(map(len, encoders()))
    print("\n".join(f"{name:<{width}}  {plugin.summary}" for name, plugin in sorted(encoders().items())))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``samreg bench``: the side-by-side benchmark (see SAMRegistrationLib/bench)."""
    import os
    import shlex

    from .bench.runner import BenchOptions, run_bench

    def names(text: Optional[str]) -> Optional[list[str]]:
        return [n.strip() for n in text.split(",") if n.strip()] if text else None

    options = BenchOptions(output_dir=args.output_dir, cases=names(args.cases), methods=names(args.methods),
                           data_dir=args.data, quick=args.quick, synthetic=args.synthetic,
                           robustness=args.robustness, threads=args.threads or os.cpu_count() or 1,
                           timeout_s=args.timeout, keep_fields=args.keep_fields,
                           command="samreg " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    results = run_bench(options, say=lambda line: print(line, flush=True))
    failed = [f"{r['case']}/{r['method']}" for r in results["runs"] if r["status"] == "failed"]
    if failed:
        print(f"samreg bench: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``samreg train``: check the method, dataset and settings, then train (see docs/training.md)."""
    import os

    from .plugins import method_plugin, trainable_method_names
    plugin = method_plugin(args.method)
    if plugin.train is None:
        names = trainable_method_names()
        raise InputError(f"method {args.method!r} cannot be trained (it has no train hook); trainable "
                         f"methods: {', '.join(names) if names else 'none yet'}")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise InputError(f"output path exists and is not a folder: {args.output_dir}")
    from .training.config import TrainConfig
    from .training.dataset import load_dataset
    values = parameter_values(args)
    config = TrainConfig.parse(values.get("train_config", {}), where="train")
    params = (plugin.TrainParams or plugin.Params).parse(values.get("method_params", {}), where=plugin.name)
    dataset = load_dataset(args.data)

    from .training.trainer import train
    start = time.perf_counter()
    result = train(plugin.train(params), dataset, args.output_dir, config, restart=args.restart,
                   show_progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(f"Run folder:    {Path(args.output_dir).absolute()}")
        print(f"Steps:         {result.step}" + (f" (resumed at {result.resumed_from})" if result.resumed_from else ""))
        if result.loss is not None:
            print(f"Last loss:     {result.loss:.5g}")
        if result.best:
            print(f"Best {result.best['name']}:{'':<{max(1, 9 - len(result.best['name']))}}"
                  f"{result.best['value']:.4g} (step {result.best['step']})")
        print(f"model.pt:      sha256 {result.model_sha256}")
        print(f"Time:          {time.perf_counter() - start:.1f} s")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """``samreg apply``: the field applied to each input, written under its name into OUTDIR."""
    from .apply import apply
    result = apply(args.field, args.inputs, args.output_dir, args.space, args.interpolation, args.labels,
                   args.reference, args.iterations)
    for path in result["written"]:
        print(path)
    if "inverse_max_error_mm" in result:
        print(f"inverse-consistency error: max {result['inverse_max_error_mm']} mm, "
              f"mean {result['inverse_mean_error_mm']} mm, 99th percentile {result['inverse_p99_error_mm']} mm")
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    """``samreg invert``: the inverse field, written atomically, and its inverse-consistency error."""
    from .apply import invert, read_field
    if args.output.suffix.lower() not in (".nrrd", ".nii", ".gz", ".mha", ".mhd"):
        raise InputError(f"the inverse must be an image file (.nrrd, .nii.gz, .mha): {args.output}")
    inverse = invert(read_field(args.field), args.iterations)
    inverse.field.write(args.output)
    print(f"{args.output}\ninverse-consistency error: max {inverse.max_error_mm:.4f} mm, "
          f"mean {inverse.mean_error_mm:.4f} mm, 99th percentile {inverse.p99_error_mm:.4f} mm")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .plugins import methods
    width = max(map(len, methods()))
    print("\n".join(f"{name:<{width}}  {plugin.summary}" for name, plugin in sorted(methods().items())))
    return 0


# ----------------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``samreg`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        stream=sys.stderr, format="samreg: %(message)s")
    try:
        return args.func(args)
    except Cancelled:
        print("samreg: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except ResourceError as exc:
        print(f"samreg: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_MEMORY
    except OutputError as exc:
        print(f"samreg: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_OUTPUT
    except SamregError as exc:
        print(f"samreg: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("\nsamreg: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        print(f"samreg: error: not enough memory: {one_line(exc)}", file=sys.stderr)
        return EXIT_MEMORY


if __name__ == "__main__":
    sys.exit(main())
