"""Shard rewriting: count columns to the packed layout (`extmem pack`), optionally without dropped columns.

Memory is one batch of input, or one row group whose count columns are decoded in column parts, plus
one row group of output. Output shards are written into a
hidden staging folder beside DST that becomes DST only when every shard is complete; a run
killed with SIGKILL leaves the staging folder, which the next run sweeps.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from extmem._allocators import release_freed_memory
from extmem._atomic import write_json
from extmem._contracts import PACKED_METADATA_KEY, PackedBlock, ReadCounters
from extmem._defaults import DEFAULT_BATCH_ROWS, DEFAULT_ROW_GROUP_ROWS, output_row_group_bytes
from extmem._destinations import MANIFEST_FILE, check_output_folder, publish_folder, staging_folder
from extmem._layout import FeatureLayout
from extmem._measure import MemoryMonitor
from extmem._presets import KMER_PATTERN
from extmem._progress import ProgressBar
from extmem._signals import raise_if_stopped
from extmem._sink import TableSink
from extmem._version import __version__
from extmem.encode._blocks import to_csr
from extmem.encode._features import FeatureColumns, wide_features
from extmem.encode._packed import DEFAULT_PREFIX, pack_rows, unpack
from extmem.errors import OptionError, check_positive_int, read_failure
from extmem.read._discover import check_not_replacing_input, discover_shards, partition_path, partition_values
from extmem.read._parts import byte_width, column_parts, leaf_columns, one_batch, part_reader
from extmem.read._scan import NUMERIC, Schema, scan, type_kind
from extmem.read._storage import absolute, file_size, open_parquet


class ShardRewriter:
    """Rewrites one shard: its count block packed (or wide), ``drop`` columns left out, other columns as they are."""

    def __init__(
        self,
        shard: str,
        file: pq.ParquetFile,
        *,
        block_pattern: str,
        drop: Collection[str],
        packed_output: bool,
        folder_values: Mapping[str, pa.Scalar] | None = None,
    ) -> None:
        self.shard = shard
        schema = file.schema_arrow
        self.input_block = PackedBlock.from_metadata(file.metadata.metadata, shard)
        if self.input_block is not None:
            block_names = list(self.input_block.columns)
            physical = {self.input_block.indices, self.input_block.values}
        else:
            pattern = re.compile(block_pattern)
            block_names = [f.name for f in schema if pattern.search(f.name) and type_kind(f.type) == NUMERIC]
            physical = set(block_names)
        self.kept_block = [name for name in block_names if name not in drop]
        self.others = [f for f in schema if f.name not in physical and f.name not in drop and f.name not in block_names]
        self.folder_values = dict(folder_values or {})
        self.others += [pa.field(name, value.type) for name, value in self.folder_values.items()]
        self.packed_output = packed_output
        new_index = {name: i for i, name in enumerate(self.kept_block)}
        self.block_positions = np.array([new_index.get(name, -1) for name in block_names], dtype=np.int64)
        self.layout = FeatureLayout(tuple(self.kept_block), (True,) * len(self.kept_block))
        if packed_output:
            self.output_block: PackedBlock | None = PackedBlock(
                f"{DEFAULT_PREFIX}indices", f"{DEFAULT_PREFIX}values", tuple(self.kept_block)
            )
            clash = {self.output_block.indices, self.output_block.values} & {f.name for f in self.others}
            if clash:
                msg = f"The shard {shard!r} already has a column named {min(clash)!r}; the packed block needs that name."
                raise OptionError(msg)
            block_fields = [
                pa.field(self.output_block.indices, pa.list_(self.output_block.index_type())),
                pa.field(self.output_block.values, pa.list_(pa.float32())),
            ]
            metadata = {**(schema.metadata or {}), **self.output_block.to_metadata()}
        else:
            self.output_block = None
            kinds = {f.name: f.type for f in schema}
            block_fields = [pa.field(name, kinds.get(name, pa.float32())) for name in self.kept_block]
            metadata = {k: v for k, v in (schema.metadata or {}).items() if k != PACKED_METADATA_KEY}
        self.schema = pa.schema([*self.others, *block_fields], metadata=metadata)
        self.read_columns = [f.name for f in self.others if f.name not in self.folder_values] + (
            [self.input_block.indices, self.input_block.values] if self.input_block is not None else self.kept_block
        )

    def _block_csr(self, batch: pa.RecordBatch) -> sp.csr_matrix:
        if self.input_block is not None:
            entries = unpack(
                batch.column(self.input_block.indices), batch.column(self.input_block.values), self.block_positions, self.shard
            )
            matrix = sp.csr_matrix((entries.values, entries.positions, entries.offsets), shape=(batch.num_rows, len(self.kept_block)))
            matrix.sort_indices()
            return matrix
        return to_csr(wide_features(batch, self.kept_block, np.arange(len(self.kept_block))), self.layout, repr(self.shard))

    def batches(self, file: pq.ParquetFile, batch_rows: int, whole_rows: int) -> Iterator[pa.RecordBatch]:
        """The shard's output batches, in order: row batches of ``batch_rows`` rows, or, when a wide count block is packed, a
        row group of at most ``whole_rows`` rows whole, its count columns decoded in column parts (no reader per column:
        packing 65,536 columns in row batches took 3 GiB), if its other columns hold no more than an output row group."""
        parted = self.output_block is not None and self.input_block is None and len(self.kept_block) > 1
        read_others = [f.name for f in self.others if f.name not in self.folder_values]
        schema = file.schema_arrow  # built anew on every access
        widths = [byte_width(schema.field(name).type) or 8 for name in self.kept_block] if parted else []
        leaves = leaf_columns(file.metadata, set(read_others)) if parted else []
        positions = {name: i for i, name in enumerate(self.kept_block)}
        most = output_row_group_bytes(len(self.schema))
        for row_group in range(file.num_row_groups):
            metadata = file.metadata.row_group(row_group)
            rows = metadata.num_rows
            others_bytes = 2 * sum(metadata.column(i).total_uncompressed_size for i in leaves)  # decoded strings: about twice
            if not parted or not 0 < rows <= whole_rows or others_bytes > most:
                for batch in file.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=self.read_columns, use_threads=True):
                    yield self.convert(batch)
                continue
            others = one_batch(file.read_row_group(row_group, columns=read_others, use_threads=True))
            groups = column_parts(self.kept_block, widths, rows)
            parts = part_reader(file, self.shard, row_group, groups, None, ReadCounters(), [True])()
            features = (wide_features(part, part.schema.names, np.array([positions[n] for n in part.schema.names])) for part in parts)
            empty = FeatureColumns(rows, pa.record_batch([]), np.zeros(0, dtype=np.int64))
            try:
                yield self.convert(others, to_csr(empty, self.layout, repr(self.shard), features))
            finally:
                parts.close()

    def convert(self, batch: pa.RecordBatch, block: sp.csr_matrix | None = None) -> pa.RecordBatch:
        """One input batch as an output batch (its count block, if given, already as CSR)."""
        arrays = [
            pa.repeat(self.folder_values[f.name], batch.num_rows) if f.name in self.folder_values else batch.column(f.name)
            for f in self.others
        ]
        if self.output_block is not None:
            arrays.extend(pack_rows(self._block_csr(batch) if block is None else block, self.output_block))
        elif self.input_block is None:
            arrays.extend(batch.column(name) for name in self.kept_block)
        else:
            dense = self._block_csr(batch).toarray()
            arrays.extend(pa.array(dense[:, j]) for j in range(dense.shape[1]))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def rewrite_shard(
    shard: str,
    out: Path,
    *,
    block_pattern: str = KMER_PATTERN,
    drop: Collection[str] = (),
    packed_output: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    folder_values: Mapping[str, pa.Scalar] | None = None,
) -> int:
    """Write ``shard`` to ``out`` through a :class:`ShardRewriter` (with ``folder_values`` as columns); returns the rows written."""
    try:
        with open_parquet(shard) as file:
            rewriter = ShardRewriter(
                shard, file, block_pattern=block_pattern, drop=drop, packed_output=packed_output, folder_values=folder_values
            )
            with TableSink(out, rewriter.schema, row_group_rows=row_group_rows) as sink:
                for batch in rewriter.batches(file, batch_rows, row_group_rows):
                    raise_if_stopped()
                    sink.write(batch)
            return sink.rows
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None and os.fsdecode(exc.filename) == os.fspath(out):
            raise  # writing the output failed (a full disk), not reading the shard
        raise read_failure(shard, exc) from None
    finally:
        release_freed_memory()


def scanned_shards(src: str | os.PathLike[str]) -> Schema:
    """The scanned schema of ``src``'s shards (partition folders' values included), refusing two with the same output name."""
    shards = discover_shards([os.fspath(src)])
    schema = scan(shards, partition_values([os.fspath(src)], shards))
    names = [output_name(schema, shard) for shard in schema.shards]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        msg = f"Two input shards are named {duplicate!r}; the output folder holds every shard under its own name."
        raise OptionError(msg)
    return schema


def output_name(schema: Schema, shard: str) -> str:
    """The file name of ``shard``'s rewrite: its own, or for a partitioned shard its partition path (``chrom=chr1__part-0.parquet``)."""
    path = partition_path(shard)  # as its store names it
    return path.replace("/", "__") if shard in schema.partitions else path.rsplit("/", 1)[-1]


