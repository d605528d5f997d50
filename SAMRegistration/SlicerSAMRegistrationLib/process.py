"""Running the engine's worker as a child process, behind one small interface.

``SubprocessRunner`` reads the child's stdout and stderr on background threads into a queue;
``poll()`` hands the lines to the callbacks on the caller's thread. Outside Slicer (tests,
scripts) ``wait()`` drives ``poll()``. Inside Slicer ``QtTimerRunner`` polls from a QTimer,
so the GUI never blocks, and its ``wait()`` keeps processing events for batch use.
Cancelling terminates the whole process tree: the worker removes its partial outputs on
SIGTERM, and anything still alive after a grace period is killed.
"""
from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from typing import Callable, Optional, Protocol

LineCallback = Callable[[str, str], None]      # (stream "stdout" | "stderr", line without newline)
ExitCallback = Callable[[int], None]           # exit status; negative = killed by that signal

#: seconds the worker gets to clean up after SIGTERM before the tree is killed
TERMINATE_GRACE_S = 8.0


class ProcessRunner(Protocol):
    def start(self, command: list[str], onLine: LineCallback, onExit: ExitCallback,
              env: Optional[dict] = None, cwd: Optional[str] = None) -> None: ...

    def wait(self, timeout: Optional[float] = None) -> Optional[int]: ...

    def cancel(self) -> None: ...

    @property
    def running(self) -> bool: ...


class SubprocessRunner:
    """A child process whose output lines and exit reach callbacks from :meth:`poll`."""

    def __init__(self) -> None:
        self._process: Optional[subprocess.Popen] = None
        self._lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._onLine: Optional[LineCallback] = None
        self._onExit: Optional[ExitCallback] = None
        self._exitReported = False
        self.returncode: Optional[int] = None

    # ------------------------------------------------------------------ start
    def start(self, command: list[str], onLine: LineCallback, onExit: ExitCallback,
              env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        if self.running:
            raise RuntimeError("a process is already running")
        self._onLine, self._onExit = onLine, onExit
        self._exitReported, self.returncode = False, None
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd,
            start_new_session=(os.name == "posix"))
        self._readers = [threading.Thread(target=self._read, args=(stream, name), daemon=True)
                         for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr"))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            self._lines.put((name, line.rstrip("\r\n")))
        stream.close()

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._process is not None and not self._exitReported

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def poll(self) -> bool:
        """Deliver queued lines, then the exit once the process and its pipes are done.

        Returns True while the run is not finished. Call it from the thread that owns the
        callbacks (the GUI thread in Slicer).
        """
        if self._process is None or self._exitReported:
            return False
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._onLine(stream, line)
        if self._process.poll() is None or any(r.is_alive() for r in self._readers):
            return True
        while not self._lines.empty():        # lines that arrived after the loop above
            self._onLine(*self._lines.get_nowait())
        self._exitReported = True
        self.returncode = self._process.returncode
        self._onExit(self.returncode)
        return False

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Poll until the run is finished (or ``timeout`` seconds pass); returns the exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                return None
            self._idle()
        return self.returncode

    def _idle(self) -> None:
        time.sleep(0.02)

    # ------------------------------------------------------------------ cancel
    def cancel(self) -> None:
        """SIGTERM the process tree; kill whatever is left after :data:`TERMINATE_GRACE_S`."""
        if self._process is None or self._process.poll() is not None:
            return
        terminate_tree(self._process, TERMINATE_GRACE_S)


def terminate_tree(process: subprocess.Popen, grace_s: float) -> None:
    """Terminate ``process`` and all its descendants; kill those that outlive ``grace_s``.

    The root is waited for through its ``Popen`` (psutil would reap it and leave Popen
    without its exit status); descendants through psutil (imported here: it is one of the
    requirements installed on first use, and this module is imported when Slicer starts).
    """
    import psutil
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for child in descendants:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    process.terminate()
    deadline = time.monotonic() + grace_s
    _, alive = psutil.wait_procs(descendants, timeout=grace_s)
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


class QtTimerRunner(SubprocessRunner):
    """Inside Slicer: a QTimer on the GUI thread polls the child, so nothing blocks."""

    POLL_MS = 100

    def start(self, command: list[str], onLine: LineCallback, onExit: ExitCallback,
              env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        import qt
        super().start(command, onLine, onExit, env=env, cwd=cwd)
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self) -> None:
        if not self.poll():
            self._timer.stop()

    def _idle(self) -> None:
        import slicer
        slicer.app.processEvents()
        time.sleep(0.03)   # a tight processEvents loop would starve the reader threads of the GIL


def insideSlicerApplication() -> bool:
    try:
        import slicer
        return getattr(slicer, "app", None) is not None
    except ImportError:
        return False


def makeRunner() -> ProcessRunner:
    """The runner that suits where this code runs: Qt-timer polled inside Slicer, plain otherwise."""
    return QtTimerRunner() if insideSlicerApplication() else SubprocessRunner()


def workerEnvironment(enginePath: str) -> dict:
    """The environment for the worker: Slicer's start-up environment when inside Slicer (so
    PythonSlicer finds its libraries), with ``enginePath`` first on PYTHONPATH."""
    env = None
    if insideSlicerApplication():
        import slicer
        startup = getattr(slicer.util, "startupEnvironment", None)
        env = dict(startup()) if startup is not None else None
    env = dict(env if env is not None else os.environ)
    parts = [enginePath] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env
