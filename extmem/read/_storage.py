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
import functools
import glob
import os
import re
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extmem._uris import is_remote, is_uri, local_path
from extmem.errors import InputPathError

_SETTINGS = ("AWS_", "GOOGLE_", "GCS_", "HADOOP_", "ARROW_")
"""Environment variables that configure stores: a filesystem is made again when they change."""


def _filesystem(root: str) -> tuple[pafs.FileSystem, bool]:
    """The filesystem of a URI's scheme, authority and options; True when it is pyarrow's own."""
    settings = tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith(_SETTINGS)))
    return _cached_filesystem(root, settings)


@functools.cache
def _cached_filesystem(root: str, settings: tuple[tuple[str, str], ...]) -> tuple[pafs.FileSystem, bool]:
    """:func:`_filesystem`, made once per root and store ``settings`` (only a part of the cache key)."""
    try:
        return pafs.FileSystem.from_uri(root)[0], True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    except OSError as exc:
        msg = f"Cannot reach {root!r}: {str(exc).splitlines()[0]}"
        raise InputPathError(msg) from None
    try:
        import fsspec
    except ImportError:
        msg = f"Reading {root!r} needs fsspec (pip install fsspec and the package of its scheme)."
        raise InputPathError(msg) from None
    try:
        filesystem, _ = fsspec.core.url_to_fs(root)
    except (ImportError, ValueError) as exc:
        msg = f"Cannot read {root!r}: {str(exc).splitlines()[0]}"
        raise InputPathError(msg) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), False


def _split(uri: str) -> tuple[str, str, str]:
    """A URI's root (scheme, authority, options: what picks its filesystem), its path within that filesystem, and its options."""
    parts = urlsplit(uri)
    options = f"?{parts.query}" if parts.query else ""
    root = f"{parts.scheme}://{parts.netloc}/{options}"
    return root, f"{parts.netloc}{parts.path}".rstrip("/") if parts.netloc else parts.path, options


def resolve(path: str) -> tuple[pafs.FileSystem | None, str]:
    """The filesystem (None: local) and the path within it of a shard path or URI."""
    path = local_path(path)
    if not is_uri(path):
        return None, path
    root, inner, _ = _split(path)
    filesystem, native = _filesystem(root)
    if not native:
        import fsspec

        inner = fsspec.core.url_to_fs(path)[1]
    return filesystem, inner


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
    root, _, options = _split(uri)

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