def folder_columns(schema: Schema, shard: str, drop: Collection[str] = ()) -> dict[str, pa.Scalar]:
    """The columns a partitioned shard's folders give it (as scanned), which its rewrite holds as columns of its own."""
    values = schema.partitions.get(shard, {})
    return {name: pa.scalar(value, schema.columns[name].arrow_type) for name, value in values.items() if name not in drop}


def _check_block_matches(schema: Schema, block_pattern: str, src: str | os.PathLike[str]) -> None:
    """Refuse a ``block_pattern`` that matches no numeric column of a wide dataset: the rewrite would pack nothing, silently."""
    pattern = re.compile(block_pattern)
    from_folders = {name for values in schema.partitions.values() for name in values}  # never packed
    stored = (name for name, column in schema.columns.items() if column.kind == NUMERIC and name not in from_folders)
    if not schema.packed_blocks and not any(pattern.search(name) for name in stored):
        msg = f"The 'block_pattern' {block_pattern!r} matches no numeric column of {os.fspath(src)!r}: there are no count columns to pack."
        raise OptionError(msg, options=("block_pattern",))


def pack(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    block_pattern: str = KMER_PATTERN,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write every shard of ``src`` into the folder ``dst`` with its count columns packed; mirrors ``extmem pack``.

    ``block_pattern`` selects the count columns (default: k-mer columns). ``dst`` must not exist
    or be empty, unless ``overwrite`` and extmem wrote it; it appears, complete, only at the end,
    with ``_manifest.json``. Returns rows, bytes and memory.
    """
    for name, value in (("batch_rows", batch_rows), ("row_group_rows", row_group_rows)):
        check_positive_int(value, name)
    target = check_output_folder(dst, overwrite=overwrite, option="dst")
    try:
        re.compile(block_pattern)
    except re.error as exc:
        msg = f"The 'block_pattern' {block_pattern!r} is not a regular expression: {exc}"
        raise OptionError(msg, options=("block_pattern",)) from None
    schema = scanned_shards(src)
    shards = schema.shards
    check_not_replacing_input(dst, shards)
    _check_block_matches(schema, block_pattern, src)
    started = time.perf_counter()
    rows = 0
    with MemoryMonitor() as monitor, staging_folder(target) as staging:
        with ProgressBar(len(shards), "packing", "shards", progress) as bar:
            for shard in shards:
                rows += rewrite_shard(
                    shard,
                    staging.path / output_name(schema, shard),
                    block_pattern=block_pattern,
                    batch_rows=batch_rows,
                    row_group_rows=row_group_rows,
                    folder_values=folder_columns(schema, shard),
                )
                bar.update(1)
        output_bytes = sum(entry.stat().st_size for entry in staging.path.glob("*.parquet"))
        report = {
            "extmem_version": __version__,
            "command": "pack",
            "source": [absolute(shard) for shard in shards],
            "block_pattern": block_pattern,
            "shards": len(shards),
            "rows": rows,
            "input_bytes": sum(file_size(shard) for shard in shards),
            "output_bytes": output_bytes,
            "files": [output_name(schema, shard) for shard in shards],
        }
        write_json(staging.path / MANIFEST_FILE, report)
        publish_folder(staging, target, replace=overwrite)
    return {
        **report,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
    }
