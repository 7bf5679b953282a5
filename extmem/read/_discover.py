"""Find a dataset's parquet shards: folders, globs and files, each file once; prefixes, patterns and objects in object storage."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable
from pathlib import PurePath
from urllib.parse import unquote

import pyarrow.fs as pafs

from extmem._stores import is_remote, key_uri, local_path, remote, split_uri
from extmem.errors import InputPathError, OptionError


def _visible(name: str) -> bool:
    """Data files a folder or glob contributes: not hidden, not ``_metadata``-style, not an extmem partial file."""
    return not name.startswith((".", "_"))


PARTITION_FOLDER = re.compile(r"([^=/]+)=([^/]*)")
"""A hive partition folder's name, ``key=value`` (as Spark, dask and pyarrow write them)."""
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
"""The value Spark and pyarrow write for a null partition value."""


def _partition_folders(relative: str) -> dict[str, str | None] | None:
    """The partition values of a file at ``relative`` (below its dataset folder), or None when a folder is no ``key=value``."""
    values: dict[str, str | None] = {}
    for folder in relative.split("/")[:-1]:
        match = PARTITION_FOLDER.fullmatch(folder)
        if match is None or not _visible(folder):
            return None
        value = unquote(match.group(2))
        values[unquote(match.group(1))] = None if value == HIVE_NULL else value
    return values


def _root(path: str) -> str:
    """The folder a dataset path names, whose own name gives no column ("" for a file or a glob)."""
    if glob.has_magic(path) and not (not is_remote(path) and os.path.exists(path)):
        return ""
    return _unescaped(path).rstrip("/") if is_remote(path) or os.path.isdir(path) else ""


def _unescaped(path: str) -> str:
    """A URI without its options, its path decoded as :func:`extmem._stores.split_uri` decodes it; a local path as it is."""
    return "://".join(_location(path)) if is_remote(path) else path


def partition_path(shard: str) -> str:
    """A shard's file name with the ``key=value`` folders right above it (``chrom=chr1/part-0.parquet``), as its store names them."""
    parts = _unescaped(shard).replace(os.sep, "/").split("/")
    kept = len(parts) - 1
    while kept > 0 and _visible(parts[kept - 1]) and PARTITION_FOLDER.fullmatch(parts[kept - 1]):
        kept -= 1
    return "/".join(parts[kept:])


def partition_values(paths: Iterable[str], shards: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """Each shard's hive partition values, from the ``key=value`` folders between its dataset folder and itself; for a shard
    named as a file or matched by a glob, from those right above it (so a worker given a partitioned dataset's files, or a
    glob of one partition, reads them alike).

    Text as written in the folder names (URL-decoded; Spark's null marker as None); shards outside partition folders have none.
    """
    roots = [root for root in (_root(local_path(path) if not is_remote(path) else path) for path in paths) if root]
    found: dict[str, dict[str, str | None]] = {}
    for shard in shards:
        plain = _unescaped(shard)
        root = next((root for root in roots if plain.startswith(root + "/")), None)
        values = _partition_folders(plain[len(root) + 1 :] if root is not None else partition_path(plain))
        if values:
            found[shard] = values
    return found


def _refuse_mixed(path: str, shards: list[str], nested: list[str]) -> None:
    """Refuse a folder holding shards of its own beside shards in ``key=value`` partition folders: one kind would be left unread."""
    if shards and nested:
        msg = (
            f"The folder {path!r} holds shards of its own (such as {shards[0]!r}) and in partition folders (such as "
            f"{nested[0]!r}); read one or the other: move its own shards into a partition, or give a glob."
        )
        raise InputPathError(msg)


def _hive_files(folder: str) -> list[str]:
    """The visible ``*.parquet`` files in the ``key=value`` folders below ``folder`` (a partitioned dataset), sorted."""
    files: list[str] = []
    for current, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if _visible(name) and PARTITION_FOLDER.fullmatch(name))
        if current != folder:
            files.extend(os.path.join(current, name) for name in names if name.endswith(".parquet") and _visible(name))
    return sorted(files)


