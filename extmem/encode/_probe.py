"""Probe: the first rows of a selection, read and encoded, measured for the memory plan."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from extmem._allocators import process_note
from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_MAX_BIN
from extmem._units import KiB, format_size
from extmem.encode._blocks import Encoder
from extmem.errors import OptionError
from extmem.read._budget import PLANNED_SHARE, Budget
from extmem.read._costs import FOOTER_BYTES_PER_SERIALIZED_BYTE, READER_BYTES_PER_COLUMN
from extmem.read._plan import MemoryPlan, fixed_bytes, plan_batches
from extmem.read._reader import read_batches
from extmem.read._selection import Selection

logger = logging.getLogger("extmem")

PROBE_ROWS = 256
WIDE_PROBE_COLUMNS = 16_384
"""Above this many plain feature columns, the probe reads a first row group (of up to ``WIDE_PROBE_ROWS`` rows) whole, in
column parts, instead of a row batch of every column at once."""
WIDE_PROBE_ROWS = 8192
PROBE_BYTES_PER_COLUMN = 4 * KiB
"""What the wide probe holds per column besides the parsed footer: 55,000 count columns took 220 MiB, 30,000 120 MiB."""


def check_room_to_probe(selection: Selection, budget: Budget | None) -> None:
    """Refuse, before any row is read, a ``budget`` that the process, a shard's parsed footer and the probe's reading fill.

    A footer of tens of thousands of columns parses into hundreds of MiB, and the probe holds a
    little for each column: where an allocation then fails, pyarrow may abort the process.
    """
    if budget is None:
        return
    per_column = PROBE_BYTES_PER_COLUMN if _wide(selection) else READER_BYTES_PER_COLUMN
    held, footer = fixed_bytes(), FOOTER_BYTES_PER_SERIALIZED_BYTE * selection.schema.footer_bytes
    probe = per_column * len(selection.layout.names)
    if held + footer + probe > budget.plannable:
        msg = (
            f"A memory budget of {format_size(budget.bytes)} ({budget.origin}) is too small: before any row is read, "
            f"{format_size(held)} is the process itself{process_note()}, {format_size(footer)} a shard's parsed footer and {format_size(probe)} "
            f"reading the first rows of {len(selection.layout.names):,} features (a plan fills at most {PLANNED_SHARE:.0%} of a budget); "
            "packed shards (extmem pack) read a few columns."
        )
        raise OptionError(msg, options=("memory_budget",))


def _wide(selection: Selection) -> bool:
    """Whether the probe reads a first row group whole, in column parts (more than ``WIDE_PROBE_COLUMNS`` plain columns)."""
    columns = selection.schema.columns
    return sum(1 for name in selection.layout.names if name in columns and not columns[name].packed) > WIDE_PROBE_COLUMNS


def estimated_bins(X: sp.csr_matrix | np.ndarray, max_bin: int | None = None) -> int:
    """XGBoost's histogram bins for features whose distinct values are those of ``X``: a distinct value and one more
    per feature, at least 2 (what XGBoost gives a feature without values), at most ``max_bin`` + 1."""
    most = (max_bin or DEFAULT_MAX_BIN) + 1
    if sp.issparse(X):
        csr = X.tocsr()
        keys = (csr.indices.astype(np.uint64) << np.uint64(32)) | csr.data.astype(np.float32).view(np.uint32).astype(np.uint64)
        distinct = np.bincount((np.unique(keys) >> np.uint64(32)).astype(np.int64), minlength=csr.shape[1])
    else:
        distinct = np.array([np.unique(column[~np.isnan(column)]).size for column in np.asarray(X, dtype=np.float32).T], dtype=np.int64)
    return int(np.clip(distinct + 1, 2, most).sum())


def _counted(parts: Callable[[], Iterator[pa.RecordBatch]], seen: list[int]) -> Iterator[pa.RecordBatch]:
    """The column parts ``parts()`` yields, their bytes and columns added to ``seen``."""
    for part in parts():
        seen[0] += part.nbytes
        seen[1] += part.num_columns
        yield part


def profile(
    selection: Selection, outputs: int = 1, probe_rows: int = PROBE_ROWS, max_bin: int | None = None, budget: Budget | None = None
) -> DataProfile:
    """Rows and the largest footer from the metadata; Arrow bytes, stored values and histogram bins from the first ``probe_rows`` rows.

    Under a ``budget``, one that reading those rows cannot hold is refused first (see :func:`check_room_to_probe`).
    """
    check_room_to_probe(selection, budget)
    features = len(selection.layout.names)
    max_bin = max_bin or DEFAULT_MAX_BIN
    group_rows = max((max(groups, default=0) for groups in selection.schema.shard_row_groups.values()), default=0)
    wide = _wide(selection)
    # a reader per column for a row batch of every column costs ~10 KiB each: very wide row groups come whole, in column parts
    batches = read_batches(selection, probe_rows, whole_rows=min(group_rows, WIDE_PROBE_ROWS) if wide else 0)
    parts = [0, 0]  # bytes and columns of the column parts decoded
    try:
        raw = next(batches, None)
        if raw is None:
            return DataProfile(
                selection.rows, 0.0, 0.0, outputs, selection.schema.footer_bytes, 2 * features, features, max_bin, group_rows
            )
        if raw.parts is not None:
            raw = replace(raw, parts=partial(_counted, raw.parts, parts))
        block = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)(raw)
    finally:
        batches.close()
    carried_bytes, carried_columns = (raw.carried.nbytes, raw.carried.num_columns) if raw.carried is not None else (0, 0)
    decoded = raw.columns.nbytes + parts[0] + carried_bytes + 8 * raw.rows
    bins = estimated_bins(block.X, max_bin)
    # XGBoost gives a categorical feature a bin per category, max_bin aside: the probe's rows see few of them
    bins += sum(max(len(dictionary) - max_bin, 0) for dictionary in selection.layout.categories.values())
    return DataProfile(
        selection.rows,
        decoded / raw.rows,
        block.stored_values / block.rows,
        outputs,
        selection.schema.footer_bytes,
        bins,
        features,
        max_bin,
        group_rows,
        raw.columns.num_columns + parts[1] + carried_columns,
        carried_bytes / raw.rows,
    )


def plan_pass(
    selection: Selection,
    memory_budget: int | str | None,
    *,
    dense: bool = False,
    extra_bytes: Callable[[DataProfile], int] | None = None,
    row_bytes: int = 0,
) -> MemoryPlan:
    """The memory plan of a batch-by-batch pass over ``selection`` (see :func:`plan_batches`), logged.

    ``dense``: the pass turns batches into dense rows of every feature (prune's statistics).
    ``extra_bytes``: what the pass holds besides its batches, given the data's profile;
    ``row_bytes``: what it holds per batch row besides the batch.
    """
    budget = Budget.resolve(memory_budget)
    measured = profile(selection, budget=budget)
    extra = extra_bytes(measured) if extra_bytes is not None else 0
    if dense:
        measured = replace(measured, stored_values_per_row=len(selection.layout.names))
    plan = plan_batches(measured, budget, batch_rows=selection.dataset.batch_rows, extra_bytes=extra, row_bytes=row_bytes)
    logger.info(plan.describe(), extra={"options": ("memory_budget",)})
    return plan
