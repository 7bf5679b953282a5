"""The ``xgboost.DataIter`` that feeds pages to XGBoost, its prefetch thread, signals during its callbacks, and the cache room check.

XGBoost calls ``next()`` from C++ and swallows what it raises until the build ends, and a
KeyboardInterrupt raised inside that callback would be lost. So while a DMatrix is built,
SIGINT/SIGTERM are only recorded; the iterator stops at its next callback, the cache is
deleted, and the signal is delivered again to the handler that was in place before.
"""

from __future__ import annotations

import queue
import resource
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import xgboost as xgb

from extmem._contracts import Block, ReadCounters
from extmem._signals import STOP_SIGNALS, received_stop
from extmem.errors import CacheError
from extmem.read._queries import query_weights


class Interrupted(Exception):
    """Raised inside ``next()`` so XGBoost aborts the build; never escapes the build."""


class SignalLatch:
    """Records SIGINT/SIGTERM while XGBoost runs callbacks; redelivers them afterwards."""

    def __init__(self) -> None:
        self.pending: int | None = None

    @contextmanager
    def deferring(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def record(signum: int, frame: object) -> None:
            self.pending = signum

        previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def check(self) -> None:
        """Raise :class:`Interrupted` once a signal was recorded (from inside XGBoost's callbacks), here or before the build."""
        stop = received_stop()
        if self.pending is None and stop is not None:
            self.pending = stop.signum
        if self.pending is not None:
            raise Interrupted

    def redeliver(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup``, then deliver a recorded signal to the handler now in place.

        Cleanup comes first: the default SIGTERM handler ends the process at once.
        """
        if self.pending is not None:
            cleanup()
            signal.raise_signal(self.pending)
            raise KeyboardInterrupt


@dataclass
class IterStats:
    """Counters of one build: passes XGBoost made, what one pass held, and where cuts came from."""

    passes: int = 0
    rows: int = 0
    stored_values: int = 0
    weight_total: float = 0.0
    """Sum of the row weights of one pass (0 without weights)."""
    pages: int = 0
    read: ReadCounters = field(default_factory=ReadCounters)
    cuts_from_rows: int | None = None
    spooled_bytes: int = 0
    reused_rows: bool = False
    """Whether the rows were replayed from an encoded-rows cache (see :mod:`extmem.xgb._encoded`) instead of read."""
    build_seconds: float = 0.0
    """Wall time of the whole build (every pass, the cut sample, the spool)."""
    feed_seconds: float = 0.0
    """Time XGBoost waited on extmem for pages (reading, encoding, replaying); the rest of the build is XGBoost's own."""
    decode_seconds: float = 0.0
    """Time spent reading and decoding parquet (in the thread that read it)."""
    encode_seconds: float = 0.0
    """Time spent encoding batches into CSR or dense blocks (in the thread that encoded them)."""

    def timings(self) -> dict[str, float]:
        """Where the build's time went, in seconds."""
        return {
            "build": round(self.build_seconds, 3),
            "decode": round(self.decode_seconds, 3),
            "encode": round(self.encode_seconds, 3),
            "waiting_for_pages": round(self.feed_seconds, 3),
            "xgboost": round(max(self.build_seconds - self.feed_seconds, 0.0), 3),
        }


Item = TypeVar("Item")


class Prefetcher(Generic[Item]):
    """Produces pages (or any items) in a background thread, at most ``depth`` ahead of the consumer.

    pyarrow's decoding and most of numpy's CSR building run without the GIL, so the next page
    is read while XGBoost quantizes the current one. Errors reach the consumer at the page where they
    happened; :meth:`close` stops the thread (after the page it is building) and joins it.
    """

    _END = object()

    def __init__(self, produce: Iterator[Item], depth: int) -> None:
        self._produce = produce
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="extmem-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for page in self._produce:
                if not self._put(page):
                    return
            self._put(self._END)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer thread, which raises it
            self._put(exc)
        finally:
            close = getattr(self._produce, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # later calls keep seeing the end
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(self._END)
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
        self._thread.join()


class PageIter(xgb.DataIter):
    """Feeds XGBoost the pages that ``produce_pass()`` yields, one pass per ``reset``.

    ``counters`` are the reader's for the current pass; the first pass's are kept in
    :attr:`stats`. ``on_first_pass_end`` runs when XGBoost has seen every page once (it may
    raise: an empty dataset, a cache that will not fit). ``on_rows`` is told each page's rows.
    """

    def __init__(
        self,
        produce_pass: Callable[[], Iterator[Block]],
        latch: SignalLatch,
        *,
        feature_names: list[str],
        feature_types: list[str] | None,
        counters: ReadCounters,
        cache_prefix: str | None = None,
        prefetch: int = 0,
        on_rows: Callable[[int], None] | None = None,
        on_first_pass_end: Callable[[IterStats], None] | None = None,
    ) -> None:
        self._produce_pass = produce_pass
        self._latch = latch
        self._feature_names = feature_names
        self._feature_types = feature_types
        self._counters = counters
        self._prefetch = prefetch
        self._on_rows = on_rows
        self._on_first_pass_end = on_first_pass_end
        self.stats = IterStats()
        self._pages: Iterator[Block] | None = None
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def close(self) -> None:
        """End the current pass, stopping its prefetch thread."""
        if isinstance(self._pages, Prefetcher):
            self._pages.close()
        self._pages = None

    def reset(self) -> None:
        self.close()

    def next(self, input_data: Callable[..., Any]) -> bool:
        started = time.perf_counter()
        try:
            return self._next(input_data)
        finally:
            self.stats.feed_seconds += time.perf_counter() - started

    def _next(self, input_data: Callable[..., Any]) -> bool:
        self._latch.check()
        pass_starts = self._pages is None
        if pass_starts:
            self.stats.passes += 1
            produced = self._produce_pass()
            self._pages = Prefetcher(produced, self._prefetch) if self._prefetch > 0 else produced
        page = next(self._pages, None)
        first_pass = self.stats.passes == 1
        if page is None:
            if first_pass:
                self.stats.read = replace(self._counters)
                if self._on_first_pass_end is not None:
                    self._on_first_pass_end(self.stats)
            return False
        if first_pass:
            self.stats.rows += page.rows
            self.stats.stored_values += page.stored_values
            if page.weight is not None:
                self.stats.weight_total += float(np.sum(page.weight, dtype=np.float64))
            self.stats.pages += 1
            if self._on_rows is not None:
                self._on_rows(page.rows)
        # XGBoost's proxy matrix keeps the names and types it was given; checking thousands of names costs ~45 ms a page
        described = {"feature_names": self._feature_names, "feature_types": self._feature_types} if pass_starts else {}
        weight = page.weight if page.qid is None or page.weight is None else query_weights(page.qid, page.weight)  # pages end with queries
        input_data(data=page.X, label=page.label, weight=weight, qid=page.qid, **described)
        return True


CACHE_BYTES_PER_VALUE = 16
"""A generous bound on XGBoost's cache bytes per stored value (measured: about 13 with row pointers)."""


def check_cache_room(folder: Path, stats: IterStats) -> None:
    """Refuse, before XGBoost writes its cache, when the disk or the file-size limit cannot hold it.

    XGBoost writes its cache from a background thread and aborts the whole process when a
    write fails, so the only clean error is one given before the writing starts.
    """
    needed = stats.stored_values * CACHE_BYTES_PER_VALUE + stats.rows * 16
    free = shutil.disk_usage(folder).free
    file_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if needed > free:
        msg = (
            f"Cannot write the external-memory cache in {str(folder.parent)!r}: it needs about {needed / 2**20:,.0f} MiB "
            f"and {free / 2**20:,.0f} MiB are free; give a 'cache_dir' elsewhere."
        )
        raise CacheError(msg, options=("cache_dir",))
    if file_limit != resource.RLIM_INFINITY and needed > file_limit:
        msg = (
            f"Cannot write the external-memory cache in {str(folder.parent)!r}: it needs about {needed / 2**20:,.0f} MiB in one file, "
            f"above the file-size limit (ulimit -f) of {file_limit / 2**20:,.1f} MiB."
        )
        raise CacheError(msg)
