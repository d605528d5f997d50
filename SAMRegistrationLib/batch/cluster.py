"""Where the pairs run: a Dask ``LocalCluster`` on this machine (default), an existing
scheduler (``--scheduler ADDRESS``), or worker jobs on an HPC queue through dask-jobqueue
(``--cluster slurm|pbs|sge|lsf``). Nothing here schedules by itself; Dask does.

Every worker runs one pair at a time and gives it all of its cores (torch threads): a
LocalCluster splits this machine's cores between its workers; a queue job asks for
``--cores`` and runs one pair at a time on them (a Dask resource ``pair=1``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..errors import InputError

QUEUES = ("slurm", "pbs", "sge", "lsf")
#: the Dask resource a queue worker offers once, so it runs one pair at a time
PAIR_RESOURCE = "pair"
#: module every worker imports first (it ignores SIGINT: cancelling is the driver's job)
WORKER_PRELOAD = "SAMRegistrationLib.batch.worker_setup"
#: memory a worker may need for a typical pair (the default working grid, LiteMedSAM features)
WORKER_MEMORY_GB = 4.0


def worker_environment(threads: int) -> dict[str, Optional[str]]:
    """What the Dask nanny puts in a worker's environment (``None``: left unset).

    Dask's defaults pin OpenMP/MKL/OpenBLAS to one thread and set ``MALLOC_TRIM_THRESHOLD_``;
    the latter turns off glibc's adaptive mmap threshold, so every large tensor is mmap'ed and
    page-faulted afresh: torch's element-wise work ran 4-5x slower and a pair 2x slower.
    """
    return {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads)}


@contextmanager
def _worker_environment_set(threads: int) -> Iterator[None]:
    """:func:`worker_environment` for the nannies started inside (which prefer this process's
    variables to their config), and this process's environment as it was afterwards."""
    import dask

    saved = dict(os.environ)
    wanted = worker_environment(threads)
    for key, value in wanted.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": wanted}):
            yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def available_cores() -> int:
    """Cores this process may use (CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def default_workers(cores: int, memory_gb: float, pairs: int) -> int:
    """Local workers: one per core (each pair then runs on one thread: pairs side by side use
    the cores better than one pair on all of them, measured in docs/batch.md), no more than
    memory allows at :data:`WORKER_MEMORY_GB` each, nor than there are pairs."""
    return max(1, min(cores, int(memory_gb // WORKER_MEMORY_GB), pairs))


@dataclass
class ClusterOptions:
    workers: Optional[int] = None         # local workers, or queue jobs (default: 1 job)
    scheduler: Optional[str] = None       # address of a running scheduler
    queue_system: Optional[str] = None    # slurm | pbs | sge | lsf
    cores: int = 4                        # per queue job
    memory: str = "16GB"                  # per queue job
    walltime: str = "02:00:00"            # per queue job
    gpus: int = 0                         # per queue job
    queue: Optional[str] = None
    account: Optional[str] = None
    prologue: list[str] = field(default_factory=list)     # shell lines before the worker starts
    job_directives: list[str] = field(default_factory=list)   # extra scheduler directives

    def check(self) -> None:
        if self.scheduler and self.queue_system:
            raise InputError("--scheduler and --cluster exclude each other: give one")
        if self.queue_system and self.queue_system not in QUEUES:
            raise InputError(f"--cluster must be one of {', '.join(QUEUES)}, got {self.queue_system!r}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")

    def describe(self, local_workers: int = 0, threads: int = 0) -> str:
        if self.scheduler:
            return f"scheduler {self.scheduler}"
        if self.queue_system:
            gpu = f", {self.gpus} GPU" if self.gpus else ""
            return (f"{self.queue_system} queue: {self.workers or 1} job(s) of {self.cores} cores, "
                    f"{self.memory}{gpu}, walltime {self.walltime}")
        return f"local: {local_workers} worker(s) x {threads} thread(s)"


def _gpu_arguments(options: ClusterOptions) -> dict[str, Any]:
    """The directives that ask each queue for GPUs (site policies vary: see docs/batch.md)."""
    n = options.gpus
    if not n:
        return {}
    if options.queue_system == "slurm":
        return {"job_extra_directives": [f"--gres=gpu:{n}"]}
    if options.queue_system == "pbs":
        return {"resource_spec": f"select=1:ncpus={options.cores}:ngpus={n}:mem={options.memory}"}
    if options.queue_system == "sge":
        return {"job_extra_directives": [f"-l gpu={n}"]}
    return {"job_extra_directives": [f'-gpu "num={n}"']}


def _environment_export(threads: int) -> str:
    """The job-script line giving the remote nanny :func:`worker_environment` (Dask config by env)."""
    return f'export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{worker_environment(threads)!r}"'


def queue_cluster(options: ClusterOptions):
    """The dask-jobqueue cluster of ``options`` (no job is submitted until it is scaled)."""
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError("--cluster needs dask-jobqueue: pip install 'samregistration[batch]'") from None
    kind = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
            "sge": dask_jobqueue.SGECluster, "lsf": dask_jobqueue.LSFCluster}[options.queue_system]
    kwargs: dict[str, Any] = dict(
        cores=options.cores, memory=options.memory, processes=1, walltime=options.walltime,
        job_name="samreg-batch",
        worker_extra_args=["--resources", f"{PAIR_RESOURCE}=1", "--preload", WORKER_PRELOAD],
        job_script_prologue=[*options.prologue, _environment_export(options.cores)],
        scheduler_options={"dashboard_address": ":0"})
    if options.queue:
        kwargs["queue"] = options.queue
    if options.account:
        kwargs["account" if options.queue_system in ("slurm", "pbs") else "project"] = options.account
    gpu = _gpu_arguments(options)
    directives = gpu.pop("job_extra_directives", []) + list(options.job_directives)
    if directives:
        kwargs["job_extra_directives"] = directives
    kwargs.update(gpu)
    if options.queue_system == "sge" and "resource_spec" not in kwargs:
        kwargs["job_extra_directives"] = kwargs.get("job_extra_directives", []) + [f"-pe smp {options.cores}"]
    try:
        return kind(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--cluster {options.queue_system}: {exc}") from None


def job_script(options: ClusterOptions) -> str:
    """The script each queue job would run (``--print-job-script``), without submitting anything."""
    cluster = queue_cluster(options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@dataclass
class Connection:
    client: Any
    cluster: Any                  # None for an existing scheduler
    threads_per_pair: Optional[int]   # torch threads for each pair (None: the pair's own setting)
    resources: Optional[dict]     # Dask resources each pair needs
    description: str

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def connect(options: ClusterOptions, pairs: int) -> Connection:
    """Start (or reach) the cluster of ``options`` and a client on it."""
    import psutil
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("samreg batch needs Dask: pip install 'samregistration[batch]' "
                         "(dask, distributed, dask-jobqueue)") from None

    options.check()
    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {options.scheduler} ({exc})") from None
        return Connection(client, None, None, None, options.describe())
    if options.queue_system:
        cluster = queue_cluster(options)
        cluster.scale(jobs=options.workers or 1)
        return Connection(Client(cluster), cluster, options.cores, {PAIR_RESOURCE: 1}, options.describe())
    cores = available_cores()
    memory_gb = psutil.virtual_memory().total / 2**30
    workers = options.workers or default_workers(cores, memory_gb, pairs)
    threads = max(1, cores // workers)
    # processes, not threads: a pair holds the GIL in places and torch's thread pool is per process
    with _worker_environment_set(threads):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", memory_limit="auto", preload=[WORKER_PRELOAD])
    return Connection(Client(cluster), cluster, threads, None, options.describe(workers, threads))
