"""Where shards live: local paths, or URIs (``s3://``, ``gs://``, ``hdfs://``, ``file://``, anything fsspec resolves).

A shard keeps the text it was named by (a local path or a URI) through the whole pipeline, so a
worker process or a report names it as the user did, and every file is opened here. URIs go
through pyarrow's native filesystems where it has one (S3, GCS, HDFS), fsspec's otherwise;
credentials come from each store's standard environment variables and configuration files
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``~/.aws/config``, ``GOOGLE_APPLICATION_CREDENTIALS``,
...), never from extmem's options. Reads are ranged: a shard's footer, then only the column
chunks of the columns and row groups a pass needs.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extmem._stores import is_remote, local_path, resolve, split_uri
from extmem.errors import InputPathError


def open_parquet(shard: str, **options: object) -> pq.ParquetFile:
    """``pq.ParquetFile`` of a local shard or a URI.

    A URI's reads are ranged and pre-buffered: the needed column chunks of a row group are
    fetched in a few coalesced requests (a row group's compressed chunks held until decoded),
    not one request per column.
    """
    filesystem, inner = resolve(shard)
    return pq.ParquetFile(inner, filesystem=filesystem, pre_buffer=filesystem is not None, **options)  # type: ignore[arg-type]


def file_size(shard: str) -> int:
    """The size of a shard in bytes."""
    filesystem, inner = resolve(shard)
    return os.path.getsize(inner) if filesystem is None else int(filesystem.get_file_info(inner).size or 0)


def absolute(path: str) -> str:
    """A local path made absolute (as recorded in reports and sent to workers); a URI unchanged."""
    return path if is_remote(path) else os.path.abspath(local_path(path))


def visible(name: str) -> bool:
    """Data files a folder or glob contributes: not hidden, not ``_metadata``-style, not an extmem partial file."""
    return not name.startswith((".", "_"))


def discover_remote(uri: str) -> list[str]:
    """The shards a URI names: an object, the ``*.parquet`` objects under a prefix, or those a glob in its path matches."""
    filesystem, inner = resolve(uri)
    assert filesystem is not None
    root, _, options = split_uri(uri)

    def as_uri(found: str) -> str:
        if isinstance(filesystem, pafs.PyFileSystem):
            return str(filesystem.handler.fs.unstrip_protocol(found))
        return f"{root.split('://', 1)[0]}://{found.lstrip('/')}{options}"

    try:
        if glob.has_magic(inner):
            base = inner[: re.search(r"[*?[]", inner).start()].rsplit("/", 1)[0]  # type: ignore[union-attr]
            listed = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
            matches = sorted(
                info.path
                for info in listed
                if info.is_file and fnmatch.fnmatch(info.path.lstrip("/"), inner.lstrip("/")) and visible(info.base_name)
            )
            if not matches:
                msg = f"No object matches the pattern {uri!r}."
                raise InputPathError(msg)
            return [as_uri(path) for path in matches]
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.File:
            return [uri]
        if info.type == pafs.FileType.NotFound:
            msg = f"The dataset path {uri!r} does not exist."
            raise InputPathError(msg)
        listed = filesystem.get_file_info(pafs.FileSelector(inner, recursive=False))
    except OSError as exc:
        msg = f"Cannot read the dataset path {uri!r}: {str(exc).splitlines()[0]}"
        raise InputPathError(msg) from None
    matches = sorted(info.path for info in listed if info.is_file and info.base_name.endswith(".parquet") and visible(info.base_name))
    if not matches:
        msg = f"The prefix {uri!r} holds no .parquet objects."
        raise InputPathError(msg)
    return [as_uri(path) for path in matches]
