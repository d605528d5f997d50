"""Run a pairs table on Dask: check every row, skip the pairs already done, submit the rest,
follow them with a progress bar, and write the summary.

Resuming is re-running the same command: a pair whose record says ``ok`` for the same row
and inputs and whose outputs are all in place is skipped; failed, cancelled, missing and
changed pairs run (again). The batch's folder is locked while it runs, so two batches never
write into one folder, and the leftovers of a killed run in a pair's folder are its own.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Cancelled, InputError
from ..io_atomic import file_lock, write_json_atomic
from ..worker import one_line
from .cluster import ClusterOptions, connect
from .summary import write_batch_json, write_plots, write_summary_csv
from .table import PairRow, load_pairs
from .task import STATE_DIR, base_record, fingerprint, is_complete, read_record, record_path, run_pair

#: seconds between two looks at the futures and the cancel flag
POLL_S = 0.5


@dataclass
class BatchOptions:
    table: Path
    output_dir: Path
    register_defaults: dict[str, Any] = field(default_factory=dict)   # the batch's register options
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    show_progress: bool = True
    command: str = ""


@dataclass
class BatchResult:
    records: list[dict]                 # every pair, in table order
    ran: list[str]                      # ids run in this invocation
    skipped: list[str]                  # ids done earlier
    info: dict


def _worker_died(exc: BaseException) -> str:
    name = exc.__class__.__name__
    if name == "KilledWorker":
        return ("the worker running this pair died every time it was tried (killed, or out of memory: "
                "try a coarser --spacing or fewer --workers)")
    return f"internal error ({name}: {one_line(exc)})"


class _Bar:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled and total:
            import sys

            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="pairs", unit="pair", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc} {n}/{total} |{bar}| {elapsed}<{remaining}{postfix}")

    def advance(self, ok: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"ok {ok}, failed {failed}", refresh=False)
            self.bar.update(1)

    def write(self, line: str, say: Callable[[str], None]) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _encode_counts(records: list[dict], ran: set[str]) -> dict[str, dict[str, int]]:
    """For each image used by more than one pair run now: how many of them encoded it."""
    uses: dict[str, dict[str, int]] = {}
    for record in records:
        if record["id"] not in ran or record.get("status") != "ok":
            continue
        for side in ("fixed", "moving"):
            entry = uses.setdefault(record[side], {"pairs": 0, "encoded": 0})
            entry["pairs"] += 1
            entry["encoded"] += 1 if record.get(f"{side}_encoded") else 0
    return {path: entry for path, entry in uses.items() if entry["pairs"] > 1}


def _schedule(pairs: list[PairRow], output_dir: Path) -> tuple[list[tuple[PairRow, str]], list[str]]:
    """(pairs to run with their fingerprints, ids done earlier); bad rows get their record now."""
    to_run, skipped = [], []
    for pair in pairs:
        if pair.error:
            record = base_record(pair.pair_id, pair.row, "", pair.inputs, pair.settings)
            record.update(status="failed", error=pair.error)
            write_json_atomic(record, record_path(output_dir, pair.pair_id))
            continue
        print_ = fingerprint(pair.argv, pair.files)
        if is_complete(output_dir, pair.pair_id, print_):
            skipped.append(pair.pair_id)
        else:
            to_run.append((pair, print_))
    return to_run, skipped


def run_batch(options: BatchOptions, cancel: Optional[threading.Event] = None,
              say: Callable[[str], None] = print) -> BatchResult:
    """Run the table of ``options``; raises :class:`Cancelled` after a cancel (done pairs are kept)."""
    output_dir = Path(options.output_dir).absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"output path exists and is not a folder: {output_dir}")
    options.cluster.check()
    pairs = load_pairs(options.table, output_dir, options.register_defaults)
    (output_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(output_dir / STATE_DIR / "lock", wait=False):
            return _run_locked(options, output_dir, pairs, cancel or threading.Event(), say)
    except BlockingIOError:
        raise InputError(f"another samreg batch is running in {output_dir}; wait for it or choose "
                         "another output folder") from None


def _run_locked(options: BatchOptions, output_dir: Path, pairs: list[PairRow], cancel: threading.Event,
                say: Callable[[str], None]) -> BatchResult:
    start = time.perf_counter()
    to_run, skipped = _schedule(pairs, output_dir)
    bad = sum(1 for p in pairs if p.error)
    say(f"{len(pairs)} pair(s): {len(to_run)} to run, {len(skipped)} done earlier"
        + (f", {bad} with a bad row" if bad else ""))
    ran: list[str] = []
    description, cancelled = "nothing to run", False
    if to_run:
        description, cancelled = _run_on_cluster(options, output_dir, to_run, cancel, say, ran)
    records = [read_record(output_dir, p.pair_id) or {**base_record(p.pair_id, p.row, "", p.inputs, p.settings),
                                                      "status": "not run", "error": ""}
               for p in pairs]
    for record in records:
        record["this_run"] = "yes" if record["id"] in ran else "no"
    write_summary_csv(records, output_dir / "summary.csv")
    plotted = write_plots(records, output_dir / "summary.png")
    counts = {status: sum(1 for r in records if r.get("status") == status)
              for status in ("ok", "failed", "cancelled", "not run")}
    info = {"command": options.command, "table": str(Path(options.table).absolute()), "cluster": description,
            "wall_s": round(time.perf_counter() - start, 3), "pairs": len(pairs), "ran": ran, "skipped": skipped,
            "status": counts, "shared_images": _encode_counts(records, set(ran)),
            "summary": "summary.csv", "plots": "summary.png" if plotted else None}
    write_batch_json(info, output_dir / "batch.json")
    if cancelled:
        raise Cancelled(f"batch cancelled; {counts['ok']} pair(s) done are kept, re-run to finish")
    return BatchResult(records, ran, skipped, info)


def _run_on_cluster(options: BatchOptions, output_dir: Path, to_run: list[tuple[PairRow, str]],
                    cancel: threading.Event, say: Callable[[str], None], ran: list[str]) -> tuple[str, bool]:
    """Submit every pair, wait for them all; returns (cluster description, cancelled)."""
    from distributed import Event, wait

    # Dask's own scheduler chatter would bury the progress bar; its errors still show
    logging.getLogger("distributed").setLevel(logging.ERROR)
    connection = connect(options.cluster, len(to_run))
    say(f"running on {connection.description}")
    token = secrets.token_hex(4)
    event_name = f"samreg-batch-cancel-{token}"
    stop = Event(event_name, client=connection.client)
    bar = _Bar(len(to_run), options.show_progress)
    ok = failed = 0
    try:
        futures = {}
        for pair, print_ in to_run:
            future = connection.client.submit(
                run_pair, pair.pair_id, pair.row, print_, pair.inputs, pair.settings,
                connection.threads_per_pair, str(output_dir), event_name,
                key=f"samreg-pair-{pair.pair_id}-{token}", pure=False, resources=connection.resources)
            futures[future] = pair
        pending = set(futures)
        while pending:
            if cancel.is_set() and not stop.is_set():
                stop.set()
                bar.write("samreg: cancelling: running pairs stop at their next step", say)
            try:
                done, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in done:
                pair = futures[future]
                try:
                    record = future.result()
                except Exception as exc:     # the task itself failed: a dead worker or a bug
                    record = base_record(pair.pair_id, pair.row, "", pair.inputs, pair.settings)
                    record.update(status="failed", error=_worker_died(exc))
                    write_json_atomic(record, record_path(output_dir, pair.pair_id))
                if record["status"] == "cancelled":
                    continue
                ran.append(pair.pair_id)
                if record["status"] == "ok":
                    ok += 1
                else:
                    failed += 1
                    bar.write(f"samreg: {pair.pair_id} failed: {record['error']}", say)
                bar.advance(ok, failed)
    finally:
        bar.close()
        connection.close()
    return connection.description, cancel.is_set()
