"""Read: a :class:`Selection` -> :class:`RawBatch`es, row group by row group, in shard order.

Each shard's footer is parsed once per pass and freed before the next shard is opened (a wide
shard's parsed footer is large, see :mod:`extmem.read._scan`). Row groups whose statistics
cannot match the filter are skipped unread; only the columns a shard contributes are decoded.
Row groups come in row batches of every column, or, when the caller allows whole row groups,
whole: their other columns first, their plain numeric feature columns as parts of a few hundred
columns decoded when the encoder asks for them, which decodes wide shards several times faster
in no more memory than a batch of every column.
Labels leave as class ids or finite float32 values, weights as finite float32 values; feature
columns stay arrow columns for the encode step.
"""

from __future__ import annotations

import functools
import operator
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extmem._allocators import release_freed_memory
from extmem._contracts import ROW_ARRAYS, PackedBlock, RawBatch, ReadCounters, RowGroupRef
from extmem._layout import KMER_COLUMN, FeatureLayout, numeric_keys
from extmem._signals import raise_if_stopped
from extmem._stores import resolve
from extmem.errors import FilterError, LabelError, read_failure
from extmem.read._filters import quoted
from extmem.read._holdout import holdout_mask
from extmem.read._parts import WholeRowGroups, one_batch, part_reader
from extmem.read._queries import QueryIds, query_ids
from extmem.read._selection import Selection
from extmem.read._storage import open_parquet

_PARQUET = ds.ParquetFileFormat()
_LOCAL = pafs.LocalFileSystem()
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ROW = "__extmem_row"


def shard_columns(layout: FeatureLayout, present: Iterable[str], block: PackedBlock | None) -> list[str]:
    """The physical columns of a shard holding ``present`` (and packed ``block``) that feed ``layout``'s features."""
    present = list(present)
    base = set(layout.names[: layout.kmer_offset])
    columns = [name for name in present if name in base]
    encoding = layout.kmers
    fold = encoding is not None and encoding.sequence_column is None
    if fold:
        columns += [name for name in present if KMER_COLUMN.match(name) and name not in base]
    if block is not None and any(name in base or (fold and KMER_COLUMN.match(name)) for name in block.columns):
        columns += [block.indices, block.values]
    if encoding is not None and encoding.sequence_column is not None and encoding.sequence_column in present:
        columns.append(encoding.sequence_column)
    return columns


def row_groups(selection: Selection) -> list[RowGroupRef]:
    """Row groups in read order; with ``max_rows`` and no filter, only those holding the first rows."""
    limit = selection.dataset.max_rows if selection.row_filter is None else None
    refs: list[RowGroupRef] = []
    total = 0
    for ref in selection.schema.row_groups():
        if limit is not None and total >= limit:
            break
        refs.append(ref)
        total += ref.rows
    return refs


def sample_row_groups(selection: Selection, target_rows: int, seed: int) -> list[RowGroupRef]:
    """Row groups drawn uniformly at random (without replacement) until they hold ``target_rows``."""
    candidates = row_groups(selection)
    chosen: list[int] = []
    rows = 0
    for position in np.random.default_rng(seed).permutation(len(candidates)):
        if rows >= target_rows:
            break
        chosen.append(int(position))
        rows += candidates[position].rows
    return [candidates[i] for i in sorted(chosen)]


