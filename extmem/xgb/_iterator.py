"""Iterator stage: the only module that touches `xgboost.DataIter`.

XGBoost calls ``next()`` from C++ and swallows what it raises until the build ends, and a
KeyboardInterrupt raised inside that callback would be lost. So while a DMatrix is built,
SIGINT/SIGTERM are only recorded; the iterator stops at its next callback, the cache is
deleted, and the signal is delivered again to the handler that was in place before.

Quantile cuts: XGBoost's CPU sketch keeps per-column state that grows with the number of
rows. For datasets larger than ``sketch_rows`` the cuts come from a uniform sample (as
LightGBM's ``bin_construct_sample_cnt`` does), built as an external-memory matrix of its own
and passed as ``ref``; this also saves XGBoost's sketching pass over the data. With a page spool
(wide shards) the spool is filled first and the sample is pages replayed from it, so the parquet
is decoded once in all; otherwise (packed shards, cheap to decode) it is row groups read again.
"""

from __future__ import annotations

import queue
import resource
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._defaults import CACHE_KINDS, DEFAULT_PAGE_ROWS, DEFAULT_SKETCH_ROWS
from extmem._folders import PrivateFolder
from extmem.encode._blocks import Block, pages
from extmem.errors import CacheError, NoRowsError, OptionError, check_positive_int
from extmem.read._plan import CacheKind
from extmem.read._source import RowGroupRef, Source, SourceCounters
from extmem.xgb._spool import PageSpool

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(Exception):
    """Raised inside ``next()`` so XGBoost aborts the build; never escapes this module."""


