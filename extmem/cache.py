"""Private cache directories for XGBoost's external-memory pages, removed on every exit path.

Each directory carries an owner marker (pid and process start time). A run killed with
SIGKILL cannot clean up, so every new cache sweeps directories whose owner is gone.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from .errors import OptionError

PREFIX = "extmem-cache-"
MARKER = "owner.json"
_LIVE: set[Path] = set()


@atexit.register
def _remove_live_caches() -> None:
    """At interpreter exit, remove caches whose owners were never collected."""
    for path in list(_LIVE):
        shutil.rmtree(path, ignore_errors=True)


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _owner_alive(directory: Path) -> bool:
    try:
        owner = json.loads((directory / MARKER).read_text())
        return _process_started(int(owner["pid"])) == owner["started"]
    except FileNotFoundError:
        # A directory this young may be a cache still writing its marker.
        return True
    except (ValueError, KeyError, TypeError, OSError):
        return False


def sweep_stale(root: str | os.PathLike[str], prefix: str = PREFIX) -> list[Path]:
    """Remove directories named ``prefix*`` under ``root`` whose owning process has exited."""
    removed: list[Path] = []
    try:
        entries = list(Path(root).glob(prefix + "*"))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir() and not _owner_alive(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class CacheDir:
    """A private directory for one DMatrix's cache files (or one output being written); a context manager.

    ``root`` defaults to the system temporary directory (never the working directory).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, prefix: str = PREFIX) -> None:
        root_path = Path(root) if root is not None else Path(tempfile.gettempdir())
        if not root_path.is_dir():
            msg = f"The --cache-dir {str(root_path)!r} is not an existing folder."
            raise OptionError(msg)
        sweep_stale(root_path, prefix)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=root_path))
        _LIVE.add(self.path)
        marker = {"pid": os.getpid(), "started": _process_started(os.getpid())}
        (self.path / MARKER).write_text(json.dumps(marker))

    @property
    def prefix(self) -> str:
        """The ``cache_prefix`` to give XGBoost."""
        return str(self.path / "xgb")

    def size_bytes(self) -> int:
        """Bytes currently stored in the cache files."""
        total = 0
        for entry in self.path.rglob("*"):
            try:
                total += entry.stat().st_size if entry.is_file() else 0
            except FileNotFoundError:
                continue
        return total

    def publish(self, target: Path) -> None:
        """Rename the directory, without its owner marker, to ``target`` (absent or an empty folder)."""
        (self.path / MARKER).unlink()
        os.replace(self.path, target)
        _LIVE.discard(self.path)

    def cleanup(self) -> None:
        """Delete the directory and everything in it (idempotent)."""
        shutil.rmtree(self.path, ignore_errors=True)
        _LIVE.discard(self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()
