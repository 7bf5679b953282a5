"""Iterator stage: the only module that touches `xgboost.DataIter`.

XGBoost calls ``next()`` from C++ and swallows what it raises until the build ends, and a
KeyboardInterrupt raised inside that callback would be lost. So while a DMatrix is built,
SIGINT/SIGTERM are only recorded; the iterator stops at its next callback, the cache is
deleted, and the signal is delivered again to the handler that was in place before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from .blocks import Block, pages
from .cache import CacheDir
from .dataset import DEFAULT_PAGE_ROWS
from .source import Source

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(Exception):
    """Raised inside ``next()`` so XGBoost aborts the build; never escapes this module."""


@dataclass
class IterStats:
    """Counters of one iterator: passes XGBoost made and what the first pass held."""

    passes: int = 0
    rows: int = 0
    stored_values: int = 0
    pages: int = 0
    batches: int = 0
    row_groups_read: int = 0
    row_groups_skipped: int = 0


class ParquetIter(xgb.DataIter):
    """Feeds pages of CSR (or dense) blocks from a :class:`Source` to XGBoost."""

    def __init__(self, source: Source, cache_prefix: str, page_rows: int = DEFAULT_PAGE_ROWS, on_rows: Callable[[int], None] | None = None) -> None:
        self.source = source
        self.page_rows = page_rows
        self.stats = IterStats()
        self.pending_signal: int | None = None
        self._on_rows = on_rows
        self._pages: Iterator[Block] | None = None
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def reset(self) -> None:
        self._pages = None

    def next(self, input_data: Callable[..., Any]) -> bool:
        if self.pending_signal is not None:
            raise _Interrupted
        if self._pages is None:
            self.stats.passes += 1
            self._pages = pages(self.source.batches(), self.source.layout, self.page_rows)
        page = next(self._pages, None)
        first_pass = self.stats.passes == 1
        if page is None:
            if first_pass:
                counters = self.source.counters
                self.stats.batches = counters.batches
                self.stats.row_groups_read = counters.row_groups_read
                self.stats.row_groups_skipped = counters.row_groups_skipped
            return False
        if first_pass:
            self.stats.rows += page.rows
            self.stats.stored_values += page.stored_values
            self.stats.pages += 1
        if self._on_rows is not None:
            self._on_rows(page.rows)
        input_data(data=page.X, label=page.label, weight=page.weight, feature_names=list(self.source.layout.names))
        return True


@contextmanager
def _deferred_signals(iterator: ParquetIter) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum: int, frame: object) -> None:
        iterator.pending_signal = signum

    previous = {signum: signal.signal(signum, record) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_dmatrix(
    source: Source,
    cache: CacheDir,
    *,
    page_rows: int = DEFAULT_PAGE_ROWS,
    ref: xgb.DMatrix | None = None,
    max_bin: int | None = None,
    sparse_pages: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[xgb.DMatrix, IterStats]:
    """Build an external-memory DMatrix from ``source`` with its pages under ``cache``.

    ``ExtMemQuantileDMatrix`` (for ``hist``) by default; with ``sparse_pages`` a paged
    ``DMatrix`` (for ``approx``). On error or interruption the cache is deleted.
    """
    iterator = ParquetIter(source, cache.prefix, page_rows, on_rows)
    try:
        with _deferred_signals(iterator):
            try:
                if sparse_pages:
                    matrix: xgb.DMatrix = xgb.DMatrix(iterator, missing=np.nan)
                else:
                    matrix = xgb.ExtMemQuantileDMatrix(iterator, missing=np.nan, max_bin=max_bin, ref=ref)
            except _Interrupted:
                pass
        if iterator.pending_signal is not None:
            cache.cleanup()
            signal.raise_signal(iterator.pending_signal)
            raise KeyboardInterrupt
    except BaseException:
        cache.cleanup()
        raise
    return matrix, iterator.stats
