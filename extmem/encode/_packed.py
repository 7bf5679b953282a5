"""The packed sparse layout: a block of count columns stored per row as two list columns.

A packed shard stores its k-mer block as ``<prefix>indices`` (``list<uint16>``, or
``list<uint32>`` above 65,536 columns) and ``<prefix>values`` (``list<float32>``) holding each
row's non-zero entries, like Spark ML's sparse vectors. The block's column names, in index order,
are recorded once in the file's key-value metadata under ``extmem.packed``::

    {"version": 1, "indices": "kmer_indices", "values": "kmer_values", "columns": ["6mer_AAAAAA", ...]}

Every other column (scores, ids, label) stays an ordinary parquet column. An absent entry is a
zero count, which extmem treats as missing, exactly like a zero in the wide layout's count columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from extmem._contracts import PackedBlock
from extmem.encode._float32 import as_float32
from extmem.errors import SchemaError

DEFAULT_PREFIX = "kmer_"


def pack_rows(matrix: sp.csr_matrix, block: PackedBlock) -> tuple[pa.Array, pa.Array]:
    """Rows of a CSR matrix over ``block.columns`` as the (indices, values) list columns."""
    matrix = matrix.copy()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    offsets = pa.array(matrix.indptr.astype(np.int32))
    indices = pa.ListArray.from_arrays(offsets, pa.array(matrix.indices.astype(block.index_type().to_pandas_dtype())))
    values = pa.ListArray.from_arrays(offsets, pa.array(matrix.data.astype(np.float32)))
    return indices, values


@dataclass(frozen=True)
class PackedRows:
    """A batch's packed entries in CSR form: ``offsets`` (rows + 1), layout ``positions`` and ``values``."""

    offsets: np.ndarray
    positions: np.ndarray
    values: np.ndarray


def unpack(
    indices: pa.Array, values: pa.Array, column_positions: np.ndarray, where: str, column_signs: np.ndarray | None = None
) -> PackedRows:
    """Decode the list columns of one batch; ``column_positions`` maps block indices to layout positions (-1: unused).

    Entries of unused columns, zeros and NaN are left out (absent means missing); values are
    multiplied by ``column_signs`` (of hashed k-mer features) if given.
    """
    index_lengths = pc.list_value_length(indices).fill_null(0).to_numpy(zero_copy_only=False)
    value_lengths = pc.list_value_length(values).fill_null(0).to_numpy(zero_copy_only=False)
    if not np.array_equal(index_lengths, value_lengths):
        row = int(np.flatnonzero(index_lengths != value_lengths)[0])
        msg = f"Packed row {row} of {where} has {index_lengths[row]} indices but {value_lengths[row]} values."
        raise SchemaError(msg)
    local = indices.flatten().to_numpy(zero_copy_only=False)
    raw = values.flatten().to_numpy(zero_copy_only=False)
    if raw.dtype != np.float32:  # float32 values are taken as they are, others checked against float32's range
        raw = raw.astype(np.float64, copy=False)
    data = as_float32(raw, lambda i: f"entry {int(local[i])} of the packed block", where)
    if local.size and (int(local.max()) >= column_positions.size or int(local.min()) < 0):
        bad = int(local.max()) if int(local.max()) >= column_positions.size else int(local.min())
        msg = f"A packed index in {where} is {bad}, outside the block's {column_positions.size} columns."
        raise SchemaError(msg)
    positions = column_positions.astype(np.int32, copy=False)[local]
    if column_signs is not None:
        data = data * column_signs[local]
    kept = (positions >= 0) & (data != 0) & ~np.isnan(data)
    offsets = np.zeros(index_lengths.size + 1, dtype=np.int64)
    if kept.all():
        np.cumsum(index_lengths, out=offsets[1:])
        return PackedRows(offsets, positions, data)
    rows = np.repeat(np.arange(index_lengths.size), index_lengths)
    np.cumsum(np.bincount(rows[kept], minlength=index_lengths.size), out=offsets[1:])
    return PackedRows(offsets, positions[kept], data[kept])