class _SignalLatch:
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

        previous = {signum: signal.signal(signum, record) for signum in _SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

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
    pages: int = 0
    read: SourceCounters = field(default_factory=SourceCounters)
    cuts_from_rows: int | None = None
    spooled_bytes: int = 0


class _Prefetcher:
    """Produces pages in a background thread, at most ``depth`` ahead of the consumer.

    pyarrow's decoding and most of numpy's CSR building run without the GIL, so the next page
    is read while XGBoost quantizes the current one. Errors reach the consumer at the page where they
    happened; :meth:`close` stops the thread (after the page it is building) and joins it.
    """

    _END = object()

    def __init__(self, produce: Iterator[Block], depth: int) -> None:
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

    def __iter__(self) -> Iterator[Block]:
        return self

    def __next__(self) -> Block:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # later calls keep seeing the end
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(self._END)
            raise item
        assert isinstance(item, Block)
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
        self._thread.join()


class ParquetIter(xgb.DataIter):
    """Feeds pages of CSR (or dense) blocks from a :class:`Source` to XGBoost."""

    def __init__(
        self,
        source: Source,
        latch: _SignalLatch,
        *,
        cache_prefix: str | None = None,
        page_rows: int = DEFAULT_PAGE_ROWS,
        row_groups: list[RowGroupRef] | None = None,
        on_rows: Callable[[int], None] | None = None,
        spool: PageSpool | None = None,
        spool_pages: list[int] | None = None,
        prefetch: int = 0,
    ) -> None:
        self.source = source
        self.page_rows = page_rows
        self.prefetch = prefetch
        self.stats = IterStats()
        self._latch = latch
        self._row_groups = row_groups
        self._on_rows = on_rows
        self._spool = spool
        self._spool_pages = spool_pages
        self._cache_folder = Path(cache_prefix).parent if cache_prefix is not None else None
        self._pages: Iterator[Block] | None = None
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def _pass(self) -> Iterator[Block]:
        """The pages of one pass: replayed from the spool once it is complete, else read (and spooled); prefetched if asked."""
        if self._spool is not None and self._spool.complete:
            produce = self._spool.replay(len(self.source.layout.names), self._spool_pages)
        else:
            read = pages(self.source.batches(self._row_groups), self.source.layout, self.page_rows)
            produce = self._spool.record(read) if self._spool is not None else read
        return _Prefetcher(produce, self.prefetch) if self.prefetch > 0 else produce

    def close(self) -> None:
        """End the current pass, stopping its prefetch thread."""
        if isinstance(self._pages, _Prefetcher):
            self._pages.close()
        self._pages = None

    def reset(self) -> None:
        self.close()

    def next(self, input_data: Callable[..., Any]) -> bool:
        if self._latch.pending is not None:
            raise _Interrupted
        if self._pages is None:
            self.stats.passes += 1
            self._pages = self._pass()
        page = next(self._pages, None)
        first_pass = self.stats.passes == 1
        if page is None:
            if first_pass:
                self.stats.read = replace(self.source.counters)
                if self.stats.rows == 0:
                    raise NoRowsError(self._no_rows_message(), options=("filter",))
                if self._cache_folder is not None:
                    check_cache_room(self._cache_folder, self.stats)
            return False
        if first_pass:
            self.stats.rows += page.rows
            self.stats.stored_values += page.stored_values
            self.stats.pages += 1
        if self._on_rows is not None:
            self._on_rows(page.rows)
        layout = self.source.layout
        input_data(data=page.X, label=page.label, weight=page.weight, feature_names=list(layout.names), feature_types=layout.feature_types)
        return True

    def _no_rows_message(self) -> str:
        dataset = self.source.dataset
        where = f"the {len(self._row_groups)} sampled row group(s) of " if self._row_groups is not None else ""
        why = f" match the 'filter' {dataset.filter!r}" if dataset.filter else ""
        return f"No rows of {where}{', '.join(dataset.paths)}{why}; there is nothing to train on."


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
        msg = f"Cannot write the external-memory cache in {str(folder.parent)!r}: it needs about {needed / 2**20:,.0f} MiB and {free / 2**20:,.0f} MiB are free; give a 'cache_dir' elsewhere."
        raise CacheError(msg, options=("cache_dir",))
    if file_limit != resource.RLIM_INFINITY and needed > file_limit:
        msg = f"Cannot write the external-memory cache in {str(folder.parent)!r}: it needs about {needed / 2**20:,.0f} MiB in one file, above the file-size limit (ulimit -f) of {file_limit / 2**20:,.1f} MiB."
        raise CacheError(msg)


class _CacheOwner:
    """Deletes the cache folder right after XGBoost frees the matrix and removes its pages.

    A ``weakref.finalize`` cannot guarantee this order: for objects collected in a
    reference cycle Python runs weakref callbacks before ``__del__``.
    """

    extmem_cache: PrivateFolder | None = None

    def __del__(self) -> None:
        super().__del__()  # type: ignore[misc]
        if self.extmem_cache is not None:
            self.extmem_cache.cleanup()


class CachedQuantileDMatrix(_CacheOwner, xgb.ExtMemQuantileDMatrix):
    """``ExtMemQuantileDMatrix`` that owns its cache folder."""


class CachedPagedDMatrix(_CacheOwner, xgb.DMatrix):
    """Paged external-memory ``DMatrix`` (for ``approx``) that owns its cache folder."""


class InMemoryQuantileDMatrix(_CacheOwner, xgb.QuantileDMatrix):
    """``QuantileDMatrix`` built from the same stream, held in memory (``cache="memory"``)."""


class InMemoryDMatrix(_CacheOwner, xgb.DMatrix):
    """``DMatrix`` built from the same stream, held in memory (``cache="memory"`` with ``approx``)."""


def _fill_spool(source: Source, spool: PageSpool, page_rows: int, latch: _SignalLatch, on_rows: Callable[[int], None] | None) -> None:
    """Decode every page once into ``spool``, ahead of the build, so that the cuts can sample it."""
    for page in spool.record(pages(source.batches(), source.layout, page_rows)):
        if latch.pending is not None:
            raise _Interrupted
        if on_rows is not None:
            on_rows(page.rows)


def _sampled_cuts(
    source: Source, cache: PrivateFolder, latch: _SignalLatch, options: MatrixOptions, spool: PageSpool | None
) -> tuple[xgb.DMatrix | None, int]:
    """A matrix over a uniform sample of rows whose cuts the full build reuses, or None for small data.

    From a complete ``spool``, the sample is pages replayed from it, so nothing is decoded twice;
    otherwise it is row groups read again. It is external-memory too: an in-memory
    QuantileDMatrix of the sample would hold its quantized rows in RAM while the full build runs.
    """
    categorical = bool(source.layout.categories)
    if spool is not None:
        expected_rows = spool.rows
    else:
        expected_rows = sum(ref.rows for ref in source.row_groups())
        if source.dataset.max_rows is not None:
            expected_rows = min(expected_rows, source.dataset.max_rows)
    if not (expected_rows > options.sketch_rows if options.sample_cuts is None else options.sample_cuts):
        return None, 0
    sample = (
        {"spool": spool, "spool_pages": spool.sample(options.sketch_rows, options.seed)}
        if spool is not None
        else {"row_groups": source.sample_row_groups(options.sketch_rows, options.seed)}
    )
    prefix = str(cache.path / "cuts")
    iterator = ParquetIter(source, latch, cache_prefix=prefix, page_rows=options.page_rows, prefetch=options.prefetch, **sample)
    try:
        reference = xgb.ExtMemQuantileDMatrix(iterator, missing=np.nan, max_bin=options.max_bin, enable_categorical=categorical)
    except NoRowsError:  # the filter left nothing in the sampled row groups: sketch every row instead
        return None, 0
    finally:
        iterator.close()
    return reference, iterator.stats.rows


@dataclass(frozen=True)
class MatrixOptions:
    """How an external-memory matrix is built.

    ``page_rows``: rows per XGBoost page. ``max_bin``: XGBoost's histogram bins. ``sparse_pages``:
    a paged ``DMatrix`` (for ``approx``) instead of an ``ExtMemQuantileDMatrix`` (for ``hist``).
    ``sketch_rows``/``seed``: above that many rows, quantile cuts come from about that many rows
    sampled with ``seed`` (spooled pages, or row groups without a spool); ``sample_cuts`` True or
    False overrides the row count's choice (distributed workers must all choose alike). ``spool``: keep the first pass's pages for the later
    passes (default: when some shard is wide, whose decoding is slow). ``prefetch``: pages
    read ahead in a background thread (0: none). ``cache``: where the quantized matrix lives,
    ``memory`` (``QuantileDMatrix``), ``disk`` (external memory) or ``auto`` (memory when it fits
    ``memory_budget`` with room to spare, see :mod:`extmem.budget`). ``memory_budget`` (bytes or
    a size like ``"2GB"``; default: the process's data limit, if any) also bounds the batch and
    page sizes, which are then the largest allowed.
    """

    page_rows: int = DEFAULT_PAGE_ROWS
    max_bin: int | None = None
    sparse_pages: bool = False
    sketch_rows: int = DEFAULT_SKETCH_ROWS
    seed: int = 0
    spool: bool | None = None
    prefetch: int = 1
    cache: CacheKind = "auto"
    memory_budget: int | str | None = None
    sample_cuts: bool | None = None

    def __post_init__(self) -> None:
        for name in ("page_rows", "sketch_rows"):
            check_positive_int(getattr(self, name), name)
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            msg = f"The 'prefetch' option must be a non-negative integer (pages read ahead), got {self.prefetch!r}."
            raise OptionError(msg)
        if self.cache not in CACHE_KINDS:
            msg = f"The 'cache' option must be one of {', '.join(CACHE_KINDS)}; got {self.cache!r}."
            raise OptionError(msg)


def build_dmatrix(
    source: Source,
    cache: PrivateFolder,
    options: MatrixOptions,
    *,
    ref: xgb.DMatrix | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[xgb.DMatrix, IterStats]:
    """Build a DMatrix from ``source``: external memory with its pages under ``cache``, or in memory.

    ``options.cache`` must be ``memory`` or ``disk`` here (a memory plan resolves ``auto``).
    Quantile cuts come from ``ref`` if given (not for sparse pages). Spool files, if any, are
    deleted once the matrix is built. The matrix owns ``cache``: freeing it deletes the
    folder. On error or interruption the cache is deleted at once.
    """
    assert options.cache in ("memory", "disk"), options.cache
    latch = _SignalLatch()
    use_spool = source.has_wide_shards if options.spool is None else options.spool
    page_spool = PageSpool(cache.path / "spool") if use_spool else None
    page_rows, max_bin = options.page_rows, options.max_bin
    categorical = bool(source.layout.categories)
    on_disk = options.cache == "disk"
    iterator = ParquetIter(
        source,
        latch,
        cache_prefix=cache.prefix if on_disk else None,
        page_rows=page_rows,
        on_rows=on_rows,
        spool=page_spool,
        prefetch=options.prefetch,
    )
    matrix: xgb.DMatrix | None = None
    try:
        with latch.deferring():
            try:
                if options.sparse_pages:
                    paged = CachedPagedDMatrix if on_disk else InMemoryDMatrix
                    matrix = paged(iterator, missing=np.nan, enable_categorical=categorical)
                else:
                    own_cuts = ref is None
                    if own_cuts:
                        if page_spool is not None:
                            _fill_spool(source, page_spool, page_rows, latch, on_rows)
                        ref, sample_rows = _sampled_cuts(source, cache, latch, options, page_spool)
                    quantile = CachedQuantileDMatrix if on_disk else InMemoryQuantileDMatrix
                    matrix = quantile(iterator, missing=np.nan, max_bin=max_bin, ref=ref, enable_categorical=categorical)
                    ref = None
                    if own_cuts:
                        iterator.stats.cuts_from_rows = sample_rows or iterator.stats.rows
                matrix.extmem_cache = cache
            except _Interrupted:
                pass
        latch.redeliver(cache.cleanup)
    except OSError as exc:
        cache.cleanup()
        msg = f"Cannot write the external-memory cache in {str(cache.path.parent)!r}: {exc.strerror or exc}."
        raise CacheError(msg) from None
    except BaseException:
        cache.cleanup()
        raise
    finally:
        iterator.close()
        if page_spool is not None:
            iterator.stats.spooled_bytes = page_spool.bytes
            page_spool.clear()
    assert matrix is not None
    return matrix, iterator.stats
