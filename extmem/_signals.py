"""SIGINT and SIGTERM as exceptions that unwind every run, and sections they must not cut short.

The command line turns both signals into exceptions from its first instruction on, so that a
signal at any moment (imports included) unwinds through the code that removes caches and
partial files, and ends the process with 130 or 143 and one line. :func:`deferred` blocks the
two signals while a cleanup or a rename runs, so that a signal arriving then is handled right
after it, not in its middle.

Python code may swallow the exception: one raised inside a ``__del__``, a weakref callback or
a ctypes callback (XGBoost's data iterator or logger) is printed and dropped, and a library may
turn it into an error of its own (numpy's import does). So the signal is also recorded:
:func:`raise_if_stopped`, called at every batch read, footer scanned, progress step, boosting round
and packed batch, and before each row group synth draws (the matrix build's latch checks it at
every page), raises it again, and the command line reports
a recorded signal whatever exception ended the run.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


_received: list[int] = []
"""The signals received since :func:`raise_on_signals` (a list: set from the handler without a global statement)."""


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Stopped(signum)


def raise_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise :class:`Stopped` in the main thread (and are recorded).

    A :class:`Stopped` that Python drops as unraisable (raised in a ``__del__`` or a ctypes
    callback) is not printed: it was recorded, and the run reports it in one line.
    """
    _received.clear()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise)
    if sys.unraisablehook is not _drop_stops:
        _drop_stops.previous = sys.unraisablehook  # type: ignore[attr-defined]
        sys.unraisablehook = _drop_stops


def _drop_stops(unraisable: Any) -> None:
    if not isinstance(unraisable.exc_value, Stopped):
        _drop_stops.previous(unraisable)  # type: ignore[attr-defined]


def forget_signals() -> None:
    """Forget the signals received (the command that got them has ended; ``main`` may run again in-process)."""
    _received.clear()


def received_stop() -> Stopped | None:
    """The first stop signal received since :func:`raise_on_signals`, as the exception it raised; None if none came."""
    return Stopped(_received[0]) if _received else None


def raise_if_stopped() -> None:
    """Raise :class:`Stopped` again if a signal came whose exception something swallowed (main thread only)."""
    if _received and threading.current_thread() is threading.main_thread():
        raise Stopped(_received[0])


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
