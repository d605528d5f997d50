"""``samreg batch``: its options and the command (see docs/batch.md)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..register_args import add_setting_options, positive
from .cluster import QUEUES, ClusterOptions

#: exit status when the batch ran but some pairs failed (each one's error is in summary.csv)
EXIT_PAIRS_FAILED = 4


def add_batch_parser(sub) -> None:
    parser = sub.add_parser(
        "batch", help="register many pairs from a CSV table, on this machine or a Dask cluster",
        description="Register every pair of PAIRS.csv (columns fixed, moving and optionally id, "
        "fixed_seg, moving_seg, labels, fixed_landmarks, moving_landmarks, prompt files, auto_prompts, "
        "method, encoder, spacing, options) into OUTDIR/<id>/, exactly as 'samreg register' would, "
        "and write OUTDIR/summary.csv, summary.png and batch.json. The options below apply to every "
        "pair; a row's cells override them. Runs on a Dask LocalCluster by default. Re-running the "
        "same command resumes: pairs already done are skipped, failed or missing ones run again. "
        "See docs/batch.md.")
    parser.add_argument("table", metavar="PAIRS.csv", type=Path, help="the pairs table")
    parser.add_argument("-o", "--output", dest="output_dir", required=True, type=Path, metavar="OUTDIR",
                        help="batch folder (created if missing; resumed if it holds a batch)")
    g = parser.add_argument_group("where to run (default: a Dask LocalCluster on this machine)")
    g.add_argument("--workers", type=positive(int), metavar="N",
                   help="local worker processes, each running one pair on cores/N threads (default: one per core, "
                   "4 GB of memory each); "
                   "with --cluster: queue jobs to start (default 1)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://host:8786)")
    g.add_argument("--cluster", dest="queue_system", choices=QUEUES,
                   help="start workers as jobs of this HPC queue (dask-jobqueue)")
    g.add_argument("--cores", type=positive(int), default=4, metavar="N", help="cores per queue job (default 4)")
    g.add_argument("--memory", default="16GB", metavar="SIZE", help="memory per queue job (default 16GB)")
    g.add_argument("--walltime", default="02:00:00", metavar="HH:MM:SS", help="walltime per queue job")
    g.add_argument("--gpus", type=positive(int, allow_zero=True), default=0, metavar="N",
                   help="GPUs per queue job (default 0)")
    g.add_argument("--queue", metavar="NAME", help="queue or partition")
    g.add_argument("--account", metavar="NAME", help="account or project to charge")
    g.add_argument("--prologue", action="append", default=[], metavar="LINE",
                   help="shell line run in each job before the worker starts (repeatable), "
                   "e.g. 'source ~/venvs/samreg/bin/activate'")
    g.add_argument("--job-directive", dest="job_directives", action="append", default=[], metavar="TEXT",
                   help="extra scheduler directive for each job (repeatable), e.g. '--constraint=a100'")
    g.add_argument("--print-job-script", action="store_true",
                   help="with --cluster: print the job script and exit without submitting")
    add_setting_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_batch)


def _setting_dests() -> set[str]:
    scratch = argparse.ArgumentParser(add_help=False)
    add_setting_options(scratch)
    return {action.dest for action in scratch._actions}


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    return ClusterOptions(workers=args.workers, scheduler=args.scheduler, queue_system=args.queue_system,
                          cores=args.cores, memory=args.memory, walltime=args.walltime, gpus=args.gpus,
                          queue=args.queue, account=args.account, prologue=list(args.prologue),
                          job_directives=list(args.job_directives))


def cmd_batch(args: argparse.Namespace) -> int:
    """``samreg batch``: run the table, print where the results are; exit 4 if some pairs failed.
    Ctrl-C (or SIGTERM) cancels: running pairs stop cleanly, done pairs are kept."""
    import threading

    from ..errors import InputError
    from ..signals import CancelOnSignal
    options = cluster_options(args)
    options.check()
    if args.print_job_script:
        if not options.queue_system:
            raise InputError("--print-job-script needs --cluster slurm|pbs|sge|lsf")
        from .cluster import job_script
        print(job_script(options))
        return 0
    from .runner import BatchOptions, run_batch
    defaults = {dest: getattr(args, dest) for dest in _setting_dests() if getattr(args, dest, None) is not None}
    batch = BatchOptions(table=args.table, output_dir=args.output_dir, register_defaults=defaults,
                         cluster=options, show_progress=not args.quiet,
                         command="samreg " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    cancel = threading.Event()
    with CancelOnSignal(cancel):
        result = run_batch(batch, cancel=cancel, say=lambda line: print(line, flush=True))
    info = result.info
    status = info["status"]
    print(f"Batch folder:  {Path(args.output_dir).absolute()}")
    print(f"Pairs:         {status['ok']} ok ({len(result.skipped)} done earlier), {status['failed']} failed")
    print(f"Wall time:     {info['wall_s']:.1f} s on {info['cluster']}")
    for path, entry in info["shared_images"].items():
        print(f"Shared image:  {Path(path).name} used by {entry['pairs']} pairs, encoded {entry['encoded']} time(s)")
    print("Summary:       summary.csv" + (", summary.png" if info["plots"] else ""))
    return EXIT_PAIRS_FAILED if status["failed"] else 0
