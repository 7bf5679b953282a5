"""Encode: a :class:`RawBatch` -> a :class:`Block` of float32 rows in layout order (CSR, or dense when no column is sparse).

All feature encoding happens here, the same for training, prediction and in-memory input: wide
columns and packed entries merged in layout order, count columns stored only where non-zero
(absent means missing), categorical strings as dictionary codes, k-mer columns folded into hashed
features or k-mers counted from sequences. A value beyond float32's range, or infinite, is an
error naming its column.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from extmem._contracts import Block, PackedBlock, RawBatch
from extmem._layout import FeatureLayout
from extmem.encode._features import FeatureColumns, FeaturePlan
from extmem.encode._float32 import as_float32
from extmem.encode._kmers import canonical_rows
from extmem.encode._packed import PackedRows
from extmem.errors import FeatureValueError, SchemaError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _column_values(column: pa.Array) -> np.ndarray:
    """Numeric values, nulls as NaN; zero-copy when the column has no nulls."""
    if column.null_count == 0:
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):  # a view of the values buffer, without to_numpy's overhead
            return np.frombuffer(
                column.buffers()[1], dtype=kind.to_pandas_dtype(), count=len(column), offset=column.offset * kind.byte_width
            )
        return column.to_numpy(zero_copy_only=False)
    return column.cast(pa.float64(), safe=False).fill_null(np.nan).to_numpy(zero_copy_only=False)


CHUNK_VALUES = 1 << 22
"""Cells of the float matrix that wide columns are converted into, a chunk of columns at a time (32 MiB as float64)."""


def to_csr(
    features: FeatureColumns, layout: FeatureLayout, where: str = "the input", parts: Iterable[FeatureColumns] = ()
) -> sp.csr_matrix:
    """Convert a batch's feature values (and further wide ``parts`` of the same rows) to float32 CSR in layout column order.

    Count columns (``layout.zero_is_missing``) store only non-zero, non-null entries;
    other columns store every non-null value, zeros included, so XGBoost keeps them.
    Wide columns are converted by Arrow, a chunk at a time, into a column-major matrix (nulls as
    NaN) whose kept cells, found in one vectorized pass, are already in CSC order; the result is
    converted once to CSR. Packed entries, already CSR, are merged in row by row. ``parts`` are
    consumed one at a time, so only one is held decoded.
    """
    rows, n_columns = features.rows, len(layout.names)
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    packed: list[PackedRows] = []
    for source in itertools.chain([features], parts):
        chunks.extend(_kept_cells(source, layout, where))
        if source.packed is not None and source.packed.values.size:
            packed.append(source.packed)
    positions = np.concatenate([chunk[0] for chunk in chunks]) if chunks else np.zeros(0, dtype=np.int64)
    counts = np.concatenate([chunk[1] for chunk in chunks]) if chunks else np.zeros(0, dtype=np.int64)
    indices = np.concatenate([chunk[2] for chunk in chunks]) if chunks else np.zeros(0, dtype=np.int32)
    data = np.concatenate([chunk[3] for chunk in chunks]) if chunks else np.zeros(0, dtype=np.float32)
    del chunks
    if positions.size > 1 and (np.diff(positions) < 0).any():  # parts interleave in layout order: put columns in order
        order = np.argsort(positions, kind="stable")
        starts = np.cumsum(counts) - counts
        counts = counts[order]
        gather = np.repeat(starts[order] - (np.cumsum(counts) - counts), counts) + np.arange(indices.size)
        indices, data, positions = indices[gather], data[gather], positions[order]
    indptr = np.zeros(n_columns + 1, dtype=np.int64)
    column_counts = np.zeros(n_columns, dtype=np.int64)
    column_counts[positions] = counts
    np.cumsum(column_counts, out=indptr[1:])
    matrix = sp.csc_matrix((data, indices, indptr), shape=(rows, n_columns)).tocsr()
    if not packed:
        return matrix
    return _merge_rows(matrix, _summed(packed, rows))


def _summed(packed: list[PackedRows], rows: int) -> PackedRows:
    """Sparse entries of several sources for the same rows (folded k-mers of several parts), summed per row and position."""
    if len(packed) == 1:
        return packed[0]
    row_of = np.concatenate([np.repeat(np.arange(rows), np.diff(entries.offsets)) for entries in packed])
    positions = np.concatenate([entries.positions for entries in packed])
    return PackedRows(*canonical_rows(rows, row_of, positions, np.concatenate([entries.values for entries in packed])))


def _kept_cells(
    features: FeatureColumns, layout: FeatureLayout, where: str
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Kept cells of the wide columns a chunk of columns at a time, in CSC order.

    Each chunk: (layout positions, cells kept per position, row indices, float32 values).
    """
    rows, wide = features.rows, features.wide
    sparse_mask = layout.sparse_mask
    chunk_columns = max(1, CHUNK_VALUES // max(rows, 1))
    for start in range(0, wide.num_columns if rows else 0, chunk_columns):
        chunk = wide.select(list(range(start, min(start + chunk_columns, wide.num_columns))))
        cells = np.asarray(chunk.to_tensor(null_to_nan=True, row_major=False)).T  # (columns, rows), C-ordered
        positions = features.positions[start : start + chunk.num_columns]
        kept = ~np.isnan(cells)
        kept &= (cells != 0) | ~sparse_mask[positions][:, None]
        slots, chunk_rows = np.divmod(np.flatnonzero(kept), rows)
        values = as_float32(cells[slots, chunk_rows], lambda i, slots=slots, positions=positions: layout.names[positions[slots[i]]], where)
        yield positions, np.bincount(slots, minlength=chunk.num_columns), chunk_rows.astype(np.int32), values


def _merge_rows(wide: sp.csr_matrix, packed: PackedRows) -> sp.csr_matrix:
    """Row-wise union of a CSR matrix and packed entries of other columns, with sorted indices.

    Each row takes its wide entries, then its packed ones; rows are sorted only where that
    order is not already the column order. Where every packed column follows every wide one
    (the usual layout), the two are joined side by side by scipy's compiled ``hstack``.
    """
    rows, columns = wide.shape
    split = int(packed.positions.min()) if packed.values.size else columns
    if wide.nnz == 0 or int(wide.indices.max()) < split:
        left = sp.csr_matrix((wide.data, wide.indices, wide.indptr), shape=(rows, split))
        right = sp.csr_matrix((packed.values, packed.positions - np.int32(split), packed.offsets), shape=(rows, columns - split))
        merged = sp.hstack([left, right], format="csr")
    else:
        wide_counts = np.diff(wide.indptr)
        packed_counts = np.diff(packed.offsets)
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(wide_counts + packed_counts, out=indptr[1:])
        indices = np.empty(indptr[-1], dtype=np.int32)
        data = np.empty(indptr[-1], dtype=np.float32)
        wide_slots = np.arange(wide.nnz) + np.repeat(indptr[:-1] - wide.indptr[:-1], wide_counts)
        packed_slots = np.arange(packed.values.size) + np.repeat(indptr[:-1] + wide_counts - packed.offsets[:-1], packed_counts)
        indices[wide_slots], data[wide_slots] = wide.indices, wide.data
        indices[packed_slots], data[packed_slots] = packed.positions, packed.values
        merged = sp.csr_matrix((data, indices, indptr), shape=wide.shape)
    indices, indptr = merged.indices, merged.indptr
    descending = indices[1:] <= indices[:-1]
    row_starts = indptr[1:-1]
    descending[row_starts[(row_starts > 0) & (row_starts < indices.size)] - 1] = False  # a row's first entry follows another row
    merged.has_sorted_indices = not descending.any()
    if not merged.has_sorted_indices:
        merged.sort_indices()
    return merged


def to_dense(features: FeatureColumns, layout: FeatureLayout, where: str = "the input", parts: Iterable[FeatureColumns] = ()) -> np.ndarray:
    """Convert a batch's feature values (and wide ``parts`` of the same rows) to a C-ordered float32 matrix, missing values as NaN.

    An infinite value is an error.
    """
    out = np.full((features.rows, len(layout.names)), np.nan, dtype=np.float32)
    packed: list[PackedRows] = []
    for source in itertools.chain([features], parts):
        for column, position in zip(source.wide.columns, source.positions):
            out[:, position] = as_float32(_column_values(column), lambda _, position=position: layout.names[position], where)
        if source.packed is not None and source.packed.values.size:
            packed.append(source.packed)
    if packed:
        entries = _summed(packed, features.rows)
        rows = np.repeat(np.arange(features.rows), np.diff(entries.offsets))
        out[rows, entries.positions] = entries.values
    _check_finite(out, layout, where)
    return out


def _check_finite(X: sp.csr_matrix | np.ndarray, layout: FeatureLayout, where: str) -> None:
    values = X.data if sp.issparse(X) else X
    infinite = np.isinf(values)
    if infinite.any():
        first = int(np.flatnonzero(infinite.ravel())[0])
        column = int(X.indices[first]) if sp.issparse(X) else first % X.shape[1]
        msg = (
            f"The feature column {layout.names[column]!r} holds an infinite value in {where}; "
            "XGBoost cannot use it (nulls and NaN are fine: they are missing values)."
        )
        raise FeatureValueError(msg)


def to_matrix(
    features: FeatureColumns, layout: FeatureLayout, where: str = "the input", parts: Iterable[FeatureColumns] = ()
) -> sp.csr_matrix | np.ndarray:
    """Feature values (and wide ``parts`` of the same rows) in layout order as CSR if any column is a count column, dense otherwise.

    NaN and nulls are missing values; an infinite value, or one beyond float32's range, is an
    error naming its column and ``where``.
    """
    if not any(layout.zero_is_missing):
        return to_dense(features, layout, where, parts)
    X = to_csr(features, layout, where, parts)
    _check_finite(X, layout, where)
    return X


class Encoder:
    """Encodes raw batches of one dataset with one layout; a :class:`FeaturePlan` is made once per set of columns."""

    PLANS_KEPT = 256
    """Plans kept (a shard's batches, or a whole row group's parts, share theirs)."""

    def __init__(self, layout: FeatureLayout, *, strict_categories: bool = False) -> None:
        self.layout = layout
        self.strict_categories = strict_categories
        self._plans: dict[tuple[tuple[str, ...], PackedBlock | None], FeaturePlan] = {}
        self.seconds = 0.0
        """Time spent encoding so far (counted where the work happens)."""

    def plan(self, names: tuple[str, ...], block: PackedBlock | None) -> FeaturePlan:
        """The feature plan for a batch holding the columns ``names`` (and packed ``block``)."""
        plan = self._plans.get((names, block))
        if plan is None:
            if len(self._plans) >= self.PLANS_KEPT:
                self._plans.clear()
            plan = self._plans[names, block] = FeaturePlan.build(self.layout, set(names), block, self.strict_categories)
        return plan

    def features(self, batch: RawBatch) -> FeatureColumns:
        """The feature values of the batch's :attr:`RawBatch.columns` in layout positions, before conversion to a matrix."""
        plan = self.plan(tuple(batch.columns.schema.names), batch.block)
        return plan.features(batch.columns, batch.where, self.layout.kmer_offset)

    def __call__(self, batch: RawBatch) -> Block:
        """The batch as a block of float32 rows (see :func:`to_matrix`), with its labels, weights and query ids.

        The time spent decoding the batch's parts counts for the reader, not here.
        """
        return Block(self._converted(batch, to_matrix), batch.label, batch.weight, batch.qid)

    def dense(self, batch: RawBatch) -> np.ndarray:
        """The batch's features as dense float32 rows of every feature (see :func:`to_dense`), whatever the layout."""
        return self._converted(batch, to_dense)

    def _converted(self, batch: RawBatch, convert: Callable[..., Any]) -> Any:
        """``convert`` of the batch's features and of its parts, decoded one at a time."""
        started = time.perf_counter()
        decoding = [0.0]
        parts = None if batch.parts is None else self._part_features(batch, decoding)
        try:
            return convert(self.features(batch), self.layout, batch.where, parts or ())
        finally:
            if parts is not None:
                parts.close()  # on an error, at once: the part decoded ahead is waited for while the shard is open
            self.seconds += time.perf_counter() - started - decoding[0]

    def _part_features(self, batch: RawBatch, decoding: list[float]) -> Generator[FeatureColumns, None, None]:
        """The feature values of each of the batch's parts as it is decoded, the decoding time added to ``decoding``."""
        assert batch.parts is not None
        parts = batch.parts()
        try:
            while True:
                started = time.perf_counter()
                part = next(parts, None)
                decoding[0] += time.perf_counter() - started
                if part is None:
                    return
                yield self.plan(tuple(part.schema.names), None).features(part, batch.where, self.layout.kmer_offset)
        finally:
            close = getattr(parts, "close", None)
            if close is not None:
                close()


def encode(X: Any, layout: FeatureLayout) -> sp.csr_matrix | np.ndarray:
    """In-memory features (numpy, scipy sparse, pyarrow Table/RecordBatch, pandas DataFrame, a dict of columns) as the model was trained on them.

    Tables, DataFrames and dicts are matched to the model's features by column name (absent ones
    are missing, extra ones ignored). Arrays must hold the model's features in its order.
    Arrays are read as values with NaN for missing; sparse matrices the scipy way (absent
    entries are zeros). Zeros in count columns then become missing, as when training from parquet.
    """
    if type(X).__module__.partition(".")[0] == "pandas":
        if not hasattr(X, "columns"):
            msg = f"The input is a pandas {type(X).__name__}; pass a DataFrame of rows (a Series of one row: series.to_frame().T)."
            raise SchemaError(msg)
        X = pa.Table.from_pandas(X, preserve_index=False)
    if isinstance(X, Mapping):
        X = pa.table(dict(X))
    if isinstance(X, pa.Table):
        batches = X.combine_chunks().to_batches()
        X = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=X.schema)
    if isinstance(X, pa.RecordBatch):
        return to_matrix(_named_features(X, layout), layout)
    n_features = len(layout.names)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        _check_width(X.shape, n_features)
        data = as_float32(np.asarray(X.data, dtype=np.float64), lambda i: layout.names[X.indices[i]], "the input")
        return _sparse_features(sp.csr_matrix((data, X.indices, X.indptr), shape=X.shape), layout)
    try:
        wide = np.array(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"The input cannot be read as numbers ({exc}); pass a numeric array, a sparse matrix, or a table with the model's columns."
        raise SchemaError(msg) from None
    _check_width(wide.shape, n_features)
    dense = as_float32(wide, lambda i: layout.names[i % n_features], "the input")
    counts = dense[:, layout.sparse_mask]
    counts[counts == 0] = np.nan
    dense[:, layout.sparse_mask] = counts
    _check_finite(dense, layout, "the input")
    return dense


def _sparse_features(X: sp.csr_matrix, layout: FeatureLayout) -> sp.csr_matrix:
    """Sparse input read the scipy way (absent entries are zeros) in the model's representation.

    Count columns keep their non-zero entries only; the other columns become explicit, zeros
    included (they are few), so XGBoost sees zeros there as values, as in training.
    """
    coo = X.tocoo()
    counts = layout.sparse_mask[coo.col] & (coo.data != 0)
    other_columns = np.flatnonzero(~layout.sparse_mask)
    dense_other = X[:, other_columns].toarray()
    rows, local_columns = np.nonzero(~np.isnan(dense_other))
    matrix = sp.csr_matrix(
        (
            np.concatenate([coo.data[counts], dense_other[rows, local_columns]]),
            (np.concatenate([coo.row[counts], rows]), np.concatenate([coo.col[counts], other_columns[local_columns]])),
        ),
        shape=X.shape,
        dtype=np.float32,
    )
    _check_finite(matrix, layout, "the input")
    return matrix


def _check_width(shape: tuple[int, ...], n_features: int) -> None:
    if len(shape) != 2 or shape[1] != n_features:
        msg = (
            f"The input has shape {shape}; the model expects (rows, {n_features}) columns in its feature order. "
            "Pass a pyarrow table or pandas DataFrame to match columns by name."
        )
        raise SchemaError(msg)


def _named_features(batch: pa.RecordBatch, layout: FeatureLayout) -> FeatureColumns:
    names = set(batch.schema.names)
    plan = FeaturePlan.build(layout, names, None)
    if not plan.wide_names and not plan.fold_names and (layout.kmers is None or layout.kmers.sequence_column not in names):
        msg = f"None of the model's {len(layout.names)} feature columns (first: {layout.names[0]!r}) is in the input's columns."
        raise SchemaError(msg)
    absent = [name for name, counts in zip(layout.names[: layout.kmer_offset], layout.zero_is_missing) if not counts and name not in names]
    if absent:  # a count column's absence is its zeros; any other's is more likely a misspelt or forgotten column
        shown = ", ".join(repr(name) for name in absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        warnings.warn(f"The input lacks {len(absent)} of the model's feature columns ({shown}); they are read as missing.", stacklevel=5)
    for name in plan.wide_names:
        if name in layout.categories:
            continue
        kind = batch.schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            msg = f"The input column {name!r} has type {kind}; the model uses it as a numeric feature."
            raise SchemaError(msg)
    return plan.features(batch, "the input", layout.kmer_offset)
