"""Local paths and URIs, and the filesystems behind URIs: pyarrow's own (S3, GCS, HDFS), fsspec's otherwise.

Credentials and endpoints come from each store's standard environment variables and
configuration files, never from extmem's options. Outputs reach a store by the store's atomic
means: a complete local file is uploaded under a hidden partial name, then moved into place (a
move in object storage copies a complete object), so no partial object ever has the final name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from extmem.errors import InputPathError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

PARTIAL_UPLOAD_SUFFIX = ".extmem-partial"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(path))


def local_path(path: str) -> str:
    """A ``file://`` URI as the local path it names, ``~`` as the home folder (as a shell would, or pandas); anything else unchanged."""
    path = path.removeprefix("file://")
    return os.path.expanduser(path) if path.startswith("~") else path


def is_remote(path: str) -> bool:
    """Whether ``path`` is read through a filesystem other than the local one."""
    return is_uri(local_path(path))


_SETTINGS = ("AWS_", "GOOGLE_", "GCS_", "HADOOP_", "ARROW_")
"""Environment variables that configure stores: a filesystem is made again when they change."""


def _filesystem(root: str) -> tuple[pafs.FileSystem, bool]:
    """The filesystem of a URI's scheme, authority and options; True when it is pyarrow's own."""
    settings = tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith(_SETTINGS)))
    return _cached_filesystem(root, settings)


@functools.cache
def _cached_filesystem(root: str, settings: tuple[tuple[str, str], ...]) -> tuple[pafs.FileSystem, bool]:
    """:func:`_filesystem`, made once per root and store ``settings`` (only a part of the cache key)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(_bounded_retries(root))[0], True
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


GCS_RETRY_SECONDS = 60
"""How long a Google Cloud Storage request is retried (pyarrow's default is 15 minutes, which an unreachable store spends
in silence); a URI's own ``?retry_limit_seconds=`` wins."""


def _bounded_retries(root: str) -> str:
    """``root`` with a retry limit for the stores whose default one is minutes long."""
    parts = urlsplit(root)
    if parts.scheme not in ("gs", "gcs") or "retry_limit_seconds=" in parts.query:
        return root
    query = "&".join(filter(None, (parts.query, f"retry_limit_seconds={GCS_RETRY_SECONDS}")))
    return parts._replace(query=query).geturl()


def split_uri(uri: str) -> tuple[str, str, str]:
    """A URI's root (scheme, authority, options: what picks its filesystem), its path within that filesystem, and its options.

    The path's ``%XX`` escapes are decoded, as pyarrow decodes them (see :func:`key_uri`).
    """
    parts = urlsplit(uri)
    options = f"?{parts.query}" if parts.query else ""
    root = f"{parts.scheme}://{parts.netloc}/{options}"
    path = unquote(parts.path)
    return root, f"{parts.netloc}{path}".rstrip("/") if parts.netloc else path, options


def key_uri(scheme: str, key: str, options: str) -> str:
    """The URI of the object ``key`` (bucket first) listed from a store: the characters a URI gives a meaning (``%``, ``?``,
    ``#``) escaped in its path, so that :func:`split_uri` gives the key back."""
    escaped = key.lstrip("/").replace("%", "%25").replace("?", "%3F").replace("#", "%23")
    return f"{scheme}://{escaped}{options}"


def child(location: str, name: str) -> str:
    """The path or URI of ``name`` in the folder or prefix ``location`` (a URI's options stay at its end)."""
    if not is_remote(location):
        return os.path.join(location, name)
    base, mark, options = location.partition("?")
    return f"{base.rstrip('/')}/{name}{mark}{options}"


def resolve(path: str) -> tuple[pafs.FileSystem | None, str]:
    """The filesystem (None: local) and the path within it of a shard path or URI."""
    path = local_path(path)
    if not is_uri(path):
        return None, path
    root, inner, _ = split_uri(path)
    filesystem, native = _filesystem(root)
    if not native:
        import fsspec

        inner = fsspec.core.url_to_fs(path)[1]
    return filesystem, inner


def remote(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it of a URI that :func:`is_remote`."""
    filesystem, inner = resolve(uri)
    assert filesystem is not None, f"{uri!r} is a local path"
    return filesystem, inner


def remote_names(uri: str) -> list[str]:
    """The names of the objects under the prefix ``uri`` (relative to it), [] when there are none."""
    import pyarrow.fs as pafs

    filesystem, inner = remote(uri)
    listed = filesystem.get_file_info(pafs.FileSelector(inner, allow_not_found=True, recursive=True))
    return sorted(info.path[len(inner) :].lstrip("/") for info in listed if info.is_file)


def check_bucket(uri: str) -> None:
    """Refuse an output URI whose bucket (its path's first part) does not exist: extmem creates no bucket."""
    import pyarrow.fs as pafs

    filesystem, inner = remote(uri)
    bucket = inner.lstrip("/").split("/", 1)[0]
    if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"the bucket {bucket!r} does not exist (extmem creates none)")


def remote_exists(uri: str) -> bool:
    """Whether the object ``uri`` exists."""
    import pyarrow.fs as pafs

    filesystem, inner = remote(uri)
    return filesystem.get_file_info(inner).type == pafs.FileType.File


def read_remote_text(uri: str) -> str | None:
    """The text of the object ``uri``, None when it cannot be read."""
    filesystem, inner = remote(uri)
    try:
        with filesystem.open_input_stream(inner) as stream:
            return bytes(stream.read()).decode()
    except (OSError, UnicodeDecodeError):
        return None


def delete_remote(uri: str) -> None:
    """Delete the object ``uri`` (nothing when it is gone)."""
    filesystem, inner = remote(uri)
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_file(inner)


def upload_file(local: str | os.PathLike[str], uri: str) -> None:
    """Copy the complete local file ``local`` to the object ``uri``: uploaded under a hidden partial name, then moved into place."""
    import pyarrow.fs as pafs

    filesystem, inner = remote(uri)
    parent, _, name = inner.rpartition("/")
    partial = f"{parent}/.{name}.{secrets.token_hex(6)}{PARTIAL_UPLOAD_SUFFIX}"
    try:
        pafs.copy_files(os.fspath(Path(local).resolve()), partial, destination_filesystem=filesystem)
        filesystem.move(partial, inner)
    finally:
        with contextlib.suppress(OSError):
            filesystem.delete_file(partial)


def download_file(uri: str, local: str | os.PathLike[str]) -> None:
    """Copy the object ``uri`` to the local file ``local``."""
    import pyarrow.fs as pafs

    filesystem, inner = remote(uri)
    pafs.copy_files(inner, os.fspath(Path(local).resolve()), source_filesystem=filesystem)
