"""`extmem pack`: rewrite a dataset's count columns into the packed sparse layout, shard by shard.

Memory is one batch of input plus one row group of output. Output shards are written into a
hidden staging folder beside DST that becomes DST only when every shard is complete; a run
killed with SIGKILL leaves the staging folder, which the next run sweeps.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .blocks import to_csr
from .cache import CacheDir
from .dataset import DEFAULT_BATCH_ROWS, KMER_PATTERN
from .errors import OptionError, ShardReadError
from .layout import FeatureLayout
from .memory import MemoryMonitor, release_freed_memory
from .packed import DEFAULT_PREFIX, PackedBlock, pack_rows
from .progress import ProgressBar
from .schema import NUMERIC, discover_shards, type_kind, union_schema
from .sink import DEFAULT_ROW_GROUP_ROWS, ParquetSink
from .source import wide_features


def _block_of(schema: pa.Schema, pattern: re.Pattern[str], prefix: str) -> PackedBlock:
    names = [f.name for f in schema if pattern.search(f.name) and type_kind(f.type) == NUMERIC]
    return PackedBlock(f"{prefix}indices", f"{prefix}values", tuple(names))


def pack_shard(
    shard: str,
    out: Path,
    *,
    block_pattern: str = KMER_PATTERN,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> int:
    """Write ``shard`` to ``out`` with its count columns packed; returns the rows written.

    A shard that is already packed is copied as it is.
    """
    try:
        with pq.ParquetFile(shard) as file:
            if PackedBlock.from_metadata(file.metadata.metadata, shard) is not None:
                shutil.copyfile(shard, out)
                return file.metadata.num_rows
            schema = file.schema_arrow
            block = _block_of(schema, re.compile(block_pattern), DEFAULT_PREFIX)
            clash = {block.indices, block.values} & set(schema.names)
            if clash:
                msg = f"The shard {shard!r} already has a column named {min(clash)!r}; the packed block needs that name."
                raise OptionError(msg)
            block_set = set(block.columns)
            others = [f for f in schema if f.name not in block_set]
            index_type, layout = block.index_type(), FeatureLayout(block.columns, (True,) * len(block.columns))
            out_schema = pa.schema(
                [*others, pa.field(block.indices, pa.list_(index_type)), pa.field(block.values, pa.list_(pa.float32()))],
                metadata={**(schema.metadata or {}), **block.to_metadata()},
            )
            positions = np.arange(len(block.columns))
            with ParquetSink(out, out_schema, row_group_rows=row_group_rows) as sink:
                for batch in file.iter_batches(batch_size=batch_rows, use_threads=True):
                    counts = to_csr(wide_features(batch, block.columns, positions), layout)
                    indices, values = pack_rows(counts, block)
                    arrays = [batch.column(f.name) for f in others]
                    sink.write(pa.RecordBatch.from_arrays([*arrays, indices, values], schema=out_schema))
            return sink.rows
    except (pa.ArrowException, OSError) as exc:
        msg = f"Cannot read the parquet shard {shard!r}: {exc}"
        raise ShardReadError(msg) from None
    finally:
        release_freed_memory()


def pack(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    block_pattern: str = KMER_PATTERN,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    progress: bool = False,
) -> dict[str, Any]:
    """Write every shard of ``src`` into the folder ``dst`` with its count columns packed; mirrors ``extmem pack``.

    ``block_pattern`` selects the count columns (default: k-mer columns). ``dst`` must not
    exist or be empty; it appears, complete, only at the end. Returns rows, bytes and memory.
    """
    target = Path(dst)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        msg = f"The output folder {str(target)!r} exists and is not empty; pack writes a new dataset."
        raise OptionError(msg)
    try:
        re.compile(block_pattern)
    except re.error as exc:
        msg = f"The --block pattern {block_pattern!r} is not a regular expression: {exc}"
        raise OptionError(msg) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    shards = union_schema(discover_shards([os.fspath(src)])).shards
    names = [Path(shard).name for shard in shards]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        msg = f"Two input shards are named {duplicate!r}; pack writes every shard into one folder."
        raise OptionError(msg)
    started = time.perf_counter()
    rows = 0
    with MemoryMonitor() as monitor, CacheDir(target.parent, prefix=f".{target.name}.partial-") as staging:
        with ProgressBar(len(shards), "packing", "shards", progress) as bar:
            for shard in shards:
                rows += pack_shard(
                    shard,
                    staging.path / Path(shard).name,
                    block_pattern=block_pattern,
                    batch_rows=batch_rows,
                    row_group_rows=row_group_rows,
                )
                bar.update(1)
        if target.exists():
            target.rmdir()
        staging.publish(target)
    return {
        "shards": len(shards),
        "rows": rows,
        "input_bytes": sum(os.path.getsize(shard) for shard in shards),
        "output_bytes": sum(entry.stat().st_size for entry in target.iterdir()),
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
    }
