"""The values that pass from one step of the pipeline to the next.

read yields :class:`RawBatch` (arrow columns, labels, weights, where they came from); encode turns
each into a :class:`Block` (float32 CSR or dense rows in layout order); the xgb step groups blocks
into pages. :class:`PackedBlock` describes a shard's packed columns, as its footer records them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from extmem.errors import SchemaError

PACKED_METADATA_KEY = b"extmem.packed"
PACKED_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PackedBlock:
    """Where a packed shard keeps its block of count columns: two list columns and the block's column names.

    Recorded once in the file's key-value metadata under ``extmem.packed``::

        {"version": 1, "indices": "kmer_indices", "values": "kmer_values", "columns": ["6mer_AAAAAA", ...]}
    """

    indices: str
    values: str
    columns: tuple[str, ...]

    def to_metadata(self) -> dict[bytes, bytes]:
        text = json.dumps({"version": PACKED_FORMAT_VERSION, "indices": self.indices, "values": self.values, "columns": list(self.columns)})
        return {PACKED_METADATA_KEY: text.encode()}

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None, shard: str) -> PackedBlock | None:
        """The block recorded in a file's key-value metadata, or None for a wide shard."""
        raw = (metadata or {}).get(PACKED_METADATA_KEY)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != PACKED_FORMAT_VERSION:
                version = data.get("version") if isinstance(data, dict) else None
                msg = f"version {version!r} (this extmem reads version {PACKED_FORMAT_VERSION})"
                raise ValueError(msg)
            names = [data["indices"], data["values"]]
            if not all(isinstance(name, str) for name in names) or not isinstance(data["columns"], list):
                msg = "'indices' and 'values' must be column names and 'columns' a list"
                raise TypeError(msg)
            columns = tuple(data["columns"])
            if not all(isinstance(name, str) for name in columns) or len(set(columns)) != len(columns):
                msg = "'columns' must be distinct column names"
                raise TypeError(msg)
            return cls(data["indices"], data["values"], columns)
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"The packed-layout metadata of {shard!r} is invalid: {exc}"
            raise SchemaError(msg) from None

    def index_type(self) -> pa.DataType:
        return pa.uint16() if len(self.columns) <= 1 << 16 else pa.uint32()


@dataclass(frozen=True)
class RowGroupRef:
    """One row group of one shard, with its row count from the footer."""

    shard: str
    index: int
    rows: int


@dataclass
class ReadCounters:
    """What one pass of the reader read (counted where the work happens, read by reports and bench)."""

    rows: int = 0
    batches: int = 0
    row_groups_read: int = 0
    row_groups_skipped: int = 0
    seconds: float = 0.0
    """Time spent reading in every pass so far: footers, decoding, filtering, labels (in the reading thread)."""

    def reset(self) -> None:
        """Start counting a new pass (``seconds`` keeps adding up)."""
        self.rows = self.batches = self.row_groups_read = self.row_groups_skipped = 0


@dataclass(frozen=True)
class RawBatch:
    """Rows as the reader hands them over: the shard's physical feature columns, labels, weights and origin.

    ``columns`` holds the feature columns this shard has (and a packed ``block``'s two list
    columns, a sequence column to count k-mers from); ``label`` is class ids or values,
    ``weight`` row weights, ``qid`` query ids (int64, non-decreasing), ``carried`` the columns
    passed through unchanged (predictions' ids).
    ``parts``, when set, gives the rest of the feature columns (plain numeric ones), decoded a
    subset of columns at a time when called, each part holding all the batch's rows: the reader
    hands over a whole row group so, and the call is valid until it is asked for its next batch.
    """

    columns: pa.RecordBatch
    shard: str
    row_group: int
    block: PackedBlock | None = None
    label: np.ndarray | None = None
    weight: np.ndarray | None = None
    carried: pa.RecordBatch | None = None
    parts: Callable[[], Iterator[pa.RecordBatch]] | None = None
    qid: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.columns.num_rows)

    @property
    def where(self) -> str:
        """Where the rows came from, for error messages."""
        return f"row group {self.row_group} of {self.shard!r}"


@dataclass(frozen=True)
class Block:
    """Rows in layout column order (float32 CSR, or dense with NaN for missing), with labels, weights and query ids."""

    X: sp.csr_matrix | np.ndarray
    label: np.ndarray | None
    weight: np.ndarray | None
    qid: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def stored_values(self) -> int:
        """Entries XGBoost receives: CSR non-zeros, or non-NaN dense cells."""
        if sp.issparse(self.X):
            return int(self.X.nnz)
        return int(np.count_nonzero(~np.isnan(self.X)))


ROW_ARRAYS = ("label", "weight", "qid")
"""The per-row arrays that travel with a batch's or block's rows (None where the dataset has no such column)."""


@dataclass(frozen=True)
class DataProfile:
    """What a memory plan needs to know of a dataset: rows and footers from its metadata, bytes and values per row from a probe."""

    rows: int
    arrow_bytes_per_row: float
    stored_values_per_row: float
    outputs: int = 1
    footer_bytes: int = 0
    """The largest serialized footer of a shard: parsed, it takes several times that while its shard is read."""
    bins: int = 0
    """XGBoost's histogram bins over all features, estimated from the probe: the size of its per-page and per-node state."""
    features: int = 0
    max_bin: int = 256
    """XGBoost's ``max_bin``: with the features and their density, the size of its quantile sketch."""
    row_group_rows: int = 0
    """Rows of the largest row group: one read in many row batches holds more while it is decoded (see ``decode_bytes``)."""
    columns: int = 0
    """Parquet columns decoded per batch (the probe's)."""
    carried_bytes_per_row: float = 0.0
    """Arrow bytes per row of the columns carried to an output (``keep``), part of ``arrow_bytes_per_row``."""