def read_batches(
    selection: Selection,
    batch_rows: int,
    refs: list[RowGroupRef] | None = None,
    counters: ReadCounters | None = None,
    *,
    whole_rows: int = 0,
) -> Iterator[RawBatch]:
    """One pass over the selection (or only the row groups ``refs``), in batches of at most ``batch_rows`` rows.

    Row groups of up to ``whole_rows`` rows may come whole instead, their plain numeric feature
    columns in :attr:`RawBatch.parts` of at most the decoded bytes of ``batch_rows`` rows of every
    column (the caller then handles blocks of up to ``whole_rows`` rows). ``counters`` (if given)
    count what the pass read. Without ``refs``, ``max_rows`` caps the rows.
    """
    counters = counters if counters is not None else ReadCounters()
    remaining = selection.dataset.max_rows if refs is None else None
    wanted: dict[str, set[int]] | None = None
    if refs is not None:
        wanted = {}
        for ref in refs:
            wanted.setdefault(ref.shard, set()).add(ref.index)
    numbered = QueryIds(selection.dataset.qid or "", selection.dataset.weight)
    for shard in selection.schema.shards:
        if wanted is not None and shard not in wanted:
            continue
        shard_batches = _shard_batches(selection, shard, None if wanted is None else wanted[shard], batch_rows, whole_rows, counters)
        for batch in _timed(shard_batches, counters):
            if remaining is not None:
                if remaining <= 0:
                    return
                batch = _head(batch, remaining)
                remaining -= batch.rows
            raise_if_stopped()  # every command reads through here: a signal whose exception something swallowed stops it too
            if batch.rows == 0:
                continue
            batch = numbered(batch)  # each batch is in order (see query_ids); from one batch to the next too
            counters.rows += batch.rows
            counters.batches += 1
            yield batch


def _timed(batches: Iterator[RawBatch], counters: ReadCounters) -> Iterator[RawBatch]:
    """``batches``, with the time spent producing each added to ``counters.seconds``."""
    while True:
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            counters.seconds += time.perf_counter() - started
        yield batch


def _head(batch: RawBatch, rows: int) -> RawBatch:
    if batch.rows <= rows:
        return batch
    sliced = {name: getattr(batch, name)[:rows] if getattr(batch, name) is not None else None for name in ROW_ARRAYS}
    carried = batch.carried.slice(0, rows) if batch.carried is not None else None
    parts = batch.parts
    head_parts = None if parts is None else lambda: (part.slice(0, rows) for part in parts())
    return replace(batch, columns=batch.columns.slice(0, rows), carried=carried, parts=head_parts, **sliced)


def _open(selection: Selection, shard: str) -> tuple[pq.ParquetFile, set[int] | None]:
    """The shard, its footer parsed once, and the row groups the filter may match (None: all), judged by their statistics."""
    if selection.row_filter is None:
        return open_parquet(shard), None
    filesystem, inner = resolve(shard)
    known = [
        pc.field(key) == pa.scalar(value, selection.schema.columns[key].arrow_type)
        for key, value in selection.schema.partitions.get(shard, {}).items()
        if value is not None
    ]
    fragment = _PARQUET.make_fragment(
        os.path.abspath(inner) if filesystem is None else inner,
        filesystem=filesystem or _LOCAL,
        partition_expression=functools.reduce(operator.and_, known) if known else None,
    )  # what its folders say of the shard: a filter on them skips it whole
    fragment.ensure_complete_metadata()
    try:
        matching = fragment.subset(filter=selection.row_filter.expression, schema=selection.scan_schema).row_groups
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise _filter_failure(selection, exc) from None
    return open_parquet(shard, metadata=fragment.metadata), {group.id for group in matching}


def _filter_failure(selection: Selection, exc: Exception) -> FilterError:
    assert selection.row_filter is not None
    reason = str(exc).splitlines()[0]
    msg = f"The 'filter' {quoted(selection.row_filter.text)} cannot be applied to the columns it names: {reason}"
    return FilterError(msg, options=("filter",))


