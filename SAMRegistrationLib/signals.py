"""Ctrl-C and SIGTERM as a cancel request for the command line's long runs."""
from __future__ import annotations

import signal
import sys
import threading


class CancelOnSignal:
    """First SIGINT/SIGTERM sets the cancel event; a second SIGINT interrupts at once."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self._previous: dict = {}

    def _handler(self, signum, _frame) -> None:
        if self.cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.cancel.set()
        print("\nsamreg: cancelling (press Ctrl-C again to abort now)", file=sys.stderr)

    def __enter__(self) -> "CancelOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
