"""Query ids of a ranking dataset: numbered and checked in order (with one weight per query), batch by batch, and the shards
that share a query, from the footers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from extmem._allocators import release_freed_memory
from extmem._contracts import RawBatch
from extmem.errors import LabelError, OptionError, read_failure
from extmem.read._scan import Schema
from extmem.read._storage import open_parquet


def query_ids(values: pa.Array, column: str, where: str) -> np.ndarray:
    """Query ids as int64 (or text, as objects), refusing nulls and ids that go down within the batch (across batches, see
    :class:`QueryIds`)."""
    if values.null_count:
        raise LabelError(f"The 'qid' column {column!r} has {values.null_count} null value(s) in {where}; every row needs its query.")
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type)
    ids = values.to_numpy(zero_copy_only=False) if text else values.cast(pa.int64()).to_numpy(zero_copy_only=False)
    down = np.flatnonzero(ids[1:] < ids[:-1])
    if down.size:
        _query_order_error(column, ids[down[0]], ids[down[0] + 1], where)
    return ids


def _query_order_error(column: str, before: object, after: object, where: str) -> None:
    before, after = (value.item() if isinstance(value, np.generic) else value for value in (before, after))
    msg = (
        f"The 'qid' column {column!r} goes down from {before!r} to {after!r} in {where}. XGBoost needs each query's rows "
        "together and the query ids in non-decreasing order through the shards (in file-name order); sort the rows by it."
    )
    raise LabelError(msg, options=("qid",))


class QueryIds:
    """The query ids of one pass, batch after batch: refuses ids that go down from one batch to the next, and numbers text
    ids (in non-decreasing order, as integers must be) 0, 1, 2... by query, a query going on into the next batch keeping its number.

    With a ``weight`` column, each query's rows must weigh the same (XGBoost weighs a ranking dataset's queries, not its rows).
    """

    def __init__(self, column: str, weight: str | None = None) -> None:
        self.column = column
        self.weight = weight
        self.last: object = None
        self.last_weight: float | None = None
        self.next_number = 0

    def __call__(self, batch: RawBatch) -> RawBatch:
        ids = batch.qid
        if ids is None:
            return batch
        if self.last is not None and ids[0] < self.last:
            _query_order_error(self.column, self.last, ids[0], batch.where)
        if batch.weight is not None:
            self._check_weights(ids, batch.weight, batch.where)
        if ids.dtype == object:
            going_on = self.last is not None and ids[0] == self.last
            numbers = np.concatenate([[0], np.cumsum(ids[1:] != ids[:-1])]) + self.next_number - int(going_on)
            self.last, self.next_number = ids[-1], int(numbers[-1]) + 1
            return replace(batch, qid=numbers.astype(np.int64))
        self.last = ids[-1]
        return batch

    def _check_weights(self, ids: np.ndarray, weights: np.ndarray, where: str) -> None:
        same_query = ids[1:] == ids[:-1]
        differs = np.flatnonzero(same_query & (weights[1:] != weights[:-1]))
        if differs.size:
            _query_weight_error(self.column, self.weight, ids[differs[0]], weights[differs[0]], weights[differs[0] + 1], where)
        if self.last is not None and ids[0] == self.last and weights[0] != self.last_weight:
            _query_weight_error(self.column, self.weight, ids[0], self.last_weight, weights[0], where)
        self.last_weight = float(weights[-1])


def query_weights(qid: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """One weight per query of rows ordered by query (each query's rows weigh the same; see :class:`QueryIds`)."""
    return weight[np.flatnonzero(np.concatenate([[True], qid[1:] != qid[:-1]]))]


def _query_weight_error(column: str, weight: str | None, query: object, first: object, second: object, where: str) -> None:
    query, first, second = (value.item() if isinstance(value, np.generic) else value for value in (query, first, second))
    msg = (
        f"The 'weight' column {weight!r} gives the rows of query {query!r} (of {column!r}) the weights {first!r} and {second!r} "
        f"in {where}; XGBoost weighs a ranking dataset by query, so each query's rows must weigh the same."
    )
    raise LabelError(msg, options=("weight",))


def query_ranges(schema: Schema, column: str) -> list[tuple[Any, Any] | None]:
    """Each shard's smallest and largest query id in ``column``, from its footer's statistics (or its partition folder's
    value); None where the footer keeps none."""
    ranges: list[tuple[Any, Any] | None] = []
    for shard in schema.shards:
        folder_value = schema.partitions.get(shard, {}).get(column)
        if folder_value is not None:
            ranges.append((folder_value, folder_value))
            continue
        try:
            with open_parquet(shard) as file:
                metadata = file.metadata
                leaves = [metadata.schema.column(j).path for j in range(metadata.num_columns)]  # parquet's columns, not arrow's fields
                index = leaves.index(column) if column in leaves else -1
                found = [metadata.row_group(i).column(index).statistics for i in range(metadata.num_row_groups)] if index >= 0 else []
        except (pa.ArrowException, OSError) as exc:
            raise read_failure(shard, exc) from None
        finally:
            release_freed_memory()
        known = [stats for stats in found if stats is not None and stats.has_min_max]
        ranges.append((min(s.min for s in known), max(s.max for s in known)) if known and len(known) == len(found) else None)
    return ranges


def shards_sharing_queries(schema: Schema, column: str) -> list[list[int]]:
    """The shards (indices, in order) in runs that a query may span, from the footers' statistics of ``column``: a shard
    whose smallest id is the previous shard's largest continues its run. A shard whose footer keeps no statistics is refused."""
    runs: list[list[int]] = []
    previous: tuple[Any, Any] | None = None
    for index, (shard, span) in enumerate(zip(schema.shards, query_ranges(schema, column))):
        if span is None:
            msg = f"The footer of {shard!r} keeps no statistics of the 'qid' column {column!r}: extmem cannot tell which queries it shares with its neighbours."
            raise OptionError(msg, options=("qid",))
        if previous is not None and span[0] <= previous[1]:
            runs[-1].append(index)
        else:
            runs.append([index])
        previous = span
    return runs
