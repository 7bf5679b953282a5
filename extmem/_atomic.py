"""Atomic output files: a file appears complete under its final name, or not at all.

Every write goes to a hidden partial file beside the target whose name is unique to the writer
(``.NAME.<random>.extmem-partial``, never ending in ``.parquet``, so no reader takes it for a
shard). It is created exclusively and never through a symbolic link, locked (``flock``) for as
long as it is written, flushed to disk and renamed over the target; on any error or interruption
it is deleted. Two writers of one target never share a file: the last complete one wins, and no
reader ever sees a torn file. A writer killed with SIGKILL leaves its partial unlocked; the next
writer into the same folder sweeps it.

A partial is created under a ``.extmem-new`` name and renamed to its ``.extmem-partial`` name
only once locked, so a sweeper never sees an unlocked partial of a live writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from extmem._signals import deferred
from extmem._stores import is_remote, local_path, upload_file
from extmem.errors import OptionError

PARTIAL_SUFFIX = ".extmem-partial"
_NEW_SUFFIX = ".extmem-new"
_ABANDONED_NEW_SECONDS = 3600
"""A ``.extmem-new`` file older than this was left by a writer killed between creating and locking it."""
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _lock_exclusive(fd: int, *, wait: bool) -> bool:
    """``flock`` the open file; False when another open file holds the lock and ``wait`` is False."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a filesystem without locks: treat every partial as live
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return wait
        raise
    return True


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_partial(target: Path) -> tuple[int, Path]:
    """An exclusively created, locked partial file beside ``target``: its descriptor and path."""
    stem = f".{target.name}.{secrets.token_hex(6)}"
    new, partial = target.with_name(stem + _NEW_SUFFIX), target.with_name(stem + PARTIAL_SUFFIX)
    fd = os.open(new, _CREATE_FLAGS, 0o666)
    try:
        _lock_exclusive(fd, wait=True)
        os.rename(new, partial)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            new.unlink()
        raise
    return fd, partial


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, replace: bool = True) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through; it replaces ``path`` only when the block ends without error.

    Without ``replace`` the file is only created: if ``path`` appeared meanwhile (another run
    wrote it), the new file is discarded and OptionError names ``path`` and 'overwrite'.

    For a URI the file is written locally, then uploaded by partial name and move (see :mod:`extmem._stores`).
    """
    if is_remote(os.fspath(path)):
        with tempfile.TemporaryDirectory(prefix="extmem-upload-") as folder:
            local = Path(folder) / "file"
            with open(local, "wb") as file:
                yield file
            upload_file(local, os.fspath(path))
        return
    target = Path(local_path(os.fspath(path)))
    if target.is_dir():
        msg = f"Cannot write the file {os.fspath(path)!r}: it is a folder."
        raise IsADirectoryError(errno.EISDIR, msg, os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(target.parent)
    try:
        fd, partial = _create_partial(target)
    except OSError as exc:  # the partial's hidden name means nothing to the user: name the file being written
        exc.filename = os.fspath(path)
        raise
    published = False
    try:
        with os.fdopen(os.dup(fd), "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        with deferred():
            _publish_file(partial, target, replace)
            published = True
        _fsync_folder(target.parent)
    except OSError as exc:  # a full disk names no file: name the one being written
        if exc.filename is None or os.fsdecode(exc.filename) == str(partial):
            exc.filename = os.fspath(path)
        raise
    finally:
        with deferred():
            if not published:
                with contextlib.suppress(OSError):
                    partial.unlink()
            os.close(fd)


def _publish_file(partial: Path, target: Path, replace: bool) -> None:
    """Give the complete ``partial`` its final name: over ``target``, or only if no file has it (a hard link cannot replace)."""
    if replace:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)
    except FileExistsError:
        raise written_meanwhile(target) from None
    except OSError as exc:  # a filesystem without hard links: check, then rename
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        if os.path.lexists(target):
            raise written_meanwhile(target) from None
        os.replace(partial, target)
        return
    partial.unlink()


def written_meanwhile(target: str | os.PathLike[str]) -> OptionError:
    """The error for an output that another run wrote while this one ran, when this one may not replace it."""
    msg = f"{os.fspath(target)!r} was written by another run while this one ran; pass 'overwrite' to replace it."
    return OptionError(msg, options=("overwrite",))


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *, replace: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a partial file renamed into place when complete (see :func:`atomic_file`)."""
    with atomic_file(path, replace=replace) as file:
        write(file)


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays (``json.dumps(..., default=json_default)``); any other object as its text."""
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str | os.PathLike[str], data: Any, *, replace: bool = True) -> None:
    """Write ``data`` as indented JSON, atomically (numpy scalars and arrays become numbers and lists)."""
    text = json.dumps(data, indent=2, default=json_default) + "\n"
    write_atomically(path, lambda file: file.write(text.encode()), replace=replace)


def is_partial(name: str) -> bool:
    """Whether a file name is one of extmem's partial files (never data)."""
    return name.endswith((PARTIAL_SUFFIX, _NEW_SUFFIX))


def sweep_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the partial files in ``folder`` whose writers are gone (their lock is free); returns them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(".") or not is_partial(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if entry.name.endswith(_NEW_SUFFIX):
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > _ABANDONED_NEW_SECONDS:
                    path.unlink()
                    removed.append(path)
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _lock_exclusive(fd, wait=False):
                path.unlink(missing_ok=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed
