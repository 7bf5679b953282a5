"""Memory planning: batch rows, page rows, prefetch depth and cache kind that keep a run under a budget.

The plan is a model of the process's data size, which is what ``prlimit --data`` (RLIMIT_DATA)
caps: heap and private writable mappings, resident or not. It adds

* a fixed part: what the process holds now, plus the stacks of the threads XGBoost and pyarrow
  start and the runtime's reservations (BLAS buffers, allocator arenas);
* the footer of the shard being read, parsed (the largest one: many row groups of many columns
  make footers of tens of MiB, several times that once parsed);
* decoding one batch: a multiple of the Arrow bytes per row measured on the first row group;
* building one page: the CSR bytes of a page, held by extmem, by the prefetch queue and by
  XGBoost while it quantizes the page;
* training state: gradients, predictions and row partitions, per row and class;
* the feature space: XGBoost keeps state per histogram bin for every external-memory page
  (so many small pages cost more than a few large ones) and a gradient histogram per tree
  node it caches while it grows a tree (the cost of very wide, hashed feature spaces);
* the quantized matrix itself when it is kept in memory, or the pages XGBoost keeps in flight
  when it reads them from the disk cache.

The constants were measured on a 2-core Linux machine (XGBoost 3.2, pyarrow 26) on wide 6-mer
shards (``python -m bench.budget``); they err high for resident memory, which stays well under
the data size that the kernel's limit counts.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass, replace
from typing import Literal

import psutil

from extmem._allocators import allocators_limited, release_freed_memory
from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_PAGE_ROWS
from extmem._measure import anonymous_rss_bytes
from extmem._units import MiB, format_size, parse_size
from extmem.errors import OptionError

logger = logging.getLogger("extmem")

CacheKind = Literal["auto", "memory", "disk"]

DECODE_BYTES_PER_ARROW_BYTE = 4
"""Peak bytes while pyarrow decodes a batch, per byte of the decoded Arrow columns (measured ~3.6)."""
PAGE_BYTES_PER_VALUE = 28
"""Bytes per stored value while a page is built: blocks and their concatenation (2 x 8) and XGBoost's copy (12)."""
QUEUED_PAGE_BYTES_PER_VALUE = 8
"""Bytes per stored value of a page waiting in the prefetch queue (float32 value + int32 column)."""
MATRIX_BYTES_PER_VALUE = 10
"""Peak bytes per stored value while XGBoost builds its in-memory quantized matrix: 32-bit bin indices
for sparse data, grown batch by batch (measured 9.8 on 640k wide rows)."""
PAGE_MATRIX_BYTES_PER_VALUE = 4
"""Bytes per stored value of one quantized page read back from the disk cache."""
MATRIX_BYTES_PER_ROW = 16
PAGES_IN_FLIGHT = 3
"""Quantized pages XGBoost holds while it trains from the disk cache."""
TRAINING_BYTES_PER_ROW = 8
TRAINING_BYTES_PER_ROW_AND_OUTPUT = 24
"""Gradient pairs (8), the per-class gradient copy, prediction cache and metric buffers (16), per row and model output:
measured 65 bytes per row for 3 classes training alone, 77 with the training metrics (1M rows, XGBoost 3.2)."""
RUNTIME_RESERVE = 320 * MiB
"""Writable mappings beyond the heap and thread stacks: BLAS thread buffers (181 MiB measured) and allocator
segments. Three 640k-row runs under a 1 GiB data limit with 2,048-row batches peaked at 866, 998 and 1,009 MiB
of data where the plan, with 64 MiB less reserve, said 963-972 MiB."""
LIMITED_RUNTIME_RESERVE = 64 * MiB
"""The same with two glibc arenas and pyarrow on the system allocator (as the command line sets up): 925k rows of
1,050 columns peaked at 600 MiB of data in 29 pages (plan: 652 MiB) and 924 MiB in 452 (plan: 825 MiB)."""
PAGE_STATE_BYTES_PER_BIN = 90
"""Bytes XGBoost keeps per histogram bin (as the probe estimates them) for each external-memory page: 925k rows of
1,050 columns (8.9k bins estimated, 10.2k actual) peaked 324 MiB higher in 452 pages of 2,048 rows than in 29 of 32,768."""
HISTOGRAM_BYTES_PER_BIN = 16
"""One gradient histogram: a pair of doubles per bin."""
HISTOGRAM_NODES = 40
"""Histograms XGBoost holds at its peak while it grows a tree (default depth 6): 20k rows hashed to 262k, 1M and
2M features (0.5M to 4.1M bins) peaked 0.9 kB per bin higher, of which 3 pages' state is 0.24 kB."""
TARGET_PAGES = 64
"""Unbudgeted runs size pages so that the data makes about this many (within the page-row limits)."""
UNBUDGETED_PAGE_BYTES = 256 * MiB
"""Unbudgeted runs keep the bytes of building one page under this."""
ARROW_IO_THREADS = 8
FOOTER_BYTES_PER_SERIALIZED_BYTE = 13
"""Data size a parsed parquet footer takes per byte of its serialized form (measured: 300 MiB for a 23.6 MiB footer of 50 row groups x 4,129 columns, of which 204 MiB resident)."""

