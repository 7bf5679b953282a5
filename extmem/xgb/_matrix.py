"""`dmatrix()`: an XGBoost matrix for a parquet dataset, usable in existing XGBoost code; `open_matrix` for the trainers."""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import xgboost as xgb

from extmem._allocators import release_freed_memory
from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_PREFETCH
from extmem._folders import PrivateFolder
from extmem._layout import FeatureLayout
from extmem.encode._probe import profile
from extmem.errors import OptionError
from extmem.read._budget import Budget
from extmem.read._dataset import Dataset, DatasetLike, as_dataset, is_dataset, takes_dataset_options
from extmem.read._plan import MemoryPlan, plan_memory
from extmem.read._selection import Selection, select_dataset
from extmem.xgb._build import MatrixOptions, build_dmatrix
from extmem.xgb._encoded import check_folder
from extmem.xgb._iterator import IterStats
from extmem.xgb._spool import PageSpool

logger = logging.getLogger("extmem")


@dataclass(frozen=True)
class MatrixInfo:
    """How a DMatrix was built: its selection (layout, dropped columns), memory plan, profile, counters and cache."""

    selection: Selection
    plan: MemoryPlan
    profile: DataProfile
    stats: IterStats
    cache: PrivateFolder
    spool: PageSpool | None = None
    """The rows as encoded pages, kept on disk for predictions when asked for (``keep_spool``)."""

    @property
    def layout(self) -> FeatureLayout:
        return self.selection.layout


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


def plan_matrix(selection: Selection, options: MatrixOptions, *, cuts_given: bool = False) -> tuple[MemoryPlan, DataProfile]:
    """The memory plan for reading ``selection`` with ``options`` (sizes from them are the largest allowed), and the profile it rests on.

    ``cuts_given``: the quantile cuts come from a reference matrix, so nothing is sketched.
    """
    label_map = selection.layout.label_map
    budget = Budget.resolve(options.memory_budget)
    measured = profile(selection, outputs=len(label_map) if label_map else 1, max_bin=options.max_bin, budget=budget)
    cache = "disk" if options.sparse_pages else options.cache
    plan = plan_memory(
        measured,
        budget,
        batch_rows=selection.dataset.batch_rows,
        page_rows=options.page_rows,
        prefetch=options.prefetch,
        cache=cache,  # type: ignore[arg-type]
        sketch_rows=options.sketch_rows,
        cuts="given" if cuts_given else "own" if options.sparse_pages else "sampled",
    )
    return plan, measured


def open_matrix(
    dataset: Dataset,
    cache: PrivateFolder,
    options: MatrixOptions,
    *,
    layout: FeatureLayout | None = None,
    ref: xgb.DMatrix | None = None,
    on_rows: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    announce: bool = True,
    keep_spool: bool = False,
) -> tuple[xgb.DMatrix, MatrixInfo]:
    """Read ``dataset`` (with ``layout``, or the layout of ``ref``) into a DMatrix cached in ``cache``.

    Batch rows, page rows and the cache kind follow a memory plan for ``options.memory_budget``
    (see :func:`plan_matrix`), which is logged before reading starts. On any error the cache
    folder is deleted before the error propagates. ``on_rows`` hears of the rows read, once
    each; ``on_total`` of the rows to read (from the metadata: a filter may leave fewer).
    ``keep_spool``: keep the page spool (see :func:`build_dmatrix`) in ``info.spool``.
    """
    if layout is None and ref is not None:
        layout = matrix_info(ref).layout
    try:
        if options.encoded_cache is not None:
            check_folder(options.encoded_cache)
        selection = select_dataset(dataset, layout=layout, announce=announce)
        if on_total is not None:
            on_total(selection.expected_rows)
        plan, measured = plan_matrix(selection, options, cuts_given=ref is not None)
        logger.info(plan.describe(), extra={"options": ("memory_budget", "sketch_rows")})
        sketch_rows = plan.sketch_rows if options.sample_cuts is None else options.sketch_rows
        build = replace(options, page_rows=plan.page_rows, cache=plan.cache, sketch_rows=sketch_rows)
        matrix, stats, spool = build_dmatrix(
            selection, cache, build, batch_rows=plan.batch_rows, ref=ref, on_rows=on_rows, keep_spool=keep_spool
        )
    except BaseException:
        cache.cleanup()
        raise
    release_freed_memory()  # what reading held, handed back before XGBoost trains from the matrix
    info = MatrixInfo(selection, plan, measured, stats, cache, spool)
    _INFO[matrix] = info
    return matrix, info


