"""The pairs table of ``samreg batch``: a CSV file with one row per registration.

Columns (a header row is required; names are case-insensitive, ``-`` and ``_`` alike):

* ``fixed``, ``moving`` (required): image paths;
* ``id`` (optional): the pair's output folder name (default: the moving file's name, made unique);
* ``fixed_seg``, ``moving_seg``, ``labels``, ``fixed_landmarks``, ``moving_landmarks``,
  ``fixed_prompts``, ``moving_prompts``, ``fixed_negative_prompts``, ``moving_negative_prompts``,
  ``auto_prompts``: as the ``samreg register`` options of the same names;
* ``method``, ``encoder``, ``spacing``: per-row settings;
* ``options``: any further ``samreg register`` options for this row, e.g. ``--iterations 40 --no-affine``.

Relative paths are relative to the table's folder; an empty cell means "not given". The
batch's own command-line options apply to every row, and a row's cells override them. Each
row thus is exactly one ``samreg register`` command (:attr:`PairRow.argv`), parsed by the
same parser, so a pair in a batch and the same pair run alone give the same outputs.
"""
from __future__ import annotations

import argparse
import csv
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError, SamregError
from ..register_args import PAIR_FILE_OPTIONS, add_pair_options, add_setting_options, prepare_register
from ..worker import one_line

VALUE_COLUMNS = ("labels", "auto_prompts", "method", "encoder", "spacing")
COLUMNS = ("id", "fixed", "moving", *PAIR_FILE_OPTIONS, *VALUE_COLUMNS, "options")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class PairRow:
    """One row: its id, the ``samreg register`` arguments it stands for, and a problem if it has one."""
    row: int                          # 1-based data row (the header is row 0)
    pair_id: str
    argv: list[str]
    inputs: Any = None                # RegistrationInputs, when the row checked out
    settings: Any = None              # Settings, idem
    error: Optional[str] = None       # one line, when it did not
    files: list[Path] = field(default_factory=list)   # the input files, for the fingerprint


class _RowParser(argparse.ArgumentParser):
    """``samreg register``'s parser that raises instead of exiting."""

    def error(self, message: str):
        raise InputError(message)


def register_parser(defaults: dict[str, Any]) -> argparse.ArgumentParser:
    """A ``samreg register`` parser whose defaults are the batch's own options."""
    parser = _RowParser(prog="samreg register", add_help=False)
    add_pair_options(parser)
    add_setting_options(parser)
    parser.set_defaults(**{k: v for k, v in defaults.items() if v is not None})
    return parser


def _column(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _path(base: Path, text: str) -> str:
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path))


def _unique_id(wanted: str, taken: set[str]) -> str:
    stem = _SAFE_ID.sub("_", wanted).strip("._") or "pair"
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def _default_id(moving: str) -> str:
    name = Path(moving).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_table(path: Path) -> list[dict[str, str]]:
    """The table's rows as {column: text}; a missing file, a bad header or no rows is one line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs table not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} cannot be read as a CSV table ({one_line(exc)})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise InputError(f"{path} is empty: expected a header row with at least 'fixed' and 'moving'")
    header = [_column(name) for name in rows[0]]
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise InputError(f"{path}: unknown column {unknown[0]!r}; known columns: {', '.join(COLUMNS)}")
    missing = [name for name in ("fixed", "moving") if name not in header]
    if missing:
        raise InputError(f"{path}: the header has no {missing[0]!r} column")
    if len(set(header)) != len(header):
        raise InputError(f"{path}: a column appears twice in the header")
    if len(rows) == 1:
        raise InputError(f"{path} has a header but no pairs")
    table = []
    for number, cells in enumerate(rows[1:], start=1):
        if len(cells) > len(header):
            raise InputError(f"{path} row {number}: {len(cells)} cells for {len(header)} columns")
        table.append({name: cells[i].strip() if i < len(cells) else "" for i, name in enumerate(header)})
    return table


def row_argv(cells: dict[str, str], base: Path, output_dir: Path) -> list[str]:
    """The ``samreg register`` arguments of one row (paths resolved against ``base``)."""
    argv = [_path(base, cells["fixed"]), _path(base, cells["moving"]), "-o", str(output_dir)]
    for name in PAIR_FILE_OPTIONS:
        if cells.get(name):
            argv += [f"--{name.replace('_', '-')}", _path(base, cells[name])]
    for name in VALUE_COLUMNS:
        if cells.get(name):
            argv += [f"--{name.replace('_', '-')}", cells[name]]
    if cells.get("options"):
        argv += shlex.split(cells["options"])
    return argv


def load_pairs(table_path: Path, output_dir: Path, defaults: dict[str, Any]) -> list[PairRow]:
    """Every row of the table, parsed and checked; a bad row carries its one-line error instead."""
    table_path = Path(table_path)
    rows = read_table(table_path)
    base = table_path.absolute().parent
    taken: set[str] = set()
    pairs = []
    for number, cells in enumerate(rows, start=1):
        if not cells["fixed"] or not cells["moving"]:
            pair_id = _unique_id(cells.get("id") or f"row{number}", taken)
            taken.add(pair_id)
            pairs.append(PairRow(number, pair_id, [], error=f"row {number}: 'fixed' and 'moving' are required"))
            continue
        wanted = cells.get("id") or _default_id(cells["moving"])
        if cells.get("id") and wanted in taken:
            raise InputError(f"{table_path} row {number}: id {wanted!r} is used twice")
        pair_id = _unique_id(wanted, taken)
        taken.add(pair_id)
        pair = PairRow(number, pair_id, [])
        try:
            pair.argv = row_argv(cells, base, Path(output_dir) / pair_id)
            args = register_parser(defaults).parse_args(pair.argv)
            pair.inputs, pair.settings = prepare_register(args)
            pair.files = [Path(p) for p in (args.fixed, args.moving, *(getattr(args, n) for n in PAIR_FILE_OPTIONS))
                          if p is not None]
        except (SamregError, ValueError) as exc:
            pair.error = f"row {number}: {one_line(exc)}"
        pairs.append(pair)
    return pairs
