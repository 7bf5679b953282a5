"""Private folders (XGBoost caches, page spools, staging folders of outputs) that never outlive their run.

Each folder holds a lock file that its run keeps locked (``flock``) for the folder's whole life.
A run killed with SIGKILL cannot clean up, but the kernel releases its lock, so whoever creates
a folder under the same root sweeps the folders whose lock is free. Ownership is the lock, not a
process id, so it holds across PID namespaces, containers and hosts that share the root. A
folder is created under a hidden temporary name and renamed to its sweepable name only once its
lock is held, so a sweeper never sees a live folder unlocked.

On network filesystems ``flock`` works where the server supports locks (NFSv4, or NFSv3 with
NLM); where it does not, give each host its own root (``cache_dir``).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from extmem._signals import deferred
from extmem._stores import is_remote, local_path
from extmem.errors import OptionError

CACHE_PREFIX = "extmem-cache-"
LOCK_FILE = ".extmem-lock"
_NEW_PREFIX = ".extmem-new-"
_UNLOCKED_GRACE_SECONDS = 3600
"""A folder without a held lock file (left by a run killed while creating it) is swept once this old."""
_LIVE: dict[Path, PrivateFolder] = {}


@atexit.register
def _remove_live_folders() -> None:
    """At interpreter exit, remove the folders whose owners were never closed."""
    for folder in list(_LIVE.values()):
        folder.cleanup()


def current_umask() -> int:
    """The process's file-creation mask (read from /proc where possible: changing it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return False  # no locks here: never sweep what may be live
        raise
    return True


def _old(folder: Path) -> bool:
    try:
        return time.time() - folder.stat().st_mtime > _UNLOCKED_GRACE_SECONDS
    except OSError:
        return False


def _sweep_one(folder: Path) -> bool:
    """Remove ``folder`` if no live run holds its lock; True when removed.

    A folder still being created (hidden name) may not hold its lock yet: only its age tells.
    """
    if folder in _LIVE:
        return False
    if folder.name.startswith(_NEW_PREFIX):
        if not _old(folder):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if not _old(folder):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        if not _try_lock(fd):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def sweep_stale(root: str | os.PathLike[str], prefix: str = CACHE_PREFIX) -> list[Path]:
    """Remove the folders named ``prefix*`` (and abandoned ones being created) under ``root`` whose runs are gone."""
    removed: list[Path] = []
    try:
        entries = [entry for entry in os.scandir(root) if entry.name.startswith((prefix, _NEW_PREFIX))]
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and _sweep_one(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


class PrivateFolder:
    """A locked private folder under ``root`` (default: the system temp folder, never the working folder).

    A context manager: the folder and everything in it are deleted on exit, on error too. A
    staging folder for an ``output`` names it in the system errors (a full disk) that end its block:
    they name a file in the folder, or no file at all.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        prefix: str = CACHE_PREFIX,
        *,
        option: str = "cache_dir",
        output: str | os.PathLike[str] | None = None,
    ) -> None:
        self.output = None if output is None else os.fspath(output)
        root_text = os.fspath(root) if root is not None else tempfile.gettempdir()
        if is_remote(root_text):
            msg = f"The '{option}' folder {root_text!r} must be a local folder: XGBoost maps its cache files into memory."
            raise OptionError(msg, options=(option,))
        root_path = Path(local_path(root_text))
        if not root_path.is_dir():
            msg = f"The '{option}' folder {str(root_path)!r} is not an existing folder."
            raise OptionError(msg, options=(option,))
        sweep_stale(root_path, prefix)
        try:
            new = Path(tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=root_path))
        except OSError as exc:
            where = (
                f"Cannot write the '{option}' {self.output!r}"
                if self.output is not None
                else f"The '{option}' folder {root_text!r} is unusable"
            )
            msg = f"{where}: no folder can be created in {root_text!r} ({exc.strerror or exc})."
            raise OptionError(msg, options=(option,)) from None
        try:
            self._lock = os.open(new / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.path = root_path / f"{prefix}{secrets.token_hex(8)}"
        os.rename(new, self.path)
        _LIVE[self.path] = self

    @property
    def prefix(self) -> str:
        """The ``cache_prefix`` to give XGBoost."""
        return str(self.path / "xgb")

    def size_bytes(self) -> int:
        """Bytes currently stored in the folder's files."""
        total = 0
        for entry in self.path.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size if entry.is_file() else 0
        return total

    def publish(self, target: Path) -> None:
        """Rename the folder to ``target`` (absent, or an empty folder); see :meth:`published_as`."""
        os.rename(self.path, target)
        self.published_as(target)

    def published_as(self, target: Path) -> None:
        """The folder now lives at ``target``: give it the user's umask, drop its lock file, and stop owning it."""
        os.chmod(target, 0o777 & ~current_umask())
        _LIVE.pop(self.path, None)
        (target / LOCK_FILE).unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def cleanup(self) -> None:
        """Delete the folder and everything in it (idempotent); a signal meanwhile is handled after it."""
        with deferred():
            if self._lock >= 0:
                shutil.rmtree(self.path, ignore_errors=True)
            _LIVE.pop(self.path, None)
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, OSError) and self.output is not None:
            exc.filename = self._as_output(exc.filename)
        self.cleanup()

    def _as_output(self, filename: object) -> object:
        """Where ``filename`` (in this folder, or None) would have been in the output."""
        if filename is None:
            return self.output
        try:
            inside = Path(os.fsdecode(filename)).relative_to(self.path)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return filename
        return os.path.join(str(self.output), inside)
