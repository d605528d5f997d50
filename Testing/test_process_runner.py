"""The Slicer module's process runner: streamed lines, exit status and cancel of a process tree."""
from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMRegistration"))
from SlicerSAMRegistrationLib.process import SubprocessRunner, makeRunner  # noqa: E402


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def collect(runner: SubprocessRunner, command: list[str]) -> tuple[list[tuple[str, str]], list[int]]:
    lines: list[tuple[str, str]] = []
    exits: list[int] = []
    runner.start(command, lambda stream, line: lines.append((stream, line)), exits.append)
    return lines, exits


def test_outside_slicer_the_plain_runner_is_chosen():
    assert type(makeRunner()) is SubprocessRunner


def test_lines_arrive_in_order_then_the_exit_status_once():
    runner = SubprocessRunner()
    lines, exits = collect(runner, python("""
        import sys
        for i in range(200):
            print(f"out {i}", flush=True)
        print("problem", file=sys.stderr, flush=True)
        sys.exit(3)
    """))
    assert runner.running
    assert runner.wait(timeout=60) == 3
    assert exits == [3]
    assert [line for stream, line in lines if stream == "stdout"] == [f"out {i}" for i in range(200)]
    assert ("stderr", "problem") in lines
    assert not runner.running
    assert runner.poll() is False and exits == [3]          # the exit is reported once


def test_wait_times_out_while_the_process_runs():
    runner = SubprocessRunner()
    collect(runner, python("import time; time.sleep(30)"))
    started = time.monotonic()
    assert runner.wait(timeout=0.3) is None
    assert time.monotonic() - started < 5
    runner.cancel()
    runner.wait(timeout=30)
    assert not runner.running


def test_cancel_terminates_the_whole_tree(tmp_path):
    """The worker may start children (BLAS pools, helpers): none may outlive a cancel."""
    pid_file = tmp_path / "child.pid"
    runner = SubprocessRunner()
    lines, exits = collect(runner, python(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("ready", flush=True)
        time.sleep(120)
    """))
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the test process did not start its child"
        runner.poll()
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent_pid = runner.pid
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(timeout=30) is not None
    assert time.monotonic() - started < 15
    assert exits and exits[0] != 0
    for pid in (parent_pid, child_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_second_start_while_running_is_refused():
    runner = SubprocessRunner()
    collect(runner, python("import time; time.sleep(30)"))
    with pytest.raises(RuntimeError, match="already running"):
        collect(runner, python("pass"))
    runner.cancel()
    runner.wait(timeout=30)