_XGBOOST_KEYWORDS_NOT_TAKEN = {
    "group": "give each row's query id in a column named by 'qid'",
    "base_margin": "extmem reads no per-row margins; train on top of a model with xgb.train(..., xgb_model=booster) instead",
    "label_lower_bound": "extmem reads no label bounds (survival:aft); use survival:cox",
    "label_upper_bound": "extmem reads no label bounds (survival:aft); use survival:cox",
    "feature_weights": "set them on the matrix it returns, matrix.set_info(feature_weights=...)",
    "silent": "XGBoost itself no longer takes it; leave it out",
    "data_split_mode": "extmem splits rows only (one matrix per worker in extmem.train_distributed)",
}
"""Keywords of ``xgboost.DMatrix`` that :func:`dmatrix` does not take, with what to do instead."""


@takes_dataset_options(passed_on=tuple(_XGBOOST_KEYWORDS_NOT_TAKEN))
def dmatrix(
    data: DatasetLike,
    label: str | None = None,
    *,
    ref: xgb.DMatrix | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    page_rows: int | None = None,
    max_bin: int | None = None,
    sparse_pages: bool = False,
    sketch_rows: int | None = None,
    seed: int = 0,
    spool: bool = True,
    prefetch: int = DEFAULT_PREFETCH,
    cache: str = "auto",
    memory_budget: int | str | None = None,
    missing: float = math.nan,
    enable_categorical: bool | None = None,
    feature_names: Sequence[str] | None = None,
    feature_types: Sequence[str] | None = None,
    nthread: int | None = None,
    max_quantile_batches: int | None = None,
    encoded_cache: str | os.PathLike[str] | None = None,
    **options: Any,
) -> xgb.DMatrix:
    """An XGBoost matrix for a parquet dataset, for use in existing XGBoost code.

    Returns an ``ExtMemQuantileDMatrix`` or ``QuantileDMatrix`` (train with ``tree_method="hist"``),
    or with ``sparse_pages=True`` a paged external-memory ``DMatrix`` (for ``approx``). Pass
    ``ref=dtrain`` for validation data: it then uses the training matrix's columns and quantile
    cuts. Without ``ref``, the quantile cuts are XGBoost's own, from all rows, when its sketch
    of them fits the memory plan; otherwise (or above ``sketch_rows`` rows, if given) they come
    from the largest sample of row groups, or spooled pages, that fits, drawn uniformly at random
    (``seed``). ``data`` is a path (folder, glob, file, list) or a :class:`Dataset`;
    ``label`` and ``options`` are :class:`Dataset` fields (``preset``, ``features``, ``drop``,
    ``filter``, ``max_rows``, ``batch_rows``, ``label_map``...) applied over it. The cache
    files live in a private folder under ``cache_dir`` (default: the system temp folder),
    removed when the DMatrix is freed. ``spool`` keeps the first pass's pages for XGBoost's
    later passes instead of decoding the parquet again (default: on; False saves its disk space).
    ``cache`` is ``"disk"`` (external memory), ``"memory"`` (an in-memory ``QuantileDMatrix``
    from the same stream) or ``"auto"``: memory when the quantized matrix fits ``memory_budget``
    (default: the process's data limit, else the available RAM) with room to spare. Under a
    budget, ``batch_rows`` and ``page_rows`` are the largest sizes allowed. ``page_rows`` None
    plans the pages: the largest that fit the budget, since XGBoost keeps state per page; without
    one, the largest built in under 256 MiB (XGBoost's cost per round grows with its pages). ``prefetch`` pages are read ahead in a background thread.
    ``missing``, ``enable_categorical``, ``feature_names``, ``feature_types``, ``nthread`` and
    ``max_quantile_batches`` are XGBoost's matrix keywords with XGBoost's meaning (a null is
    always missing; categorical features are those of the dataset's ``categorical`` option, and
    ``enable_categorical=False`` refuses them). :func:`DMatrix`, :func:`ExtMemQuantileDMatrix`
    and :func:`QuantileDMatrix` name the three kinds as XGBoost does, for one-line swaps.
    ``encoded_cache``: a folder (created if absent) where the rows, once read and encoded, are
    kept; a later call on the same shards (same sizes and modification times) with the same
    options replays them (in the largest kept pages its memory plan allows) instead of reading
    the parquet, as LightGBM's binary dataset does. Entries appear whole or not at all; extmem deletes only damaged ones.
    """
    unsupported = sorted(set(options) & set(_XGBOOST_KEYWORDS_NOT_TAKEN))
    if unsupported:
        name = unsupported[0]
        raise OptionError(
            f"XGBoost's matrix keyword '{name}' is not one extmem.dmatrix takes: {_XGBOOST_KEYWORDS_NOT_TAKEN[name]}.", options=(name,)
        )
    if label is not None:
        options = {**options, "label": label}
    dataset = as_dataset(data, options)
    build = MatrixOptions(
        page_rows,
        max_bin,
        sparse_pages,
        sketch_rows,
        seed,
        spool,
        prefetch,
        cache,
        memory_budget,
        missing=missing,
        enable_categorical=enable_categorical,
        feature_names=None if feature_names is None else tuple(feature_names),
        feature_types=None if feature_types is None else tuple(feature_types),
        nthread=nthread,
        max_quantile_batches=max_quantile_batches,
        encoded_cache=None if encoded_cache is None else os.fspath(encoded_cache),
    )
    matrix, _ = open_matrix(dataset, PrivateFolder(cache_dir), build, ref=ref)
    return matrix


