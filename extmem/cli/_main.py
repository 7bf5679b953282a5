"""Entry point of the ``extmem`` command: signals first, then flags, then one library call; errors become one line.

SIGINT and SIGTERM become exceptions before anything else runs (imports included), so a
signal at any moment unwinds through the library's clean-up and ends the process with 130 or
143 and one line. Everything heavy is imported after that, inside :func:`main`.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from extmem._allocators import check_room_for_libraries, limit_allocators
from extmem._signals import Stopped, forget_signals, ignore_signals, raise_on_signals, received_stop
from extmem.errors import ExtmemError, xgboost_reason

_SIZE_FLAGS = (("--batch-rows", "batch_rows"), ("--page-rows", "page_rows"), ("--row-group-rows", "row_group_rows"))


def _out_of_memory(args: argparse.Namespace) -> str:
    """The advice for a command that ran out of memory, in the flags that command has."""
    advice = []
    if hasattr(args, "memory_budget"):
        advice.append("give --memory-budget (or run under prlimit --data) so that batch and page sizes are planned to fit")
    if lower := [flag for flag, name in _SIZE_FLAGS if hasattr(args, name)]:
        advice.append(f"lower {' or '.join(lower)}")
    if hasattr(args, "memory_budget"):
        advice.append("pack the data first (extmem pack), which decodes in a fraction of the memory")
    if not advice:
        return "out of memory."
    text = ", or ".join([", ".join(advice[:-1]), advice[-1]]) if len(advice) > 1 else advice[0]
    return f"out of memory. {text[0].upper()}{text[1:]}."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``extmem`` command; returns the exit status."""
    raise_on_signals()
    try:
        limit_allocators()  # inside: a signal may arrive meanwhile
        return _stopped_status(_main(argv))
    except BaseException as exc:
        stop = exc if isinstance(exc, Stopped) else received_stop()  # a library may have turned the signal into its own error
        if stop is None:
            raise
        ignore_signals()
        print(f"extmem: {stop.description}; nothing was left behind", file=sys.stderr)
        return stop.status
    finally:
        forget_signals()


def _stopped_status(status: int) -> int:
    """``status``, or the signal's if one came whose exception was swallowed (a __del__, a ctypes callback) after the last checkpoint."""
    stop = received_stop()
    if stop is None:
        return status
    ignore_signals()
    print(f"extmem: {stop.description} as the run ended; its output is complete", file=sys.stderr)
    return stop.status


def _as_flags(text: str, options: tuple[str, ...]) -> str:
    """``text`` with the library options it names (``'valid_fraction'``) shown as their flags (``--valid-fraction``).

    Only an option's first mention is its name: a value quoted later may be the same word (the 'qid' column 'qid').
    """
    from extmem.cli._parser import flag_of

    for option in options:
        text = text.replace(f"'{option}'", flag_of(option), 1)
    return _OPTION_PHRASE.sub(lambda named: f"{flag_of(named[1])} option", text)


_OPTION_PHRASE = re.compile(r"'([a-z][a-z_]*)' option\b")
"""A library option a message calls one ("The 'rows' option ..."), whether or not the error lists it."""


class _FlagNames(logging.Formatter):
    """Shows the library options that a log record names (its ``options`` extra) as their flags, in this handler's output only."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _as_flags(super().formatMessage(record), getattr(record, "options", ()))


@contextmanager
def _command_logging() -> Iterator[None]:
    """The library's log lines on stderr, options shown as flags; the logger as it was afterwards (``main`` may run in-process)."""
    logger = logging.getLogger("extmem")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FlagNames("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    show_warning = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        warnings.showwarning = show_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: object, **__: object) -> None:
    """A library's warning (XGBoost's "No visible GPU is found, ...") as one line, without its time and source lines."""
    print(f"extmem: warning: {xgboost_reason(message)}", file=sys.stderr)


@contextmanager
def _file_size_limit_as_error() -> Iterator[None]:
    """A file-size limit (RLIMIT_FSIZE) becomes an error (EFBIG) instead of a kill by SIGXFSZ."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, previous)


def _main(argv: Sequence[str] | None) -> int:
    from extmem.cli._parser import parse

    args = parse(argv)
    try:
        check_room_for_libraries()
        from extmem.cli._commands import run_command

        with _command_logging(), _file_size_limit_as_error():
            run_command(args)
    except ExtmemError as exc:
        return _error(args.debug, _as_flags(str(exc), exc.options))
    except MemoryError:
        return _error(args.debug, _out_of_memory(args))
    except RuntimeError as exc:
        if "can't start new thread" not in str(exc):  # a thread's stack refused by the data limit
            raise
        return _error(args.debug, _out_of_memory(args))
    except OSError as exc:  # the environment, not extmem: a full disk, a file-size limit, permissions
        where = f": {exc.filename}" if exc.filename else ""
        return _error(args.debug, f"{exc.strerror or exc}{where}")
    except Exception as exc:
        xgboost = sys.modules.get("xgboost")
        if xgboost is None or not isinstance(exc, xgboost.core.XGBoostError):
            raise
        reason = xgboost_reason(exc)
        return _error(args.debug, _out_of_memory(args) if "bad_alloc" in reason else f"XGBoost failed: {reason}")
    return 0


_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'(?!\w)")
"""A quoted name or value in a message (an apostrophe inside a word, as in "model's", opens none)."""
_LONGEST_QUOTED = 300
"""Quoted names and values longer than this (a generated column name, a pasted list; not a path) keep their two ends."""


def _shortened(message: str) -> str:
    """``message`` with each quoted name or value too long to read cut to its start and its end."""

    def cut(quoted: re.Match[str]) -> str:
        text = quoted[0]
        return text if len(text) <= _LONGEST_QUOTED else f"{text[:200]}...{text[-80:]}"

    return _QUOTED.sub(cut, message)


def _error(debug: bool, message: str) -> int:
    if debug:
        traceback.print_exc()
    print(f"extmem: error: {_shortened(message)}", file=sys.stderr)
    return 2
