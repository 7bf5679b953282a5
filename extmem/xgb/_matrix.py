"""`dmatrix()`: an external-memory XGBoost DMatrix for a parquet dataset, usable in `xgb.train`."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import xgboost as xgb

from extmem._defaults import DEFAULT_PAGE_ROWS, DEFAULT_SKETCH_ROWS
from extmem._folders import PrivateFolder
from extmem.encode._layout import FeatureLayout
from extmem.errors import OptionError
from extmem.read._dataset import Dataset, DatasetLike, as_dataset
from extmem.read._plan import Budget, CacheKind, MemoryPlan, plan_memory, profile_source
from extmem.read._source import Source
from extmem.xgb._iterator import IterStats, MatrixOptions, build_dmatrix

logger = logging.getLogger("extmem")


@dataclass(frozen=True)
class MatrixInfo:
    """How a DMatrix was built: its source (layout, dropped columns), memory plan, counters and cache."""

    source: Source
    plan: MemoryPlan
    stats: IterStats
    cache: PrivateFolder

    @property
    def layout(self) -> FeatureLayout:
        return self.source.layout


_INFO: weakref.WeakKeyDictionary[xgb.DMatrix, MatrixInfo] = weakref.WeakKeyDictionary()


def matrix_info(matrix: xgb.DMatrix) -> MatrixInfo:
    """The :class:`MatrixInfo` of a DMatrix made by extmem."""
    try:
        return _INFO[matrix]
    except KeyError:
        msg = "This DMatrix was not built by extmem.dmatrix()."
        raise OptionError(msg) from None


def free_matrix(matrix: xgb.DMatrix) -> None:
    """Release a matrix's native memory and its cache folder now, not at garbage collection."""
    matrix.__del__()


def plan_matrix(source: Source, options: MatrixOptions) -> MemoryPlan:
    """The memory plan for reading ``source`` with ``options`` (sizes from them are the largest allowed)."""
    label_map = source.layout.label_map
    profile = profile_source(source, outputs=len(label_map) if label_map else 1)
    return plan_memory(
        profile,
        Budget.resolve(options.memory_budget),
        batch_rows=source.batch_rows,
        page_rows=options.page_rows,
        prefetch=options.prefetch,
        cache=options.cache,
    )


def open_matrix(
    dataset: Dataset,
    cache: PrivateFolder,
    options: MatrixOptions,
    *,
    layout: FeatureLayout | None = None,
    ref: xgb.DMatrix | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[xgb.DMatrix, MatrixInfo]:
    """Read ``dataset`` (with ``layout``, or the layout of ``ref``) into a DMatrix cached in ``cache``.

    Batch rows, page rows and the cache kind follow a memory plan for ``options.memory_budget``
    (see :func:`plan_matrix`), which is logged before reading starts. On any error the cache
    folder is deleted before the error propagates.
    """
    if layout is None and ref is not None:
        layout = matrix_info(ref).layout
    try:
        source = Source(dataset, layout)
        plan = plan_matrix(source, options)
        logger.info(plan.describe())
        source.batch_rows = plan.batch_rows
        build = replace(options, page_rows=plan.page_rows, cache=plan.cache)
        matrix, stats = build_dmatrix(source, cache, build, ref=ref, on_rows=on_rows)
    except BaseException:
        cache.cleanup()
        raise
    info = MatrixInfo(source, plan, stats, cache)
    _INFO[matrix] = info
    return matrix, info


def dmatrix(
    data: DatasetLike,
    label: str | None = "splice_type",
    *,
    ref: xgb.DMatrix | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    page_rows: int = DEFAULT_PAGE_ROWS,
    max_bin: int | None = None,
    sparse_pages: bool = False,
    sketch_rows: int = DEFAULT_SKETCH_ROWS,
    seed: int = 0,
    spool: bool | None = None,
    prefetch: int = 1,
    cache: CacheKind = "auto",
    memory_budget: int | str | None = None,
    **options: Any,
) -> xgb.DMatrix:
    """An external-memory DMatrix for a parquet dataset, for use in existing XGBoost code.

    Returns an ``ExtMemQuantileDMatrix`` or ``QuantileDMatrix`` (train with ``tree_method="hist"``),
    or with ``sparse_pages=True`` a paged or in-memory ``DMatrix`` (for ``approx``). Pass ``ref=dtrain`` for
    validation data: it then uses the training matrix's columns and quantile cuts. Without
    ``ref``, datasets of more than ``sketch_rows`` rows get their quantile cuts from row
    groups, or spooled pages, sampled uniformly at random (``seed``), which bounds the sketch's memory.
    ``data`` is a path (folder, glob, file, list) or a :class:`Dataset`, whose own label is
    then used. ``options`` are :class:`Dataset` fields (``features``, ``drop``, ``filter``, ``max_rows``,
    ``batch_rows``, ``label_map``...). The cache files live in a private folder under
    ``cache_dir`` (default: the system temp folder), removed when the DMatrix is freed.
    ``spool`` keeps the first pass's pages for XGBoost's later passes instead of decoding
    the parquet again (default: on when some shard is wide, off for packed datasets).
    ``cache`` is ``"disk"`` (external memory), ``"memory"`` (an in-memory ``QuantileDMatrix``
    from the same stream) or ``"auto"``: memory when the quantized matrix fits
    ``memory_budget`` (default: the process's data limit, else the available RAM) with room to
    spare. Under a budget, ``batch_rows`` and ``page_rows`` are the largest sizes allowed.
    ``prefetch`` pages are read ahead in a background thread.
    """
    dataset = as_dataset(data, label, options)
    build = MatrixOptions(page_rows, max_bin, sparse_pages, sketch_rows, seed, spool, prefetch, cache, memory_budget)
    matrix, _ = open_matrix(dataset, PrivateFolder(cache_dir), build, ref=ref)
    return matrix
