"""The hostile-input corpus (``hostile_corpus.py``) through the command line, the worker and
the Slicer scene logic: each case must end with its documented exit status and one
``samreg: error:`` line naming the problem, no traceback, inputs byte-identical, and nothing
half-written in the output folder. Awkward but valid inputs (``code`` 0) must register.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from helpers import OUTPUT_FILES, digest, run_worker, write_pair
from hostile_corpus import CASES, OUTPUT_CASES, Case

from SAMRegistrationLib.cli import main

FAST = ("--encoder", "mind", "--quiet")
#: outcomes of the cases run so far, by category (printed at the end of the module)
TALLY: dict = collections.defaultdict(collections.Counter)
TALLY_WORKER: dict = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    return write_pair(tmp_path_factory.mktemp("good") / "in")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def run_cli(argv: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def check_error(code: int, stderr: str, case: Case) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("samreg: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    message = errors[0].lower()
    for word in case.words:
        assert word.lower() in message, (word, message)
    assert code == case.code, (code, message)
    return message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_command_line(case: Case, good, tmp_path, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case.build(folder, good)
    before = {**digest(folder), **{f"good/{k}": v for k, v in digest(good["fixed"].parent).items()}}
    out = tmp_path / "out"
    try:
        code, stderr = run_cli(["register", *FAST, *argv, "-o", out], capsys)   # the case's options win
    except SystemExit as exc:       # argparse: must still be one line, code 2
        code, stderr = int(exc.code or 0), capsys.readouterr().err
    after = {**digest(folder), **{f"good/{k}": v for k, v in digest(good["fixed"].parent).items()}}
    assert after == before, "an input was modified"
    if case.code == 0:
        assert code == 0, stderr[-3000:]
        assert set(OUTPUT_FILES) <= set(_files(out))
        TALLY[case.category]["registered"] += 1
        return
    check_error(code, stderr, case)
    assert _files(out) == [], f"left behind: {_files(out)}"
    TALLY[case.category]["clear error"] += 1


def test_gzip_length_from_the_trailer_or_by_counting(good, tmp_path):
    """A whole file passes on its trailer; several gzip members (valid) are counted; a file cut
    inside its data is refused."""
    import gzip

    from SAMRegistrationLib.errors import InputError
    from SAMRegistrationLib.input_checks import check_nifti
    raw = gzip.decompress(good["fixed"].read_bytes())
    check_nifti(good["fixed"], "fixed image")
    members = tmp_path / "members.nii.gz"
    members.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    check_nifti(members, "fixed image")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw[:-5000]))
    with pytest.raises(InputError, match="truncated"):
        check_nifti(cut, "fixed image")


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_output_location(name, good, tmp_path, capsys):
    target = OUTPUT_CASES[name](tmp_path)
    before = digest(tmp_path)
    code, stderr = run_cli(["register", *FAST, good["fixed"], good["moving"], "-o", target], capsys)
    check_error(code, stderr, Case("output", name, None, ("output",)))
    assert digest(tmp_path) == before


#: how the command line's options of the corpus are said in a job file (the worker's input)
JOB_FILES = {"--fixed-seg": "fixed_seg", "--moving-seg": "moving_seg", "--fixed-landmarks": "fixed_landmarks",
             "--moving-landmarks": "moving_landmarks", "--labels": "labels", "--auto-prompts": "auto_prompts"}
JOB_SETTINGS = {"--encoder": ("encoder",), "--method": ("method",), "--checkpoint": ("checkpoint",),
                "--spacing": ("spacing",), "--threads": ("threads",), "--iterations": ("method_params", "iterations"),
                "--pca-dims": ("encoder_params", "pca_dims"), "--model": ("method_params", "model")}


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def job_from(argv: list, out: Path):
    """The job file's fields of a corpus case, or None when a job cannot say it (a broken prompt
    file: a job holds the points themselves, which the Slicer logic makes from markups nodes)."""
    job = {"fixed": str(argv[0]), "moving": str(argv[1]), "output_dir": str(out), "settings": {"encoder": "mind"}}
    rest = [str(a) for a in argv[2:]]
    while rest:
        flag = rest.pop(0)
        if flag == "--no-affine":
            job["settings"]["affine"] = False
            continue
        value = rest.pop(0)
        if flag in JOB_FILES:
            job[JOB_FILES[flag]] = _value(value) if flag == "--auto-prompts" else value
        elif flag in JOB_SETTINGS:
            *section, key = JOB_SETTINGS[flag]
            target = job["settings"].setdefault(section[0], {}) if section else job["settings"]
            target[key] = _value(value) if flag not in ("--encoder", "--method", "--checkpoint", "--model") else value
        elif flag == "--moving-prompts":
            from SAMRegistrationLib.errors import InputError
            from SAMRegistrationLib.prompt_files import load_prompt_files
            try:
                job["prompts"] = load_prompt_files(moving=Path(value))
            except InputError:
                return None
        else:
            job["settings"][flag.lstrip("-").replace("-", "_")] = _value(value)     # an unknown option
    return job


def _normalised(text: str) -> str:
    return text.lower().lstrip("-").replace("-", "_")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_worker(case: Case, good, tmp_path):
    """Every case a job file can express, through the worker process (what Slicer and batch runs use)."""
    folder = tmp_path / "case"
    folder.mkdir()
    out = tmp_path / "out"
    job = job_from(case.build(folder, good), out)
    if job is None:
        pytest.skip("a job file holds prompt points, not a prompt file")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    before = digest(folder)
    code, events, stderr = run_worker(path, timeout=300)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == case.code, (code, events[-1:], stderr[-2000:])
    assert digest(folder) == before
    last = events[-1]
    if case.code == 0:
        assert last["event"] == "done" and set(OUTPUT_FILES) <= set(_files(out))
        TALLY_WORKER[case.category]["registered"] += 1
        return
    assert last["event"] == "error" and "\n" not in last["message"]
    for word in case.words:
        assert _normalised(word) in _normalised(last["message"]), (word, last["message"])
    assert _files(out) == []
    TALLY_WORKER[case.category]["clear error"] += 1


def test_corpus_size_and_tally():
    """At least 60 hostile inputs; prints the per-category table of the closing note."""
    assert len(CASES) + len(OUTPUT_CASES) >= 60
    categories = collections.Counter(c.category for c in CASES)
    assert len(categories) >= 8
    if TALLY:
        width = max(map(len, categories))
        print("\n" + "\n".join(f"{cat:<{width}}  tried {categories[cat]:>3}  command line: " +
                                ", ".join(f"{k} {v}" for k, v in TALLY[cat].items()) + "; worker: " +
                                ", ".join(f"{k} {v}" for k, v in TALLY_WORKER[cat].items()) for cat in categories))
