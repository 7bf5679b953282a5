"""Opening shards where they live: local paths, or URIs (``s3://``, ``gs://``, ``hdfs://``, ``file://``, anything fsspec resolves).

A shard keeps the text it was named by (a local path or a URI) through the whole pipeline, so a
worker process or a report names it as the user did, and every file is opened here. URIs go
through pyarrow's native filesystems where it has one (S3, GCS, HDFS), fsspec's otherwise;
credentials come from each store's standard environment variables and configuration files
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``~/.aws/config``, ``GOOGLE_APPLICATION_CREDENTIALS``,
...), never from extmem's options. Reads are ranged: a shard's footer, then only the column
chunks of the columns and row groups a pass needs.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from extmem._stores import is_remote, local_path, resolve


def open_parquet(shard: str, source: pa.NativeFile | None = None, **options: object) -> pq.ParquetFile:
    """``pq.ParquetFile`` of a local shard or a URI (read through ``source`` if given: see :func:`open_source`).

    A URI's reads are ranged and pre-buffered: the needed column chunks of a row group are
    fetched in a few coalesced requests (a row group's compressed chunks held until decoded),
    not one request per column.
    """
    filesystem, inner = resolve(shard)
    if source is not None:
        return pq.ParquetFile(source, pre_buffer=filesystem is not None, **options)  # type: ignore[arg-type]
    return pq.ParquetFile(inner, filesystem=filesystem, pre_buffer=filesystem is not None, **options)  # type: ignore[arg-type]


def open_source(shard: str) -> pa.NativeFile:
    """The shard opened for ranged reads: a local file, or a store's object (its size known, nothing read yet)."""
    filesystem, inner = resolve(shard)
    return pa.OSFile(inner) if filesystem is None else filesystem.open_input_file(inner)


def footer_length(source: pa.NativeFile) -> int:
    """The serialized footer's size, from a parquet file's last 8 bytes (0 when they are not a parquet file's end)."""
    size = source.size()
    if size < 12:
        return 0
    tail = source.read_at(8, size - 8)
    return int.from_bytes(tail[:4], "little") if tail[4:] == b"PAR1" else 0


def file_size(shard: str) -> int:
    """The size of a shard in bytes."""
    return file_stamp(shard)[0]


def file_stamp(shard: str) -> tuple[int, str]:
    """The shard's size and modification time (nanoseconds; empty where a store does not say): what tells a rewritten shard."""
    filesystem, inner = resolve(shard)
    if filesystem is None:
        status = os.stat(inner)
        return status.st_size, str(status.st_mtime_ns)
    info = filesystem.get_file_info(inner)
    return int(info.size or 0), str(info.mtime_ns) if info.mtime is not None else ""


def absolute(path: str) -> str:
    """A local path made absolute (as recorded in reports and sent to workers); a URI unchanged."""
    return path if is_remote(path) else os.path.abspath(local_path(path))
