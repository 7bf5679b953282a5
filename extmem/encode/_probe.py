"""Probe: the first rows of a selection, read and encoded, measured for the memory plan."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from extmem._contracts import DataProfile
from extmem.encode._blocks import Encoder
from extmem.read._plan import Budget, MemoryPlan, plan_batches
from extmem.read._reader import read_batches
from extmem.read._selection import Selection

logger = logging.getLogger("extmem")

PROBE_ROWS = 256


def profile(selection: Selection, outputs: int = 1, probe_rows: int = PROBE_ROWS) -> DataProfile:
    """Rows and the largest footer from the metadata; Arrow bytes and stored values per row from the first ``probe_rows`` rows."""
    batches = read_batches(selection, probe_rows)
    try:
        raw = next(batches, None)
    finally:
        batches.close()
    if raw is None:
        return DataProfile(selection.rows, 0.0, 0.0, outputs, selection.schema.footer_bytes)
    block = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)(raw)
    decoded = raw.columns.nbytes + (raw.carried.nbytes if raw.carried is not None else 0) + 8 * raw.rows
    return DataProfile(selection.rows, decoded / raw.rows, block.stored_values / block.rows, outputs, selection.schema.footer_bytes)


def plan_pass(
    selection: Selection,
    memory_budget: int | str | None,
    *,
    dense: bool = False,
    extra_bytes: Callable[[DataProfile], int] | None = None,
) -> MemoryPlan:
    """The memory plan of a batch-by-batch pass over ``selection`` (see :func:`plan_batches`), logged.

    ``dense``: the pass turns batches into dense rows of every feature (prune's statistics).
    ``extra_bytes``: what the pass holds besides its batches, given the data's profile.
    """
    measured = profile(selection)
    extra = extra_bytes(measured) if extra_bytes is not None else 0
    if dense:
        measured = replace(measured, stored_values_per_row=len(selection.layout.names))
    plan = plan_batches(measured, Budget.resolve(memory_budget), batch_rows=selection.dataset.batch_rows, extra_bytes=extra)
    logger.info(plan.describe(), extra={"options": ("memory_budget",)})
    return plan