def _is_xgboost_input(data: Any) -> bool:
    """Whether ``data`` is for XGBoost's own matrix classes (arrays, frames, an ``xgboost.DataIter``), not a dataset."""
    paths = data if isinstance(data, (list, tuple)) else [data]
    return bool(paths) and not all(is_dataset(item) for item in paths)  # []: a dataset's error


def DMatrix(data: DatasetLike | Any, label: str | Any = None, **keywords: Any) -> xgb.DMatrix:
    """XGBoost's paged external-memory ``DMatrix``, which ``tree_method="approx"`` needs: :func:`dmatrix` with ``sparse_pages=True``.

    Replaces ``xgboost.DMatrix(iterator, ...)`` in external-memory code; ``keywords`` as for :func:`dmatrix`.
    What XGBoost reads itself (arrays, frames, an ``xgboost.DataIter``) goes to ``xgboost.DMatrix`` unchanged.
    """
    if _is_xgboost_input(data):
        return xgb.DMatrix(data, label, **keywords)
    return dmatrix(data, label, sparse_pages=True, **keywords)


def ExtMemQuantileDMatrix(data: DatasetLike | xgb.DataIter, label: str | None = None, **keywords: Any) -> xgb.DMatrix:
    """XGBoost's ``ExtMemQuantileDMatrix`` (``hist``, pages in extmem's cache folder): :func:`dmatrix` with ``cache="disk"``.

    An ``xgboost.DataIter`` goes to ``xgboost.ExtMemQuantileDMatrix`` unchanged.
    """
    if _is_xgboost_input(data):
        if label is not None:
            msg = "An xgboost.DataIter gives its labels with its batches (input_data(label=...)); 'label' names a column of a dataset."
            raise OptionError(msg, options=("label",))
        return xgb.ExtMemQuantileDMatrix(data, **keywords)
    return dmatrix(data, label, cache="disk", **keywords)


def QuantileDMatrix(data: DatasetLike | Any, label: str | Any = None, **keywords: Any) -> xgb.DMatrix:
    """XGBoost's in-memory ``QuantileDMatrix`` (``hist``), read through the same stream: :func:`dmatrix` with ``cache="memory"``.

    What XGBoost reads itself (arrays, frames, an ``xgboost.DataIter``) goes to ``xgboost.QuantileDMatrix`` unchanged.
    """
    if _is_xgboost_input(data):
        return xgb.QuantileDMatrix(data, label, **keywords)
    return dmatrix(data, label, cache="memory", **keywords)
