"""Dask preload of every ``samreg batch`` worker process (``--preload`` of the workers).

Ctrl-C in a terminal reaches the whole process group, the local workers included. The driver
turns it into a clean cancel (each running pair stops at its next step and removes what it
wrote); a worker interrupted by it would die mid-pair and leave half a pair behind. So the
workers ignore SIGINT and leave cancelling to the driver.
"""
from __future__ import annotations

import signal
import threading


def dask_setup(worker=None) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
