"""Probe: the first rows of a selection, read and encoded, measured for the memory plan."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_MAX_BIN
from extmem.encode._blocks import Encoder
from extmem.read._plan import Budget, MemoryPlan, plan_batches
from extmem.read._reader import read_batches
from extmem.read._selection import Selection

logger = logging.getLogger("extmem")

PROBE_ROWS = 256


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


def profile(selection: Selection, outputs: int = 1, probe_rows: int = PROBE_ROWS, max_bin: int | None = None) -> DataProfile:
    """Rows and the largest footer from the metadata; Arrow bytes, stored values and histogram bins from the first ``probe_rows`` rows."""
    batches = read_batches(selection, probe_rows)
    try:
        raw = next(batches, None)
    finally:
        batches.close()
    features = len(selection.layout.names)
    max_bin = max_bin or DEFAULT_MAX_BIN
    group_rows = max((max(groups, default=0) for groups in selection.schema.shard_row_groups.values()), default=0)
    if raw is None:
        return DataProfile(selection.rows, 0.0, 0.0, outputs, selection.schema.footer_bytes, 2 * features, features, max_bin, group_rows)
    block = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)(raw)
    decoded = raw.columns.nbytes + (raw.carried.nbytes if raw.carried is not None else 0) + 8 * raw.rows
    bins = estimated_bins(block.X, max_bin)
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
        raw.columns.num_columns + (raw.carried.num_columns if raw.carried is not None else 0),
        (raw.carried.nbytes if raw.carried is not None else 0) / raw.rows,
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
    measured = profile(selection)
    extra = extra_bytes(measured) if extra_bytes is not None else 0
    if dense:
        measured = replace(measured, stored_values_per_row=len(selection.layout.names))
    plan = plan_batches(
        measured, Budget.resolve(memory_budget), batch_rows=selection.dataset.batch_rows, extra_bytes=extra, row_bytes=row_bytes
    )
    logger.info(plan.describe(), extra={"options": ("memory_budget",)})
    return plan