def _shard_batches(
    selection: Selection, shard: str, wanted: set[int] | None, batch_rows: int, whole_rows: int, counters: ReadCounters
) -> Iterator[RawBatch]:
    row_group = -1
    block = selection.schema.packed_blocks.get(shard)
    partition = selection.schema.partitions.get(shard, {})
    try:
        file, matching = _open(selection, shard)
        with file:
            present = file.schema_arrow.names + list(partition)
            features = shard_columns(selection.layout, present, block)
            columns = features + [name for name in selection.extras if name in present and name not in features]
            folder_values = {name: partition[name] for name in columns if name in partition}  # columns the folder names give
            columns = [name for name in columns if name not in partition]
            whole_groups = WholeRowGroups.of(selection, file, columns) if whole_rows > 0 else None
            plain = set(whole_groups.plain) if whole_groups is not None else set()
            row_features = [name for name in features if name not in plain]  # a whole row group's features besides its parts
            groups = [i for i in range(file.num_row_groups) if wanted is None or i in wanted]
            counters.row_groups_skipped += len(groups) - len(groups if matching is None else [i for i in groups if i in matching])
            for row_group in groups if matching is None else [i for i in groups if i in matching]:
                counters.row_groups_read += 1
                parts = None if whole_groups is None else whole_groups.parts(file.metadata.row_group(row_group), batch_rows, whole_rows)
                if parts is None:
                    yield from _row_batches(selection, file, shard, row_group, columns, features, batch_rows, block, folder_values)
                    continue
                assert whole_groups is not None
                whole = one_batch(file.read_row_group(row_group, columns=whole_groups.others, use_threads=True))
                whole = _with_folder_values(selection, whole, folder_values)
                whole, kept = _kept_rows(selection, whole, shard, row_group)
                reading = [True]  # the parts can be read until this generator resumes
                read_part = part_reader(file, shard, row_group, parts, kept, counters, reading)
                yield replace(_raw_batch(selection, whole, row_features, shard, row_group, block), parts=read_part)
                reading[0] = False
    except (pa.ArrowException, OSError) as exc:
        raise read_failure(shard, exc, f"row group {row_group} of " if row_group >= 0 else "") from None
    finally:
        release_freed_memory()


def _row_batches(
    selection: Selection,
    file: pq.ParquetFile,
    shard: str,
    row_group: int,
    columns: list[str],
    features: list[str],
    batch_rows: int,
    block: PackedBlock | None,
    folder_values: dict[str, int | str | None],
) -> Iterator[RawBatch]:
    """A row group in batches of ``batch_rows`` rows of every column read (and of the columns its folder names give)."""
    holdout = selection.dataset.holdout
    first_row = 0
    for batch in file.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns, use_threads=True):
        batch = _with_folder_values(selection, batch, folder_values)
        if holdout is not None:
            rows = batch.num_rows
            batch = batch.filter(pa.array(holdout_mask(holdout, batch, shard, row_group, first_row)))
            first_row += rows
        if selection.row_filter is not None:
            batch = _filtered(selection, batch)
        yield _raw_batch(selection, batch, features, shard, row_group, block)


def _kept_rows(selection: Selection, batch: pa.RecordBatch, shard: str, row_group: int) -> tuple[pa.RecordBatch, np.ndarray | None]:
    """A whole row group's rows on the holdout's side and passing the filter, and their positions (None: all)."""
    if selection.dataset.holdout is None and selection.row_filter is None:
        return batch, None
    positions = np.arange(batch.num_rows)
    if selection.dataset.holdout is not None:
        mask = holdout_mask(selection.dataset.holdout, batch, shard, row_group, 0)
        batch, positions = batch.filter(pa.array(mask)), positions[mask]
    if selection.row_filter is not None:
        tagged = _filtered(selection, batch.append_column(_ROW, pa.array(np.arange(batch.num_rows))))
        taken = tagged.column(_ROW).to_numpy()
        batch, positions = batch.take(pa.array(taken)), positions[taken]
    return batch, positions


def _with_folder_values(selection: Selection, batch: pa.RecordBatch, values: dict[str, int | str | None]) -> pa.RecordBatch:
    """Add a partitioned shard's columns from its ``key=value`` folders: each value in every row."""
    for name, value in values.items():
        kind = selection.schema.columns[name].arrow_type
        column = pa.nulls(batch.num_rows, kind) if value is None else pa.repeat(pa.scalar(value, kind), batch.num_rows)
        batch = batch.append_column(name, column)
    return batch


