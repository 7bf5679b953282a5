"""How one shard's columns (or an in-memory table's) become a batch's feature values in layout order.

A :class:`FeaturePlan` is made once per shard from the layout and the shard's columns: which
ordinary (wide) columns to take, how its packed block maps to layout positions, and, with a
k-mer encoding, which ``{k}mer_*`` columns to fold or which sequence column to count.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa

from extmem._contracts import PackedBlock
from extmem._layout import KMER_COLUMN, FeatureLayout, KmerEncoding
from extmem.encode._categories import encode_categories
from extmem.encode._kmers import canonical_rows, fold_columns, sequence_entries
from extmem.encode._packed import PackedRows, unpack


@dataclass(frozen=True)
class FeatureColumns:
    """One batch's feature values: the wide feature columns it holds, and its sparse entries.

    ``positions[j]`` is the layout position of ``wide.column(j)``, in increasing order;
    ``packed`` holds entries (from a packed block or k-mer features) at other positions.
    Layout columns in neither part are missing for every row of the batch.
    """

    rows: int
    wide: pa.RecordBatch
    positions: np.ndarray
    packed: PackedRows | None = None


_NUMERIC_TYPES = frozenset(
    [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(), pa.float32(), pa.float64()]
)
"""Column types taken as they are; any other (bool, float16, decimal, null...) is cast to float64."""


def wide_features(
    batch: pa.RecordBatch, names: Sequence[str], positions: np.ndarray, encoders: Mapping[str, Callable[[pa.Array], pa.Array]] | None = None
) -> FeatureColumns:
    """Columns ``names`` of ``batch`` at layout ``positions``: through ``encoders[name]`` if given, else non int/float types cast to float64."""
    index = {name: i for i, name in enumerate(batch.schema.names)}
    selected = batch.select([index[name] for name in names])
    changed: dict[int, pa.Array] = {}
    for j, (name, kind) in enumerate(zip(names, selected.schema.types)):
        if encoders and name in encoders:
            changed[j] = encoders[name](selected.column(j))
        elif kind not in _NUMERIC_TYPES:
            changed[j] = selected.column(j).cast(pa.float64(), safe=False)
    if changed:
        arrays = [changed.get(j, column) for j, column in enumerate(selected.columns)]
        selected = pa.RecordBatch.from_arrays(arrays, names=list(names))
    return FeatureColumns(batch.num_rows, selected, positions)


def _rows_of(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(offsets.size - 1), np.diff(offsets))


@dataclass(frozen=True)
class FeaturePlan:
    """What to read from one shard and where each value goes in the layout."""

    wide_names: list[str]
    wide_positions: np.ndarray
    block: PackedBlock | None = None
    block_positions: np.ndarray | None = None
    block_signs: np.ndarray | None = None
    fold_names: tuple[str, ...] = ()
    fold_positions: np.ndarray | None = None
    fold_signs: np.ndarray | None = None
    encoding: KmerEncoding | None = None
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    strict_categories: bool = False

    @classmethod
    def build(
        cls, layout: FeatureLayout, present: Collection[str], block: PackedBlock | None, strict_categories: bool = False
    ) -> FeaturePlan:
        """The plan for a shard holding the physical columns ``present`` and packed ``block``."""
        encoding = layout.kmers
        base = layout.names[: layout.kmer_offset]
        positions = {name: i for i, name in enumerate(base)}
        wide_names = [name for name in base if name in present]
        wide_positions = np.array([positions[name] for name in wide_names], dtype=np.int64)
        fold = encoding is not None and encoding.sequence_column is None
        fold_names: tuple[str, ...] = ()
        fold_positions = fold_signs = None
        if fold:
            assert encoding is not None
            fold_names = tuple(name for name in present if KMER_COLUMN.match(name) and name not in positions)
            fold_positions, fold_signs = fold_columns(encoding, list(fold_names))
            fold_positions += layout.kmer_offset
        block_positions = block_signs = None
        if block is not None and block.indices in present:
            block_positions = np.array([positions.get(name, -1) for name in block.columns], dtype=np.int64)
            if fold:
                assert encoding is not None
                folded = [i for i, name in enumerate(block.columns) if KMER_COLUMN.match(name) and name not in positions]
                buckets, signs = fold_columns(encoding, [block.columns[i] for i in folded])
                block_positions[folded] = buckets + layout.kmer_offset
                block_signs = np.ones(len(block.columns), dtype=np.float32)
                block_signs[folded] = signs
            if not (block_positions >= 0).any():
                block = block_positions = block_signs = None
        else:
            block = None
        return cls(
            wide_names,
            wide_positions,
            block,
            block_positions,
            block_signs,
            fold_names,
            fold_positions,
            fold_signs,
            encoding,
            dict(layout.categories),
            strict_categories,
        )

    def features(self, batch: pa.RecordBatch, where: str, kmer_offset: int) -> FeatureColumns:
        """The feature values of ``batch`` (which holds :attr:`columns`)."""
        encoders = {
            name: partial(encode_categories, dictionary=dictionary, strict=self.strict_categories, column=name, where=where)
            for name, dictionary in self.categories.items()
        }
        features = wide_features(batch, self.wide_names, self.wide_positions, encoders)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if self.block is not None:
            assert self.block_positions is not None
            entries = unpack(
                batch.column(self.block.indices), batch.column(self.block.values), self.block_positions, where, self.block_signs
            )
            if self.encoding is None:
                return FeatureColumns(features.rows, features.wide, features.positions, entries)
            parts.append((_rows_of(entries.offsets), entries.positions, entries.values))
        if self.fold_names:
            assert self.fold_positions is not None and self.fold_signs is not None
            parts.append(_fold_entries(batch, self.fold_names, self.fold_positions, self.fold_signs))
        sequence_column = self.encoding.sequence_column if self.encoding is not None else None
        if sequence_column is not None and sequence_column in batch.schema.names:  # of a row group read in parts, one holds it
            assert self.encoding is not None
            offsets, positions, values = sequence_entries(batch.column(sequence_column), self.encoding, kmer_offset)
            if not parts:  # canonical already: summing them again would take many times their memory
                return FeatureColumns(features.rows, features.wide, features.positions, PackedRows(offsets, positions, values))
            parts.append((_rows_of(offsets), positions, values))
        if not parts:
            return features
        rows, positions, values = (np.concatenate(column) for column in zip(*parts))
        return FeatureColumns(
            features.rows, features.wide, features.positions, PackedRows(*canonical_rows(features.rows, rows, positions, values))
        )


def _fold_entries(
    batch: pa.RecordBatch, names: Sequence[str], positions: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero counts of the columns ``names`` as (rows, layout positions, signed values)."""
    index = {name: i for i, name in enumerate(batch.schema.names)}
    rows: list[np.ndarray] = []
    values: list[np.ndarray] = []
    where: list[np.ndarray] = []
    for j, name in enumerate(names):
        counts = batch.column(index[name]).cast(pa.float64(), safe=False).fill_null(0).to_numpy(zero_copy_only=False)
        kept = np.flatnonzero(counts)
        rows.append(kept)
        values.append(counts[kept] * signs[j])
        where.append(np.full(kept.size, positions[j], dtype=np.int64))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(rows), np.concatenate(where), np.concatenate(values)
