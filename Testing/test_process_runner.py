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


def test_cancel_returns_at_once_and_poll_reaps_a_child_that_ignores_sigterm():
    """Cancel runs on the GUI thread: it must not wait for the tree (it used to, for up to 8 s)."""
    runner = SubprocessRunner(terminateGraceS=1.0)
    lines, exits = collect(runner, python("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(120)
    """))
    deadline = time.monotonic() + 30
    while not any(line == "ready" for _, line in lines):
        assert time.monotonic() < deadline
        runner.poll()
        time.sleep(0.02)
    began = time.monotonic()
    runner.cancel()
    assert time.monotonic() - began < 0.2
    assert runner.running and runner.cancelling and psutil.pid_exists(runner.pid)
    runner.cancel()                                     # a second press changes nothing
    assert runner.wait(timeout=20) is not None
    assert exits == [-9] and not runner.running and not runner.cancelling


def test_cancel_of_a_cooperative_child_reports_its_own_exit():
    runner = SubprocessRunner()
    lines, exits = collect(runner, python("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
        print("ready", flush=True)
        time.sleep(120)
    """))
    while not any(line == "ready" for _, line in lines):
        runner.poll()
        time.sleep(0.02)
    runner.cancel()
    assert runner.wait(timeout=20) == 130 and exits == [130]


@pytest.mark.parametrize("osName", ["nt", "posix"])
def test_launch_options_hide_the_console_on_windows(osName):
    """On Windows the worker gets no console window (else one opens per run and closing it
    kills the run); on POSIX it gets its own session."""
    from types import SimpleNamespace

    from SlicerSAMRegistrationLib.process import platformPopenOptions

    class StartupInfo:          # the fields of subprocess.STARTUPINFO that matter here
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 1
    windowsSubprocess = SimpleNamespace(STARTUPINFO=StartupInfo, STARTF_USESHOWWINDOW=1, CREATE_NO_WINDOW=0x08000000)
    options = platformPopenOptions(osName, windowsSubprocess)
    if osName == "nt":
        assert set(options) == {"startupinfo", "creationflags"}
        assert options["startupinfo"].dwFlags & 1 and options["startupinfo"].wShowWindow == 0   # SW_HIDE
        assert options["creationflags"] & 0x08000000                                          # CREATE_NO_WINDOW
    else:
        assert options == {"start_new_session": True}


def test_the_runner_starts_processes_with_the_platform_options(monkeypatch):
    from SlicerSAMRegistrationLib import process

    seen = {}
    real = process.subprocess.Popen

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(process.subprocess, "Popen", spy)
    runner = SubprocessRunner()
    collect(runner, python("pass"))
    runner.wait(timeout=30)
    for key, value in process.platformPopenOptions().items():
        assert seen[key] == value