def _with_columns(selection: Selection, batch: pa.RecordBatch, names: Iterable[str]) -> pa.RecordBatch:
    """Add the columns in ``names`` that ``batch`` lacks, as nulls of their union type."""
    for name in names:
        if batch.schema.get_field_index(name) < 0:
            batch = batch.append_column(name, pa.nulls(batch.num_rows, selection.scan_schema.field(name).type))
    return batch


def _filtered(selection: Selection, batch: pa.RecordBatch) -> pa.RecordBatch:
    assert selection.row_filter is not None
    try:
        return _with_columns(selection, batch, selection.row_filter.columns).filter(selection.row_filter.expression)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise _filter_failure(selection, exc) from None


def _raw_batch(
    selection: Selection, batch: pa.RecordBatch, features: list[str], shard: str, row_group: int, block: PackedBlock | None
) -> RawBatch:
    where = f"row group {row_group} of {shard!r}"
    dataset = selection.dataset
    label = weight = qid = carried = None
    if dataset.label is not None:
        label = _labels(selection, batch.column(dataset.label), where)
    if dataset.weight is not None:
        weight = _weights(batch.column(dataset.weight), f"weight column {dataset.weight!r}", where)
    if dataset.qid is not None:
        qid = query_ids(batch.column(dataset.qid), dataset.qid, where)
    if selection.carry:
        full = _with_columns(selection, batch, selection.carry)
        arrays = [full.column(name).cast(selection.scan_schema.field(name).type) for name in selection.carry]
        carried = pa.RecordBatch.from_arrays(arrays, schema=selection.carried_schema)
    index = {name: i for i, name in enumerate(batch.schema.names)}
    columns = batch.select([index[name] for name in features])  # keeps the row count when no feature is in the shard
    return RawBatch(columns, shard, row_group, block, label, weight, carried, qid=qid)


def finite_values(values: pa.Array, what: str, where: str, error: type[Exception]) -> np.ndarray:
    """Values as float32, refusing nulls, NaN, infinities and finite values beyond float32's range (naming ``what`` and ``where``)."""
    array = values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(array)
        huge = ~bad & (np.abs(array) > _FLOAT32_MAX)
    if bad.any():
        raise error(f"The {what} has {int(bad.sum())} null or non-finite value(s) in {where}.")
    if huge.any():
        raise error(f"The {what} has {int(huge.sum())} value(s) beyond float32's range (first: {array[huge][0]:g}) in {where}.")
    return array.astype(np.float32)


def _weights(values: pa.Array, what: str, where: str) -> np.ndarray:
    """Row weights as float32: finite (see :func:`finite_values`) and never negative."""
    weights = finite_values(values, what, where, LabelError)
    negative = weights < 0
    if negative.any():
        raise LabelError(
            f"The {what} has {int(negative.sum())} negative value(s) (first: {weights[negative][0]:g}) in {where}; weights must be 0 or more."
        )
    return weights


def _labels(selection: Selection, values: pa.Array, where: str) -> np.ndarray:
    label, label_map = selection.dataset.label, selection.layout.label_map
    if label_map is None:
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_dictionary(values.type):
            raise LabelError(f"The label column {label!r} holds strings in {where} but numbers elsewhere.")
        return finite_values(values, f"label column {label!r}", where, LabelError)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    keys = list(label_map)
    numbers = numeric_keys(label_map)
    if numbers is not None and not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.float64())
        codes = pc.index_in(values, value_set=pa.array(numbers, type=pa.float64()))
    else:
        values = values.cast(pa.large_string())
        codes = pc.index_in(values, value_set=pa.array(keys, type=pa.large_string()))
    if codes.null_count:
        if values.null_count:
            raise LabelError(f"The label column {label!r} has {values.null_count} null value(s) in {where}.")
        unknown = pc.unique(pc.filter(values, pc.is_null(codes))).to_pylist()
        msg = f"The label column {label!r} has value(s) {unknown[:5]} in {where} that the label map {dict(label_map)} does not cover; give a 'label_map' that does."
        raise LabelError(msg, options=("label_map",))
    ids = np.array([label_map[key] for key in keys], dtype=np.float32)
    return ids[codes.to_numpy(zero_copy_only=False)]
