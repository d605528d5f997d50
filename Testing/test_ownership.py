"""OutputLedger: a failed run removes exactly the folders, staging trees and files it recorded."""
from __future__ import annotations

import os
import threading

import pytest

from SAMRegistrationLib.errors import Cancelled
from SAMRegistrationLib.ownership import STAGING_PREFIX, OutputLedger


def test_make_dirs_records_only_the_levels_it_created(tmp_path):
    (tmp_path / "a").mkdir()
    ledger = OutputLedger()
    target = ledger.make_dirs(tmp_path / "a" / "b" / "c")
    assert target.is_dir()
    assert ledger.paths == [tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert ledger.make_dirs(tmp_path / "a" / "b" / "c") == target     # exists: nothing more recorded
    assert len(ledger.paths) == 2
    ledger.discard()
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "b").exists()


def test_discard_removes_files_and_staging_but_keeps_other_files(tmp_path):
    ledger = OutputLedger()
    out = ledger.make_dirs(tmp_path / "out")
    staging = ledger.make_staging(out)
    assert staging.parent == out and staging.name.startswith(STAGING_PREFIX)
    (staging / "sub").mkdir()
    (staging / "sub" / "half.nii.gz").write_bytes(b"x")
    (staging / "warped.nii.gz").write_bytes(b"w")
    ledger.replace(staging / "warped.nii.gz", out / "warped.nii.gz")
    (out / "mine.txt").write_text("ours")
    ledger.record_file(out / "mine.txt")
    (out / "notes.txt").write_text("someone else's")           # not recorded
    (tmp_path / "layout_notes.txt").write_text("beside it")    # not recorded, name contains 'out'
    ledger.discard()
    assert sorted(os.listdir(out)) == ["notes.txt"]            # created by us, but not empty: kept
    assert (out / "notes.txt").read_text() == "someone else's"
    assert (tmp_path / "layout_notes.txt").read_text() == "beside it"


def test_discard_removes_an_emptied_created_folder(tmp_path):
    ledger = OutputLedger()
    out = ledger.make_dirs(tmp_path / "new" / "out")
    ledger.make_staging(out)
    (out / "report.json").write_text("{}")
    ledger.record_file(out / "report.json")
    ledger.discard()
    assert os.listdir(tmp_path) == []


def test_discard_is_idempotent_and_closes_the_ledger(tmp_path):
    ledger = OutputLedger()
    out = ledger.make_dirs(tmp_path / "out")
    (out / "a.txt").write_text("a")
    ledger.record_file(out / "a.txt")
    ledger.discard()
    ledger.discard()
    assert os.listdir(tmp_path) == []
    # a writer that carries on after the discard puts nothing (more) in place
    (tmp_path / "late.txt").write_text("placed after the discard")
    with pytest.raises(Cancelled):
        ledger.record_file(tmp_path / "late.txt")
    assert not (tmp_path / "late.txt").exists()
    (tmp_path / "src.txt").write_text("s")
    with pytest.raises(Cancelled):
        ledger.replace(tmp_path / "src.txt", tmp_path / "dst.txt")
    assert (tmp_path / "src.txt").exists() and not (tmp_path / "dst.txt").exists()
    with pytest.raises(Cancelled):
        ledger.make_dirs(tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_failed_replace_keeps_the_pre_existing_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("the user's report")
    ledger = OutputLedger()
    ledger.make_dirs(out)
    staging = ledger.make_staging(out)
    with pytest.raises(FileNotFoundError):       # the failure comes before the replace succeeds
        ledger.replace(staging / "report.json", out / "report.json")
    ledger.discard()
    assert sorted(os.listdir(out)) == ["report.json"]
    assert (out / "report.json").read_text() == "the user's report"


def test_concurrent_discards_with_a_writer(tmp_path):
    """Two discards racing a writer thread: afterwards only the others' file is left."""
    ledger = OutputLedger()
    out = ledger.make_dirs(tmp_path / "out")
    (out / "theirs.txt").write_text("keep")
    stop = threading.Event()

    def writer() -> None:
        try:
            staging = ledger.make_staging(out)
            for i in range(10000):
                if stop.is_set():
                    return
                (staging / f"{i}.bin").write_bytes(b"x")
                ledger.replace(staging / f"{i}.bin", out / f"{i}.bin")
        except (Cancelled, OSError):
            pass                  # the discard closed the ledger / removed the staging tree

    thread = threading.Thread(target=writer)
    thread.start()
    while len(ledger.paths) < 20 and thread.is_alive():
        pass
    cleaners = [threading.Thread(target=ledger.discard) for _ in range(2)]
    for c in cleaners:
        c.start()
    for c in cleaners:
        c.join()
    stop.set()
    thread.join()
    ledger.discard()
    assert sorted(os.listdir(out)) == ["theirs.txt"]
