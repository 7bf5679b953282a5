"""Find a dataset's parquet shards: folders, globs and files, each file once."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from extmem.errors import InputPathError
from extmem.read._storage import discover_remote, is_remote, local_path, visible


def discover_shards(paths: Iterable[str]) -> list[str]:
    """Expand folders (their ``*.parquet`` files, sorted), globs and files into shard paths; URIs likewise (prefixes for folders).

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
        if glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p) and visible(os.path.basename(p)))
            if not matches:
                msg = f"No file matches the pattern {path!r}."
                raise InputPathError(msg)
            shards.extend(matches)
        elif os.path.isdir(path):
            matches = sorted(
                entry.path for entry in os.scandir(path) if entry.name.endswith(".parquet") and visible(entry.name) and entry.is_file()
            )
            if not matches:
                msg = f"The folder {path!r} holds no .parquet files."
                raise InputPathError(msg)
            shards.extend(matches)
        elif os.path.isfile(path):
            shards.append(path)
        else:
            msg = f"The dataset path {path!r} does not exist."
            raise InputPathError(msg)
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
