"""Memory planning: batch rows, page rows, prefetch depth, cache kind and quantile-cut sample that keep a run under a budget.

The plan is a model of the process's data size, which is what ``prlimit --data`` (RLIMIT_DATA)
caps; the model's parts and their measured constants are in :mod:`extmem.read._costs`. Planning
searches sizes from the largest allowed down until the expected peak fits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import psutil

from extmem._allocators import (
    allocators_limited,
    heap_free_bytes,
    process_note,
    release_freed_memory,
    running_threads,
    thread_stack_bytes,
)
from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_PAGE_ROWS
from extmem._measure import anonymous_rss_bytes, data_bytes
from extmem._units import format_size
from extmem.errors import OptionError
from extmem.read._budget import PLANNED_SHARE, Budget, data_limit
from extmem.read._costs import (
    LIMITED_RUNTIME_RESERVE,
    MIN_SKETCH_ROWS,
    PAGE_BYTES_PER_VALUE,
    RUNTIME_RESERVE,
    TRAINING_BYTES_PER_ROW,
    TRAINING_BYTES_PER_ROW_AND_OUTPUT,
    UNBUDGETED_PAGE_BYTES,
    UNBUDGETED_PASS_BYTES,
    UNBUDGETED_SKETCH_BYTES,
    decode_bytes,
    feature_space_bytes,
    footer_bytes,
    matrix_bytes,
    page_bytes,
    sketch_bytes,
)

logger = logging.getLogger("extmem")

CacheKind = Literal["auto", "memory", "disk"]


MIN_BATCH_ROWS = 128
FAST_BATCH_ROWS = 2048
"""Batches of this many rows decode a wide shard about twice as fast per row as 512 (4,122 columns: 8.0k rows/s
against 3.9k); the plan gives up page size for them before it gives up batch size for pages."""
MIN_PAGE_ROWS = 1024
MAX_PAGE_ROWS = 65536
MEMORY_CACHE_SHARE = 0.75
"""``auto`` keeps the quantized matrix in memory only when the whole plan then fits in this share of the budget."""


def fixed_bytes() -> int:
    """What the process holds before any data, plus what its worker threads and runtime will add.

    Under a data limit, its data size now, which the kernel counts (library buffers, arena
    space mapped but untouched, the stacks of the threads already running), less the free space
    inside the heap that the next allocations reuse (a parsed footer's, freed), plus the stacks
    of the threads yet to start. Otherwise its anonymous memory now plus every thread's stack:
    pyarrow's allocator may reserve a large arena up front that it makes do without when a
    data limit refuses it.
    """
    release_freed_memory()  # freed but untrimmed heap pages would count as held
    reserve = LIMITED_RUNTIME_RESERVE if allocators_limited() else RUNTIME_RESERVE
    data = data_bytes() if data_limit() is not None else 0
    if data:
        return data - heap_free_bytes() + thread_stack_bytes(running_threads()) + reserve
    now = anonymous_rss_bytes() or psutil.Process().memory_info().rss
    return now + thread_stack_bytes() + reserve


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
    sketch_bytes: int = 0
    sketch_rows: int | None = None
    """Rows the quantile cuts come from: None for all rows (XGBoost's own cuts), else a uniform sample of about that many."""
    cuts: str = "quantile cuts from all rows"
    """Where the quantile cuts come from, in words."""

    @property
    def whole_row_groups(self) -> bool:
        """Whether a pass without a matrix reads row groups of up to ``page_rows`` rows whole, in column parts (see :func:`plan_batches`)."""
        return self.cache == "none" and self.page_rows > self.batch_rows

    @property
    def reading_bytes(self) -> int:
        """The process, a shard's footer, decoding a batch and building a page: held through every pass."""
        return self.fixed_bytes + self.footer_bytes + self.decode_bytes + self.page_bytes

    @property
    def expected_peak_bytes(self) -> int:
        """Reading, plus the larger of the sketch (built first) and what training holds (after it)."""
        return self.reading_bytes + max(self.sketch_bytes, self.training_bytes + self.matrix_bytes + self.feature_space_bytes)

    def describe(self) -> str:
        budget = f"budget {format_size(self.budget.bytes)} ({self.budget.origin}); " if self.budget else ""
        if self.cache == "none":
            whole = f" (row groups of up to {self.page_rows:,} rows whole, in column parts)" if self.whole_row_groups else ""
            return (
                f"extmem: memory plan: {budget}batches of {self.batch_rows:,} rows{whole}; "
                f"expected peak {format_size(self.expected_peak_bytes)}"
            )
        return (
            f"extmem: memory plan: {budget}batches of {self.batch_rows:,} rows, pages of {self.page_rows:,} rows, "
            f"prefetch {self.prefetch}; {self.cache} cache ({self.reason}); {self.cuts}; "
            f"expected peak {format_size(self.expected_peak_bytes)}"
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
            "sketch_rows": self.sketch_rows,
            "expected_peak_bytes": self.expected_peak_bytes,
            "parts": {
                "fixed": self.fixed_bytes,
                "footer": self.footer_bytes,
                "decode": self.decode_bytes,
                "page": self.page_bytes,
                "training": self.training_bytes,
                "matrix": self.matrix_bytes,
                "feature_space": self.feature_space_bytes,
                "sketch": self.sketch_bytes,
            },
        }


def unbudgeted_page_rows(profile: DataProfile) -> int:
    """Page rows for a run without a budget: the largest pages (up to ``MAX_PAGE_ROWS``) built in under ``UNBUDGETED_PAGE_BYTES``.

    XGBoost reads every page of its disk cache at each level of each tree, at a cost per page:
    160k rows of 4,122 columns boost at 0.186 s a round in 8 pages, 0.141 s in 3 (0.082 s in memory).
    """
    by_bytes = int(UNBUDGETED_PAGE_BYTES / max(1.0, PAGE_BYTES_PER_VALUE * profile.stored_values_per_row))
    rows = max(DEFAULT_PAGE_ROWS, min(profile.rows, by_bytes))
    return min(MAX_PAGE_ROWS, -(-rows // MIN_PAGE_ROWS) * MIN_PAGE_ROWS)


def sketch_sample(profile: DataProfile, room: float, requested: int | None) -> int | None:
    """Rows to take the quantile cuts from: None for all of them when their sketch fits ``room``, else the largest sample that does.

    ``requested``: sample above that many rows, whatever the room. The smallest sample is
    ``MIN_SKETCH_ROWS``, fitting or not.
    """
    if requested is not None:
        return requested if profile.rows > requested else None
    if profile.rows <= MIN_SKETCH_ROWS or sketch_bytes(profile, profile.rows) <= room:
        return None
    rows = 1 << (profile.rows - 1).bit_length() - 1
    while rows > MIN_SKETCH_ROWS and sketch_bytes(profile, rows) > room:
        rows //= 2
    return max(rows, MIN_SKETCH_ROWS)


def _shrinking(largest: int, smallest: int) -> list[int]:
    """``largest``, then sizes about 3/4 of the one before, in multiples of ``smallest``, down to ``smallest``.

    Steps of 3/4 rather than halves: for wide shards a batch half the size decodes markedly slower.
    """
    sizes = [largest]
    while sizes[-1] > smallest:
        sizes.append(max(smallest, sizes[-1] * 3 // 4 // smallest * smallest))
    return sizes


def _refusal(budget: Budget, least: MemoryPlan, profile: DataProfile, detail: str = "") -> OptionError:
    """The refusal of ``budget``, quoting the plan of least peak that was tried and its largest parts."""
    parts = [f"{format_size(least.fixed_bytes)} is the process itself{process_note()}"]
    if least.footer_bytes:
        parts.append(f"{format_size(least.footer_bytes)} a shard's footer")
    if least.decode_bytes > max(least.page_bytes, least.fixed_bytes // 2):  # a reader for each of thousands of columns
        parts.append(f"{format_size(least.decode_bytes)} decoding a batch of {profile.columns:,} columns (packed shards decode two)")
    if least.feature_space_bytes > least.page_bytes:
        pages = least.feature_space_bytes > 2 * feature_space_bytes(profile, profile.rows)  # the per-page state dominates
        better = "fewer, larger pages ('page_rows')" if pages else "fewer features, categories or hash buckets"
        parts.append(f"{format_size(least.feature_space_bytes)} XGBoost's state for the feature space ({better} fit better)")
    if least.sketch_bytes > least.page_bytes:
        sampled = "all" if least.sketch_rows is None else f"{least.sketch_rows:,}"
        parts.append(f"{format_size(least.sketch_bytes)} XGBoost's quantile sketch of {sampled} rows")
    if least.cache == "none" and least.matrix_bytes > least.page_bytes:  # a pass without a matrix: what it holds besides its batches
        parts.append(
            f"{format_size(least.matrix_bytes)} what the pass holds besides its batches (its output's row group and metadata, sums)"
        )
    sizes = f"{least.batch_rows:,} rows per batch"
    if least.cache != "none":
        sizes += f" and {least.page_rows:,} per page"
    elif least.whole_row_groups:
        sizes += f", row groups of up to {least.page_rows:,} whole"
    return OptionError(
        f"A memory budget of {format_size(budget.bytes)} ({budget.origin}) is too small: the leanest plan ({sizes}) "
        f"needs about {format_size(least.expected_peak_bytes)} (a plan fills at most {PLANNED_SHARE:.0%} of a budget), "
        f"of which {' and '.join(parts)}{detail}.",
        options=("memory_budget", "cache", "page_rows"),
    )


def plan_batches(
    profile: DataProfile,
    budget: Budget | None,
    *,
    batch_rows: int,
    extra_bytes: int = 0,
    row_bytes: int = 0,
    fixed: int | None = None,
) -> MemoryPlan:
    """Batch rows for a pass that handles rows batch by batch without an XGBoost matrix (predict, evaluate, prune, explain).

    ``batch_rows`` is the largest allowed; under a budget it shrinks until the plan fits. The plan's
    ``page_rows`` are the most rows the pass handles at once: its batches', or its largest row group's
    where reading row groups whole, in column parts, holds less (pass it as ``read_batches``' ``whole_rows``).
    ``extra_bytes`` is what the pass holds besides its batches (prune's row sample and correlations);
    ``row_bytes`` what it holds per batch row besides the batch's features (explain's contributions):
    without a budget, batches keep that under ``UNBUDGETED_PASS_BYTES``.
    """
    fixed = fixed_bytes() if fixed is None else fixed
    batch_rows = min(batch_rows, max(profile.rows, MIN_BATCH_ROWS))
    if budget is None and row_bytes:
        batch_rows = min(batch_rows, max(MIN_BATCH_ROWS, UNBUDGETED_PASS_BYTES // row_bytes))

    def build(batch: int, block_rows: int) -> MemoryPlan:
        block = int(PAGE_BYTES_PER_VALUE * profile.stored_values_per_row * block_rows) + row_bytes * block_rows
        decode = decode_bytes(profile, batch, whole_rows=block_rows)
        return MemoryPlan(batch, block_rows, 0, "none", "", fixed, decode, block, 0, extra_bytes, budget, footer_bytes(profile))

    def leanest(batch: int) -> MemoryPlan:
        """Row batches, or whole row groups in column parts where that holds less (wide data: no reader per column)."""
        in_batches = build(batch, batch)
        if profile.row_group_rows <= batch:
            return in_batches
        return min(build(batch, profile.row_group_rows), in_batches, key=lambda plan: plan.expected_peak_bytes)

    if budget is None:
        return leanest(batch_rows)
    for batch in _shrinking(batch_rows, MIN_BATCH_ROWS):
        plan = leanest(batch)
        if plan.expected_peak_bytes <= budget.plannable:
            return plan
    raise _refusal(budget, leanest(min(batch_rows, MIN_BATCH_ROWS)), profile)  # the smallest batch is the leanest plan


def plan_memory(
    profile: DataProfile,
    budget: Budget | None,
    *,
    batch_rows: int,
    page_rows: int | None = None,
    prefetch: int = 1,
    cache: CacheKind = "auto",
    sketch_rows: int | None = None,
    cuts: Literal["own", "sampled", "given"] = "sampled",
    fixed: int | None = None,
) -> MemoryPlan:
    """Choose sizes, a cache kind and where the quantile cuts come from for ``profile`` under ``budget``.

    ``batch_rows`` and ``page_rows`` are the largest sizes allowed (``page_rows`` None: up to
    ``MAX_PAGE_ROWS`` under a budget, :func:`unbudgeted_page_rows` without one); under a budget
    they shrink in steps of about 3/4 (batches down to ``MIN_BATCH_ROWS``, pages to
    ``MIN_PAGE_ROWS``) until the plan fits: batches of ``FAST_BATCH_ROWS`` where any page size
    allows them, then the largest pages, as XGBoost's state per page makes many small pages cost
    more than few large ones. ``cache="auto"`` sizes the plan for the disk cache, then keeps the
    quantized matrix in memory instead if the plan with it still fits in ``MEMORY_CACHE_SHARE``
    of the budget (of the available RAM without one). ``cuts``: ``"sampled"`` sketches all rows
    when that fits (the budget; without one, ``UNBUDGETED_SKETCH_BYTES``) and the largest
    sample that fits otherwise (above ``sketch_rows`` rows, if given, always a sample of that
    many); ``"own"`` always sketches all rows (XGBoost's paged matrix for ``approx``); ``"given"``
    sketches nothing (the cuts of a reference matrix). Raises :class:`OptionError` when nothing fits.
    """
    fixed = fixed_bytes() if fixed is None else fixed
    training = int(profile.rows * (TRAINING_BYTES_PER_ROW + TRAINING_BYTES_PER_ROW_AND_OUTPUT * profile.outputs))
    if page_rows is None:
        page_rows = MAX_PAGE_ROWS if budget is not None else unbudgeted_page_rows(profile)
    page_rows = min(page_rows, MAX_PAGE_ROWS, max(profile.rows, MIN_PAGE_ROWS))
    batch_rows = min(batch_rows, page_rows)
    limit = budget.plannable if budget is not None else None
    ram = Budget(psutil.virtual_memory().available, "the RAM available; a larger 'memory_budget' tries anyway")
    available = ram.bytes * MEMORY_CACHE_SHARE

    def build(kind: Literal["memory", "disk"], batch: int, page: int, reason: str) -> MemoryPlan:
        plan = MemoryPlan(
            batch,
            page,
            prefetch,
            kind,
            reason,
            fixed,
            decode_bytes(profile, batch, page // 2),
            page_bytes(profile, page, prefetch),
            training,
            matrix_bytes(profile, kind, page),
            budget,
            footer_bytes(profile),
            feature_space_bytes(profile, page),
        )
        if cuts == "given":
            return replace(plan, cuts="quantile cuts of the reference matrix")
        sample = None
        if cuts == "sampled":
            room = limit - plan.reading_bytes if limit is not None else min(available, UNBUDGETED_SKETCH_BYTES)
            sample = sketch_sample(profile, room, sketch_rows)
        if sample is None:
            return replace(plan, sketch_bytes=sketch_bytes(profile, profile.rows))
        why = "'sketch_rows'" if sketch_rows is not None else "the sketch of all rows would not fit"
        described = f"quantile cuts from a sample of about {sample:,} rows ({why})"
        return replace(plan, sketch_rows=sample, sketch_bytes=sketch_bytes(profile, sample), cuts=described)

    def fitting(kind: Literal["memory", "disk"], room: float | None, reason: str) -> tuple[MemoryPlan | None, MemoryPlan]:
        """The best plan whose peak is within ``room`` (the given sizes when None), and the least-peak plan tried.

        Best: batches of ``FAST_BATCH_ROWS`` if any page size allows them (smaller batches of wide
        shards decode markedly slower), then the largest pages, then the largest batches.
        """
        if room is None:
            plan = build(kind, batch_rows, page_rows, reason)
            return plan, plan
        fast = min(batch_rows, FAST_BATCH_ROWS)
        best: MemoryPlan | None = None
        least: MemoryPlan | None = None
        for page in _shrinking(page_rows, MIN_PAGE_ROWS):
            for batch in _shrinking(min(batch_rows, page), MIN_BATCH_ROWS):
                plan = build(kind, batch, page, reason)
                if least is None or plan.expected_peak_bytes < least.expected_peak_bytes:
                    least = plan
                if plan.expected_peak_bytes <= room:
                    if best is None or (min(batch, fast), page, batch) > (min(best.batch_rows, fast), best.page_rows, best.batch_rows):
                        best = plan
                    break  # smaller batches of this page size only rank lower
        assert least is not None
        return best, least

    if cache != "auto":
        plan, least = fitting(cache, limit, "asked for")
    else:
        plan, least = fitting("disk", limit, "")
        if plan is not None:
            in_memory = build("memory", plan.batch_rows, plan.page_rows, "")
            room = limit * MEMORY_CACHE_SHARE if limit is not None else available
            where = "the budget" if limit is not None else "the available RAM"
            size = format_size(in_memory.matrix_bytes)
            if in_memory.expected_peak_bytes <= room:
                plan = replace(in_memory, reason=f"the quantized matrix, about {size}, fits {where} with room to spare")
            else:
                plan = replace(plan, reason=f"the quantized matrix, about {size}, would crowd {where}")
    if plan is None:
        assert budget is not None
        detail = f" and {format_size(least.matrix_bytes)} the in-memory matrix (try 'cache' disk)" if cache == "memory" else ""
        raise _refusal(budget, least, profile, detail)
    if budget is None and plan.expected_peak_bytes > ram.bytes:  # sizes given that no machine of this size holds
        raise _refusal(ram, plan, profile)
    return plan