def discover_remote(uri: str) -> list[str]:
    """The shards a URI names: an object, the ``*.parquet`` objects under a prefix, or those a glob in its path matches."""
    filesystem, inner = remote(uri)
    root, _, options = split_uri(uri)

    def as_uri(found: str) -> str:
        if isinstance(filesystem, pafs.PyFileSystem):
            return str(filesystem.handler.fs.unstrip_protocol(found))
        return key_uri(root.split("://", 1)[0], found, options)

    try:
        if glob.has_magic(inner) and filesystem.get_file_info(inner).type == pafs.FileType.NotFound:  # an existing name is itself
            base = inner[: re.search(r"[*?[]", inner).start()].rsplit("/", 1)[0]  # type: ignore[union-attr]
            listed = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
            matches = sorted(
                info.path
                for info in listed
                if info.is_file and fnmatch.fnmatch(info.path.lstrip("/"), inner.lstrip("/")) and _visible(info.base_name)
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
    matches = sorted(info.path for info in listed if info.is_file and info.base_name.endswith(".parquet") and _visible(info.base_name))
    partitioned = any(info.type == pafs.FileType.Directory and PARTITION_FOLDER.fullmatch(info.base_name) for info in listed)
    if partitioned or not matches:  # a partitioned dataset: its objects under key=value prefixes
        try:
            below = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
        except OSError as exc:
            msg = f"Cannot read the dataset path {uri!r}: {str(exc).splitlines()[0]}"
            raise InputPathError(msg) from None
        base = inner.rstrip("/")
        nested = sorted(
            info.path
            for info in below
            if info.is_file
            and info.base_name.endswith(".parquet")
            and _visible(info.base_name)
            and _partition_folders(info.path.lstrip("/")[len(base.lstrip("/")) + 1 :])
        )
        _refuse_mixed(uri, matches, nested)
        matches = matches or nested
    if not matches:
        msg = f"The prefix {uri!r} holds no .parquet objects."
        raise InputPathError(msg)
    return [as_uri(path) for path in matches]


def _empty_folder_message(path: str) -> str:
    """Why a folder gave no shards, pointing at a glob when its subfolders (a partitioned dataset) hold some."""
    nested = next((p for p in glob.iglob(os.path.join(glob.escape(path), "**", "*.parquet"), recursive=True) if os.path.isfile(p)), None)
    if nested is None:
        return f"The folder {path!r} holds no .parquet files."
    pattern = os.path.join(path, "**", "*.parquet")
    return (
        f"The folder {path!r} holds no .parquet files, but its subfolders do (such as {nested!r}): "
        f"give a glob such as {pattern!r} to read them (only key=value subfolders, a partitioned dataset's, are read without one)."
    )


def discover_shards(paths: Iterable[str]) -> list[str]:
    """Expand folders (their ``*.parquet`` files, sorted), globs and files into shard paths; URIs likewise (prefixes for folders).

    A path that exists is a file or folder even when its name holds glob characters (``run[1]/``).
    A folder without shards of its own is read as a partitioned dataset when its ``key=value``
    subfolders hold some (see :func:`partition_values`).

    Folders and globs skip hidden and ``_``-prefixed files, as pyarrow's datasets do (extmem's
    own partial files are hidden). Two paths to one file (a symbolic or hard link) are refused:
    the file would be read twice.
    """
    shards: list[str] = []
    remote: set[str] = set()
    for path in paths:
        if is_remote(path):
            found = discover_remote(path)
            twice = sorted(remote.intersection(found))
            if twice:
                msg = f"The shard {twice[0]!r} is listed more than once; it would be read twice."
                raise InputPathError(msg)
            remote.update(found)
            shards.extend(found)
            continue
        path = local_path(path)
        if glob.has_magic(path) and not os.path.exists(path):  # a file or folder named with '[' or '?' is itself, not a pattern
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p) and _visible(os.path.basename(p)))
            if not matches:
                msg = f"No file matches the pattern {path!r}."
                raise InputPathError(msg)
            shards.extend(matches)
        elif os.path.isdir(path):
            entries = list(os.scandir(path))
            matches = sorted(
                entry.path for entry in entries if entry.name.endswith(".parquet") and _visible(entry.name) and entry.is_file()
            )
            partitioned = any(entry.is_dir() and PARTITION_FOLDER.fullmatch(entry.name) and _visible(entry.name) for entry in entries)
            nested = _hive_files(path) if partitioned else []
            _refuse_mixed(path, matches, nested)
            matches = matches or nested
            if not matches:
                raise InputPathError(_empty_folder_message(path))
            shards.extend(matches)
        elif os.path.isfile(path):
            shards.append(path)
        else:
            what = "is not a file or a folder (a pipe or a device: write the data to a file)" if os.path.exists(path) else "does not exist"
            raise InputPathError(f"The dataset path {path!r} {what}.")
    seen: dict[tuple[int, int], str] = {}
    for shard in shards:
        if shard in remote:
            continue
        status = os.stat(shard)
        first = seen.get((status.st_dev, status.st_ino))
        if first is not None:
            same = "listed more than once" if first == shard else f"the same file as {first!r} (a link)"
            msg = f"The shard {shard!r} is {same}; it would be read twice."
            raise InputPathError(msg)
        seen[(status.st_dev, status.st_ino)] = shard
    return shards


def _location(path: str, *, real: bool = False) -> tuple[str, str]:
    """Where ``path`` points, comparable however it is spelt: ("", its absolute local path) or (a store's scheme, its key)."""
    path = local_path(path)
    if is_remote(path):
        root, inner, _ = split_uri(path)
        return root.split("://", 1)[0], inner
    return "", os.path.realpath(path) if real else os.path.abspath(path)


def would_be_a_shard(path: str | os.PathLike[str], dataset_paths: Iterable[str]) -> bool:
    """Whether a file written at ``path`` would be read as a shard of the dataset at ``dataset_paths`` next time."""
    store, target = _location(os.fspath(path))
    separator = "/" if store else os.sep
    if not _visible(target.rsplit(separator, 1)[-1]):
        return False
    for given in dataset_paths:
        given_store, source = _location(given)
        if given_store != store:
            continue
        if glob.has_magic(given) and not (store or os.path.exists(source)):
            if fnmatch.fnmatchcase(target, source) if store else PurePath(target).match(source):
                return True
        elif (store or os.path.isdir(source)) and target.endswith(".parquet") and target.startswith(source.rstrip(separator) + separator):
            inside = target[len(source.rstrip(separator)) + 1 :].replace(os.sep, "/")
            if "/" not in inside or _partition_folders(inside):  # in the folder, or in its partition folders
                return True
    return False


def check_not_replacing_input(folder: str | os.PathLike[str], shards: Iterable[str], option: str = "dst") -> None:
    """Refuse an output folder that holds shards it is written from: publishing it would replace its own input."""
    store, target = _location(os.fspath(folder), real=True)
    separator = "/" if store else os.sep
    for shard in shards:
        shard_store, source = _location(shard, real=True)
        if shard_store == store and source.startswith(target.rstrip(separator) + separator):
            msg = f"The '{option}' folder {os.fspath(folder)!r} holds the shard {shard!r} it is written from, and the result would replace it. Write elsewhere."
            raise OptionError(msg, options=(option,))
