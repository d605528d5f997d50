"""Running the engine's worker as a child process, behind one small interface.

``SubprocessRunner`` reads the child's stdout and stderr on background threads into a queue;
``poll()`` hands the lines to the callbacks on the caller's thread. Outside Slicer (tests,
scripts) ``wait()`` drives ``poll()``. Inside Slicer ``QtTimerRunner`` polls from a QTimer,
so the GUI never blocks, and its ``wait()`` keeps processing events for batch use.

Cancelling never waits: it asks the whole process tree to stop (SIGTERM; the worker removes
its partial outputs) and returns at once. The polling that follows reaps the tree, killing
whatever is still alive after a grace period, and only then reports the exit.
"""
from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from typing import Any, Callable, Optional, Protocol

LineCallback = Callable[[str, str], None]      # (stream "stdout" | "stderr", line without newline)
ExitCallback = Callable[[int], None]           # exit status; negative = killed by that signal

#: seconds the worker gets to clean up after a cancel before the tree is killed
TERMINATE_GRACE_S = 8.0

#: Windows: CREATE_NO_WINDOW process creation flag, STARTF_USESHOWWINDOW and SW_HIDE
_CREATE_NO_WINDOW = 0x08000000
_STARTF_USESHOWWINDOW = 0x00000001
_SW_HIDE = 0


class ProcessRunner(Protocol):
    def start(self, command: list[str], onLine: LineCallback, onExit: ExitCallback,
              env: Optional[dict] = None, cwd: Optional[str] = None) -> None: ...

    def wait(self, timeout: Optional[float] = None) -> Optional[int]: ...

    def cancel(self) -> None: ...

    @property
    def running(self) -> bool: ...


def platformPopenOptions(osName: str = os.name, subprocessModule: Any = subprocess) -> dict:
    """``subprocess.Popen`` keywords that suit the platform.

    POSIX: a session of its own, so a cancel can reach the whole tree and a terminal's Ctrl+C
    does not. Windows: no console window (one would open for every run from the GUI, and
    closing it would kill the run), as ``slicer.util.launchConsoleProcess`` does.
    """
    if osName != "nt":
        return {"start_new_session": True}
    startupInfo = subprocessModule.STARTUPINFO()
    startupInfo.dwFlags |= getattr(subprocessModule, "STARTF_USESHOWWINDOW", _STARTF_USESHOWWINDOW)
    startupInfo.wShowWindow = _SW_HIDE
    return {"startupinfo": startupInfo,
            "creationflags": getattr(subprocessModule, "CREATE_NO_WINDOW", _CREATE_NO_WINDOW)}


class SubprocessRunner:
    """A child process whose output lines and exit reach callbacks from :meth:`poll`."""

    def __init__(self, terminateGraceS: float = TERMINATE_GRACE_S) -> None:
        self.terminateGraceS = terminateGraceS
        self._process: Optional[subprocess.Popen] = None
        self._lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._onLine: Optional[LineCallback] = None
        self._onExit: Optional[ExitCallback] = None
        self._exitReported = False
        self._descendants: list = []          # psutil.Process of the tree, as found at cancel
        self._killAt: Optional[float] = None  # monotonic time after which a cancelled tree is killed
        self.returncode: Optional[int] = None

    # ------------------------------------------------------------------ start
    def start(self, command: list[str], onLine: LineCallback, onExit: ExitCallback,
              env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        if self.running:
            raise RuntimeError("a process is already running")
        self._onLine, self._onExit = onLine, onExit
        self._exitReported, self.returncode = False, None
        self._descendants, self._killAt = [], None
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd,
            **platformPopenOptions())
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
    def cancelling(self) -> bool:
        """True between :meth:`cancel` and the reaping of the tree."""
        return self._killAt is not None and not self._exitReported

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def poll(self) -> bool:
        """Deliver queued lines, then the exit once the process and its pipes are done (and,
        after a cancel, its whole tree); kill a cancelled tree whose grace period is over.

        Returns True while the run is not finished. Call it from the thread that owns the
        callbacks (the GUI thread in Slicer).
        """
        if self._process is None or self._exitReported:
            return False
        self._deliverLines()
        if self._killAt is not None and time.monotonic() >= self._killAt:
            self._killTree()
        if self._process.poll() is None or any(r.is_alive() for r in self._readers) or self._treeAlive():
            return True
        self._deliverLines()                  # lines that arrived after the first delivery
        self._exitReported = True
        self.returncode = self._process.returncode
        self._onExit(self.returncode)
        return False

    def _deliverLines(self) -> None:
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._onLine(stream, line)

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
        """Ask the process tree to stop and return at once; :meth:`poll` reaps it, killing what
        is still alive :attr:`terminateGraceS` seconds later. A second call does nothing."""
        if self._process is None or self._exitReported or self._killAt is not None:
            return
        import psutil   # one of the requirements installed on first use; this module loads with Slicer
        self._killAt = time.monotonic() + self.terminateGraceS
        try:
            self._descendants = psutil.Process(self._process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            self._descendants = []
        for child in self._descendants:
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass
        if self._process.poll() is None:
            self._process.terminate()

    def _treeAlive(self) -> bool:
        """After a cancel: whether a descendant found then is still running (not a zombie)."""
        if not self._descendants:
            return False
        import psutil
        alive = []
        for child in self._descendants:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        self._descendants = alive
        return bool(alive)

    def _killTree(self) -> None:
        import psutil
        self._killAt = float("inf")           # once; the exit is still reported by poll()
        if self._process.poll() is None:
            try:
                self._descendants += psutil.Process(self._process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            self._process.kill()
        for child in self._descendants:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


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
