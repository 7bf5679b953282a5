"""Whole row groups read in column parts: a wide row group's plain numeric feature columns, a few hundred at a time.

pyarrow decodes a wide row group several times faster a subset of columns at a time than in
small row batches of every column, in no more memory: the reader hands such a row group over
whole, its other columns decoded, and :attr:`RawBatch.parts` decodes the rest, part by part, when
the encoder asks. Local shards only: a store would answer each part with a request of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extmem._contracts import ReadCounters
from extmem._layout import KMER_COLUMN
from extmem._units import MiB
from extmem.errors import read_failure
from extmem.read._selection import Selection

PART_BYTES = 8 * MiB
"""Decoded bytes of one column part of a whole row group at most. One shard of 10,000 rows in 4,096-row groups of
4,099 double columns decoded at 10-17k rows/s in parts of 32 to 512 columns, 3.7k rows/s in 512-row batches of
every column and 6.0k in 4,096-row batches (which take 2.8x the memory)."""


@dataclass(frozen=True)
class WholeRowGroups:
    """How a shard's row groups can be read whole: its plain numeric feature columns in parts, after its other columns."""

    plain: list[str]
    """Integer and float feature columns taken as they are (not categorical), or folded k-mer columns, read for nothing else."""
    others: list[str]
    """The rest of the columns read (other features, labels, weights, filter and carried columns): decoded first, whole."""
    plain_widths: list[int]
    """Decoded bytes per row of each plain column."""
    fixed_width: int
    """Decoded bytes per row of the other columns of fixed width."""
    variable_leaves: list[int]
    """Parquet leaf columns of the other columns of variable width (strings, lists)."""

    @classmethod
    def of(cls, selection: Selection, file: pq.ParquetFile, columns: list[str]) -> WholeRowGroups | None:
        """The split of the ``columns`` a pass reads from ``file`` (features and extras), or None when none is a plain numeric feature."""
        layout, schema = selection.layout, file.schema_arrow
        base = set(layout.names[: layout.kmer_offset])
        fold = layout.kmers is not None and layout.kmers.sequence_column is None
        taken = base - set(selection.extras) - set(layout.categories)
        kinds = {name: schema.field(name).type for name in columns}
        plain = [
            name
            for name in columns
            if (name in taken or (fold and name not in base and name not in selection.extras and KMER_COLUMN.match(name)))
            and (pa.types.is_integer(kinds[name]) or pa.types.is_floating(kinds[name]))
        ]
        if not plain:
            return None
        chosen = set(plain)
        others = [name for name in columns if name not in chosen]
        fixed = [name for name in others if byte_width(kinds[name]) is not None]
        variable = set(others) - set(fixed)
        leaves = leaf_columns(file.metadata, variable) if variable else []
        plain_widths = [byte_width(kinds[name]) or 0 for name in plain]
        return cls(plain, others, plain_widths, sum(byte_width(kinds[name]) or 0 for name in fixed), leaves)

    def parts(self, metadata: pq.RowGroupMetaData, batch_rows: int, whole_rows: int) -> list[list[str]] | None:
        """Groups of the plain columns to decode the row group ``metadata`` describes, or None to read it in row batches.

        A row group comes whole when it holds at most ``whole_rows`` rows and its other columns
        take at most half the decoded bytes of ``batch_rows`` rows of every column; each part
        then takes at most half the rest (two are held: one decoded ahead), and ``PART_BYTES``. A row group of at most ``batch_rows``
        rows whose plain columns make one part is read as one batch instead. Variable-width
        columns count twice their uncompressed size.
        """
        rows = metadata.num_rows
        if not 0 < rows <= whole_rows:
            return None
        other_bytes = rows * self.fixed_width + 2 * sum(metadata.column(i).total_uncompressed_size for i in self.variable_leaves)
        allowance = batch_rows * (other_bytes + rows * sum(self.plain_widths)) // rows
        if 2 * other_bytes > allowance:
            return None
        room = min((allowance - other_bytes) // 2, PART_BYTES)  # the next part is decoded while one is encoded
        groups = column_parts(self.plain, self.plain_widths, rows, room)
        return None if rows <= batch_rows and len(groups) == 1 else groups


def column_parts(names: list[str], widths: list[int], rows: int, room: int = PART_BYTES) -> list[list[str]]:
    """``names`` in order, grouped into parts whose ``rows`` rows decode into at most ``room`` bytes (a wider column alone)."""
    groups: list[list[str]] = [[]]
    filled = 0
    for name, width in zip(names, widths):
        if groups[-1] and filled + rows * width > room:
            groups.append([])
            filled = 0
        groups[-1].append(name)
        filled += rows * width
    return groups


def byte_width(kind: pa.DataType) -> int | None:
    """Decoded bytes per value of a fixed-width type, validity included; None for variable widths."""
    if pa.types.is_boolean(kind):
        return 1
    try:
        return kind.bit_width // 8 + 1
    except ValueError:
        return None


def one_batch(table: pa.Table) -> pa.RecordBatch:
    """A table read from one (non-empty) row group as one record batch."""
    (batch,) = table.combine_chunks().to_batches()
    return batch


def part_reader(
    file: pq.ParquetFile,
    shard: str,
    row_group: int,
    groups: list[list[str]],
    kept: np.ndarray | None,
    counters: ReadCounters,
    reading: list[bool],
) -> Callable[[], Iterator[pa.RecordBatch]]:
    """What :attr:`RawBatch.parts` calls: each group of columns of the row group decoded, its rows ``kept``.

    The next part is decoded in a background thread while the caller encodes the current one
    (pyarrow decodes without the GIL), so two parts are held at most; closing the iterator
    waits for that read.
    """
    taken = None if kept is None else pa.array(kept)

    def decoded(group: list[str]) -> pa.RecordBatch:
        started = time.perf_counter()
        try:
            part = one_batch(file.read_row_group(row_group, columns=group, use_threads=True))
        except (pa.ArrowException, OSError) as exc:
            raise read_failure(shard, exc, f"row group {row_group} of ") from None
        finally:
            counters.seconds += time.perf_counter() - started
        return part if taken is None else part.take(taken)

    def parts() -> Iterator[pa.RecordBatch]:
        if not reading[0]:
            msg = f"The column parts of row group {row_group} of {shard!r} were asked for after the reader moved on."
            raise RuntimeError(msg)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extmem-parts") as ahead:
            pending = ahead.submit(decoded, groups[0]) if groups else None
            for following in [*groups[1:], None]:
                assert pending is not None
                part = pending.result()
                pending = None if following is None else ahead.submit(decoded, following)
                yield part

    return parts


def leaf_columns(metadata: pq.FileMetaData, roots: set[str]) -> list[int]:
    """The parquet leaf columns under the top-level columns ``roots``, found by their chunks' paths.

    Not through ``FileMetaData.schema``: it ties the parsed footer into a reference cycle that
    only a garbage collection frees, which reading rarely triggers (817k rows in 4 wide shards
    held 690 MB of parsed footers so, and ran out of a 1 GiB budget).
    """
    if metadata.num_row_groups == 0:
        return []
    first = metadata.row_group(0)
    return [i for i in range(first.num_columns) if first.column(i).path_in_schema.split(".")[0] in roots]