MIN_BATCH_ROWS = 128
MIN_PAGE_ROWS = 1024
MAX_PAGE_ROWS = 65536
MEMORY_CACHE_SHARE = 0.75
"""``auto`` keeps the quantized matrix in memory only when the whole plan then fits in this share of the budget."""


def data_limit() -> int | None:
    """The process's RLIMIT_DATA soft limit (``prlimit --data``), or None when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_DATA)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True)
class Budget:
    """Bytes a run may use, and where that figure came from."""

    bytes: int
    origin: str

    @classmethod
    def resolve(cls, requested: int | str | None) -> Budget | None:
        """The budget to plan for: ``requested`` (bytes or a size), else the data limit the process runs under.

        A request above the data limit is lowered to it, since the kernel would refuse the rest.
        """
        limit = data_limit()
        if requested is None:
            return cls(limit, "the process's data limit (prlimit --data)") if limit is not None else None
        size = parse_size(requested) if isinstance(requested, str) else int(requested)
        if size <= 0:
            msg = f"The memory budget must be positive, got {requested!r}."
            raise OptionError(msg)
        if limit is not None and limit < size:
            return cls(limit, f"the process's data limit (prlimit --data), below the requested {format_size(size)}")
        return cls(size, "'memory_budget'")


def fixed_bytes() -> int:
    """The process's anonymous memory now plus what its worker threads and runtime will reserve.

    Not its current data size: pyarrow's allocator reserves a 1 GiB arena up front, but makes
    do with far less when the data limit refuses that reservation.
    """
    release_freed_memory()  # freed but untrimmed heap pages would count as held
    now = anonymous_rss_bytes() or psutil.Process().memory_info().rss
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    stack = 8 * MiB if stack == resource.RLIM_INFINITY else int(stack)
    threads = 2 * (os.cpu_count() or 1) + ARROW_IO_THREADS
    return now + threads * stack + (LIMITED_RUNTIME_RESERVE if allocators_limited() else RUNTIME_RESERVE)


@dataclass(frozen=True)
class MemoryPlan:
    """Sizes for one run and the peak they are expected to reach, part by part."""

    batch_rows: int
    page_rows: int
    prefetch: int
    cache: Literal["memory", "disk", "none"]
    reason: str
    fixed_bytes: int
    decode_bytes: int
    page_bytes: int
    training_bytes: int
    matrix_bytes: int
    budget: Budget | None = None
    footer_bytes: int = 0
    feature_space_bytes: int = 0

    @property
    def expected_peak_bytes(self) -> int:
        parts = (self.fixed_bytes, self.footer_bytes, self.decode_bytes, self.page_bytes, self.training_bytes, self.matrix_bytes)
        return sum(parts) + self.feature_space_bytes

    def describe(self) -> str:
        budget = f"budget {format_size(self.budget.bytes)} ({self.budget.origin}); " if self.budget else ""
        if self.cache == "none":
            return (
                f"extmem: memory plan: {budget}batches of {self.batch_rows:,} rows; expected peak {format_size(self.expected_peak_bytes)}"
            )
        return (
            f"extmem: memory plan: {budget}batches of {self.batch_rows:,} rows, pages of {self.page_rows:,} rows, "
            f"prefetch {self.prefetch}; {self.cache} cache ({self.reason}); expected peak {format_size(self.expected_peak_bytes)}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "budget_bytes": self.budget.bytes if self.budget else None,
            "budget_origin": self.budget.origin if self.budget else None,
            "batch_rows": self.batch_rows,
            "page_rows": self.page_rows,
            "prefetch": self.prefetch,
            "cache": self.cache,
            "reason": self.reason,
            "expected_peak_bytes": self.expected_peak_bytes,
            "parts": {
                "fixed": self.fixed_bytes,
                "footer": self.footer_bytes,
                "decode": self.decode_bytes,
                "page": self.page_bytes,
                "training": self.training_bytes,
                "matrix": self.matrix_bytes,
                "feature_space": self.feature_space_bytes,
            },
        }


def _footer_bytes(profile: DataProfile) -> int:
    return FOOTER_BYTES_PER_SERIALIZED_BYTE * profile.footer_bytes


def _decode_bytes(profile: DataProfile, batch_rows: int) -> int:
    return int(DECODE_BYTES_PER_ARROW_BYTE * profile.arrow_bytes_per_row * batch_rows)


def _page_bytes(profile: DataProfile, page_rows: int, prefetch: int) -> int:
    per_value = PAGE_BYTES_PER_VALUE + prefetch * QUEUED_PAGE_BYTES_PER_VALUE
    return int(per_value * profile.stored_values_per_row * page_rows)


def _matrix_bytes(profile: DataProfile, cache: str, page_rows: int) -> int:
    if cache == "memory":
        return int(profile.rows * (MATRIX_BYTES_PER_VALUE * profile.stored_values_per_row + MATRIX_BYTES_PER_ROW))
    return int(PAGES_IN_FLIGHT * page_rows * (PAGE_MATRIX_BYTES_PER_VALUE * profile.stored_values_per_row + MATRIX_BYTES_PER_ROW))


def _feature_space_bytes(profile: DataProfile, page_rows: int) -> int:
    """Per-bin state of every page, and the histograms of the tree nodes XGBoost caches."""
    pages = -(-profile.rows // page_rows)
    return profile.bins * (pages * PAGE_STATE_BYTES_PER_BIN + HISTOGRAM_NODES * HISTOGRAM_BYTES_PER_BIN)


def unbudgeted_page_rows(profile: DataProfile) -> int:
    """Page rows for a run without a budget: about ``TARGET_PAGES`` pages, each built in under ``UNBUDGETED_PAGE_BYTES``."""
    by_count = -(-profile.rows // TARGET_PAGES)
    by_bytes = int(UNBUDGETED_PAGE_BYTES / max(1.0, PAGE_BYTES_PER_VALUE * profile.stored_values_per_row))
    rows = max(DEFAULT_PAGE_ROWS, min(by_count, by_bytes))
    return min(MAX_PAGE_ROWS, -(-rows // MIN_PAGE_ROWS) * MIN_PAGE_ROWS)


def _shrinking(largest: int, smallest: int) -> list[int]:
    """``largest``, then sizes about 3/4 of the one before, in multiples of ``smallest``, down to ``smallest``.

    Steps of 3/4 rather than halves: for wide shards a batch half the size decodes markedly slower.
    """
    sizes = [largest]
    while sizes[-1] > smallest:
        sizes.append(max(smallest, sizes[-1] * 3 // 4 // smallest * smallest))
    return sizes


def _refusal(budget: Budget, smallest: MemoryPlan, detail: str = "") -> OptionError:
    return OptionError(
        f"A memory budget of {format_size(budget.bytes)} ({budget.origin}) cannot hold even one minimal batch: "
        f"{smallest.batch_rows:,} rows per batch"
        + (f" and {smallest.page_rows:,} per page" if smallest.cache != "none" else "")
        + f" need about {format_size(smallest.expected_peak_bytes)}, of which {format_size(smallest.fixed_bytes)} is the process itself"
        + (f" and {format_size(smallest.footer_bytes)} a shard's footer" if smallest.footer_bytes else "")
        + (
            f" and {format_size(smallest.feature_space_bytes)} XGBoost's state for the feature space (fewer features or a narrower hash fit better)"
            if smallest.feature_space_bytes > smallest.page_bytes
            else ""
        )
        + f"{detail}.",
        options=("memory_budget", "cache"),
    )


def plan_batches(
    profile: DataProfile, budget: Budget | None, *, batch_rows: int, extra_bytes: int = 0, fixed: int | None = None
) -> MemoryPlan:
    """Batch rows for a pass that handles rows batch by batch without an XGBoost matrix (predict, evaluate, prune).

    ``batch_rows`` is the largest allowed; under a budget it shrinks until the plan fits.
    ``extra_bytes`` is what the pass holds besides its batches (prune's row sample and correlations).
    """
    fixed = fixed_bytes() if fixed is None else fixed

    batch_rows = min(batch_rows, max(profile.rows, MIN_BATCH_ROWS))

    def build(batch: int) -> MemoryPlan:
        block = int(PAGE_BYTES_PER_VALUE * profile.stored_values_per_row * batch)
        footer = _footer_bytes(profile)
        return MemoryPlan(batch, batch, 0, "none", "", fixed, _decode_bytes(profile, batch), block, 0, extra_bytes, budget, footer)

    if budget is None:
        return build(batch_rows)
    for batch in _shrinking(batch_rows, MIN_BATCH_ROWS):
        plan = build(batch)
        if plan.expected_peak_bytes <= budget.bytes:
            return plan
    raise _refusal(budget, build(min(batch_rows, MIN_BATCH_ROWS)))


def plan_memory(
    profile: DataProfile,
    budget: Budget | None,
    *,
    batch_rows: int,
    page_rows: int | None = None,
    prefetch: int = 1,
    cache: CacheKind = "auto",
    fixed: int | None = None,
) -> MemoryPlan:
    """Choose sizes and a cache kind for ``profile`` under ``budget``.

    ``batch_rows`` and ``page_rows`` are the largest sizes allowed (``page_rows`` None: up to
    ``MAX_PAGE_ROWS`` under a budget, :func:`unbudgeted_page_rows` without one); under a budget
    they shrink in steps of about 3/4 (batches first, down to ``MIN_BATCH_ROWS``; then pages, to
    ``MIN_PAGE_ROWS``) until the plan fits: the largest pages that fit, as XGBoost's state per
    page makes many small pages cost more than few large ones. ``cache="auto"`` sizes the plan for the disk cache, then keeps the
    quantized matrix in memory instead if the plan with it still fits in ``MEMORY_CACHE_SHARE``
    of the budget (of the available RAM without one). Raises :class:`OptionError` when nothing fits.
    """
    fixed = fixed_bytes() if fixed is None else fixed
    training = int(profile.rows * (TRAINING_BYTES_PER_ROW + TRAINING_BYTES_PER_ROW_AND_OUTPUT * profile.outputs))
    if page_rows is None:
        page_rows = MAX_PAGE_ROWS if budget is not None else unbudgeted_page_rows(profile)
    page_rows = min(page_rows, MAX_PAGE_ROWS, max(profile.rows, MIN_PAGE_ROWS))
    batch_rows = min(batch_rows, page_rows)
    limit = budget.bytes if budget is not None else None

    def build(kind: Literal["memory", "disk"], batch: int, page: int, reason: str) -> MemoryPlan:
        return MemoryPlan(
            batch,
            page,
            prefetch,
            kind,
            reason,
            fixed,
            _decode_bytes(profile, batch),
            _page_bytes(profile, page, prefetch),
            training,
            _matrix_bytes(profile, kind, page),
            budget,
            _footer_bytes(profile),
            _feature_space_bytes(profile, page),
        )

    def fitting(kind: Literal["memory", "disk"], room: float | None, reason: str) -> MemoryPlan | None:
        """The plan with the largest sizes whose peak is within ``room`` (the given sizes when None)."""
        if room is None:
            return build(kind, batch_rows, page_rows, reason)
        for page in _shrinking(page_rows, MIN_PAGE_ROWS):
            for batch in _shrinking(min(batch_rows, page), MIN_BATCH_ROWS):
                plan = build(kind, batch, page, reason)
                if plan.expected_peak_bytes <= room:
                    return plan
        return None

    if cache != "auto":
        plan = fitting(cache, limit, "asked for")
    else:
        plan = fitting("disk", limit, "")
        if plan is not None:
            in_memory = build("memory", plan.batch_rows, plan.page_rows, "")
            room = (limit if limit is not None else psutil.virtual_memory().available) * MEMORY_CACHE_SHARE
            where = "the budget" if limit is not None else "the available RAM"
            size = format_size(in_memory.matrix_bytes)
            if in_memory.expected_peak_bytes <= room:
                plan = replace(in_memory, reason=f"the quantized matrix, about {size}, fits {where} with room to spare")
            else:
                plan = replace(plan, reason=f"the quantized matrix, about {size}, would crowd {where}")
    if plan is None:
        assert budget is not None
        smallest = build("disk" if cache != "memory" else "memory", min(batch_rows, MIN_BATCH_ROWS), min(page_rows, MIN_PAGE_ROWS), "")
        detail = f" and {format_size(smallest.matrix_bytes)} the in-memory matrix (try 'cache' disk)" if cache == "memory" else ""
        raise _refusal(budget, smallest, detail)
    return plan
