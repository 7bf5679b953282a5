"""Diagnostics: what benchmarks and curious users measure inside extmem, by name and documented.

Not needed to train or score; stable enough for ``bench/`` and for investigating a run:
memory sampling, size parsing, the schema extmem scans, the pages XGBoost receives (read fresh
or replayed from a spool), a built matrix's counters, and k-mer hashing on its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from extmem._contracts import Block
from extmem._layout import KmerEncoding
from extmem._measure import MemoryMonitor, MemorySample
from extmem._units import format_size, parse_size
from extmem.encode._blocks import Encoder
from extmem.encode._kmers import sequence_entries
from extmem.encode._pages import read_pages
from extmem.read._dataset import DatasetLike, as_dataset
from extmem.read._discover import discover_shards, partition_values
from extmem.read._scan import NUMERIC, Schema, scan
from extmem.read._selection import Selection, select_dataset
from extmem.xgb._iterator import IterStats
from extmem.xgb._matrix import free_matrix, matrix_info
from extmem.xgb._spool import PageSpool

__all__ = [
    "NUMERIC",
    "MemoryMonitor",
    "MemorySample",
    "format_size",
    "free_matrix",
    "hashed_kmer_entries",
    "matrix_stats",
    "parse_size",
    "schema_of",
    "selection_of",
    "spooled_pages",
    "stream_pages",
]


def schema_of(data: str) -> Schema:
    """The union schema extmem scans from the footers of ``data``'s shards (columns, kinds, row groups)."""
    shards = discover_shards([data])
    return scan(shards, partition_values([data], shards))


def selection_of(data: DatasetLike, **options: Any) -> Selection:
    """What extmem would read of ``data`` with ``options`` (dataset options): layout, dropped columns, filter."""
    return select_dataset(as_dataset(data, options), announce=False)


def stream_pages(data: DatasetLike, *, batch_rows: int = 2048, page_rows: int = 8192, **options: Any) -> Iterator[Block]:
    """The pages XGBoost receives for ``data``: read, encoded and grouped as a build does (one pass)."""
    selection = selection_of(data, **options)
    encoder = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)
    return read_pages(selection, encoder, batch_rows, page_rows)


@contextmanager
def spooled_pages(data: DatasetLike, **options: Any) -> Iterator[Callable[[], Iterator[Block]]]:
    """Spool ``data``'s pages once (as a build of wide shards does); yields a function that replays them. The spool goes afterwards."""
    selection = selection_of(data, **options)
    with tempfile.TemporaryDirectory(prefix="extmem-spool-") as folder:
        spool = PageSpool(Path(folder) / "spool")
        for _ in spool.record(stream_pages(data, **options)):
            pass
        try:
            yield lambda: spool.replay(len(selection.layout.names))
        finally:
            spool.clear()


def matrix_stats(matrix: xgb.DMatrix) -> IterStats:
    """The counters of a matrix built by :func:`extmem.dmatrix`: rows, stored values, pages, passes, what was read."""
    return matrix_info(matrix).stats


def hashed_kmer_entries(sequences: pa.Array, width: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-mers of ``sequences`` hashed into ``width`` features as extmem counts them: CSR (offsets, positions, values)."""
    return sequence_entries(sequences, KmerEncoding(width=width, k=k, sequence_column="sequence"), 0)
