"""SIGINT and SIGTERM as exceptions that unwind every run, and sections they must not cut short.

The command line turns both signals into exceptions from its first instruction on, so that a
signal at any moment (imports included) unwinds through the code that removes caches and
partial files, and ends the process with 130 or 143 and one line. :func:`deferred` blocks the
two signals while a cleanup or a rename runs, so that a signal arriving then is handled right
after it, not in its middle.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: raised in the main thread, it unwinds the run like KeyboardInterrupt.

    Not KeyboardInterrupt itself: CPython ends a process whose code let a KeyboardInterrupt escape
    anywhere (an extension's import included) by SIGINT at exit, whatever status it returned.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def status(self) -> int:
        """The shell's exit status for the signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum

    @property
    def description(self) -> str:
        return f"{'interrupted' if self.signum == signal.SIGINT else 'terminated'} ({signal.Signals(self.signum).name})"


def _raise(signum: int, frame: object) -> None:
    raise Stopped(signum)


def raise_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise :class:`Stopped` in the main thread."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise)


def ignore_signals() -> None:
    """Ignore both signals (while the process reports how it was stopped, and exits)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (main thread only); a signal that came meanwhile is handled after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
