"""Deterministic train/validation split of rows, by group value or by row position, batch by batch.

Each row (or group) gets a 64-bit hash; it is a validation row when ``start <= hash / 2**64 < start + fraction``.
Group values are hashed as text with BLAKE2b (stable across runs, machines and Python
versions, unlike ``hash()``); rows without ``group_by`` are hashed from their shard's file name (with its partition folders),
row group and position with SplitMix64, so the split never depends on batch sizes or filters.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extmem.read._dataset import Holdout
from extmem.read._discover import partition_path

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of each value: a fast, well-mixed 64-bit hash (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def text_hash(text: str, seed: int) -> int:
    """A stable 64-bit hash of ``text`` keyed by ``seed`` (BLAKE2b)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, key=seed.to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(digest, "little")


def _group_hashes(values: pa.Array, seed: int) -> np.ndarray:
    """One hash per row from its group value (nulls form one group of their own)."""
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = values.cast(pa.float64()).cast(pa.string()) if pa.types.is_integer(values.type) else values.cast(pa.string())
    encoded = pc.dictionary_encode(values).combine_chunks() if isinstance(values, pa.ChunkedArray) else pc.dictionary_encode(values)
    keys = np.array([text_hash(value, seed) for value in encoded.dictionary.to_pylist()] + [text_hash("\0null", seed)], dtype=np.uint64)
    codes = encoded.indices.fill_null(len(keys) - 1).to_numpy(zero_copy_only=False)
    return keys[codes]


def _row_hashes(shard: str, row_group: int, first_row: int, rows: int, seed: int) -> np.ndarray:
    # the file name with its partition folders: a dataset moved or copied splits alike, and like-named shards of partitions do not
    base = text_hash(f"{partition_path(shard)}\0{row_group}", seed)
    positions = np.arange(first_row, first_row + rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return splitmix64(positions ^ np.uint64(base))


def holdout_mask(holdout: Holdout, batch: pa.RecordBatch, shard: str, row_group: int, first_row: int) -> np.ndarray:
    """Rows of ``batch`` (rows ``first_row``... of ``row_group`` in ``shard``) on ``holdout.side``."""
    if holdout.group_by is not None:
        hashes = _group_hashes(batch.column(holdout.group_by), holdout.seed)
    else:
        hashes = _row_hashes(shard, row_group, first_row, batch.num_rows, holdout.seed)
    position = (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53
    end = holdout.start + holdout.fraction
    in_valid = (position >= holdout.start) & ((position < end) | (end > 1 - 1e-9))  # the last fold ends at 1, rounding or not
    return in_valid if holdout.side == "valid" else ~in_valid
