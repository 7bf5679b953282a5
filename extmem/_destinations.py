"""Where outputs go: one rule for every command, checked before any work, and atomic publishing.

An output file or folder must not exist (an empty folder counts as absent) unless ``overwrite``
is given, and even then extmem replaces only what it wrote itself: a dataset folder whose
``_manifest.json`` lists every file in it, a model folder holding nothing but extmem's model files.
Folders are built in a private staging folder beside the destination and swapped into place in
one step (``renameat2(RENAME_EXCHANGE)`` where the kernel has it, else two renames), so a reader
sees the old folder or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from extmem._atomic import is_partial, written_meanwhile
from extmem._folders import LOCK_FILE, PrivateFolder
from extmem._signals import deferred
from extmem._stores import (
    PARTIAL_UPLOAD_SUFFIX,
    check_bucket,
    child,
    delete_remote,
    is_remote,
    local_path,
    read_remote_text,
    remote_exists,
    remote_names,
    upload_file,
)
from extmem.errors import OptionError

T = TypeVar("T")

MANIFEST_FILE = "_manifest.json"
"""The file that lists what a dataset folder written by extmem holds (a leading ``_`` makes parquet readers skip it)."""


_PROBE_PREFIX = ".extmem-probe-"


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_writable_parent(path: Path, what: str, option: str) -> None:
    if path.is_symlink() and not path.exists():
        msg = f"The '{option}' path {str(path)!r} is a broken symbolic link (to {os.readlink(path)!r}); remove it or write elsewhere."
        raise OptionError(msg, options=(option,))
    ancestor = _nearest_existing(path.parent if path.parent != path else path)
    if not ancestor.is_dir():
        msg = f"Cannot write the '{option}' {what} {str(path)!r}: {str(ancestor)!r} is a file, not a folder."
        raise OptionError(msg, options=(option,))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        msg = f"Cannot write the '{option}' {what} {str(path)!r}: the folder {str(ancestor)!r} is not writable."
        raise OptionError(msg, options=(option,))
    with PrivateFolder(ancestor, prefix=_PROBE_PREFIX, option=option, output=path):
        pass  # what access() cannot tell (a read-only or special file system, a full quota, root's rights): try


@dataclass(frozen=True)
class RemoteFolder:
    """An output folder in object storage (a prefix): built in a local staging folder, then uploaded object by object."""

    uri: str


def destination(path: str | os.PathLike[str] | RemoteFolder) -> Path | RemoteFolder:
    """Where an output folder goes: a local path, or a :class:`RemoteFolder` for a URI."""
    if isinstance(path, RemoteFolder):
        return path
    text = os.fspath(path)
    return RemoteFolder(text.rstrip("/")) if is_remote(text) else Path(local_path(text))


def _reachable(uri: str, option: str, look: Callable[[], T]) -> T:
    """``look()`` at an output in object storage, its store's error (no bucket, no access) as one line naming the option."""
    try:
        return look()
    except OSError as exc:
        msg = f"Cannot write the '{option}' {uri!r}: {str(exc).splitlines()[0]}"
        raise OptionError(msg, options=(option,)) from None


FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".json", ".jsonl", ".txt", ".feather", ".arrow", ".orc", ".avro", ".xlsx", ".h5")
FILE_SUFFIXES += (".npy", ".gz", ".zip", ".png", ".pdf", ".svg", ".jpg", ".jpeg", ".ubj")
"""Suffixes that say what a file holds: an output of another kind under one of them is refused, not written misnamed."""


def output_format(path: str | os.PathLike[str], formats: Mapping[str, str], option: str = "out") -> str:
    """The format ``formats`` gives ``path``'s suffix (its ``""`` entry for a suffix that names no format); another format's suffix is refused."""
    suffix = Path(os.fspath(path).rstrip("/")).suffix.lower()
    if suffix in formats:
        return formats[suffix]
    if suffix in FILE_SUFFIXES:
        suffixes: dict[str, list[str]] = {}
        for name, kind in formats.items():
            if name:
                suffixes.setdefault(kind, []).append(name)
        kinds = " or ".join(f"{kind} ({', '.join(names)})" for kind, names in suffixes.items())
        msg = f"The '{option}' file {os.fspath(path)!r} ends in {suffix!r}; it is written as {kinds}."
        raise OptionError(msg, options=(option,))
    return formats[""]


def check_distinct_outputs(outputs: Mapping[str, str | os.PathLike[str] | None]) -> None:
    """Refuse two options naming one output file (the second would replace the first, or fail once all the work is done)."""
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        key = os.fspath(path) if is_remote(os.fspath(path)) else os.path.realpath(local_path(os.fspath(path)))
        if key in seen:
            msg = f"The '{seen[key]}' and '{option}' options name one file, {os.fspath(path)!r}; give each its own."
            raise OptionError(msg, options=(seen[key], option))
        seen[key] = option


def check_output_file(path: str | os.PathLike[str], *, overwrite: bool, option: str = "out") -> None:
    """Refuse, before any work, an output file that exists (unless ``overwrite``) or cannot be written (a local path or a URI)."""
    text = os.fspath(path)
    if text == "-":
        msg = f"The '{option}' file '-': extmem writes files (whole, or not at all), not standard output; give a file name."
        raise OptionError(msg, options=(option,))
    if text.endswith(("/", os.sep)):
        kind = "a prefix; give an object name" if is_remote(text) else "a folder (it ends in a slash); give a file name"
        raise OptionError(f"The '{option}' path {text!r} is {kind}.", options=(option,))
    if is_remote(text):
        _reachable(text, option, lambda: check_bucket(text))
        if _reachable(text, option, lambda: remote_exists(text)) and not overwrite:
            msg = f"The '{option}' object {text!r} already exists; pass 'overwrite' to replace it."
            raise OptionError(msg, options=(option, "overwrite"))
        return
    target = Path(local_path(text))
    if target.is_dir():
        msg = f"The '{option}' path {str(target)!r} is a folder; give a file name."
        raise OptionError(msg, options=(option,))
    if target.exists() and not overwrite:
        msg = f"The '{option}' file {str(target)!r} already exists; pass 'overwrite' to replace it."
        raise OptionError(msg, options=(option, "overwrite"))
    _check_writable_parent(target, "file", option)


def _entries(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if not is_partial(name) and name != LOCK_FILE]


def _listed_files(folder: Path, manifest: str) -> set[str] | None:
    """The files ``folder``'s manifest says extmem wrote there, or None without a readable extmem manifest."""
    try:
        return _manifest_files((folder / manifest).read_text(), manifest)
    except OSError:
        return None


def _manifest_files(text: str, manifest: str) -> set[str] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    files = data.get("files") if isinstance(data, dict) and "extmem_version" in data else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return {*files, manifest}


def check_output_folder(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    own_names: Collection[str] = (),
    manifest: str | None = MANIFEST_FILE,
    option: str = "out",
) -> Path | RemoteFolder:
    """Refuse, before any work, an output folder that holds anything unless ``overwrite`` and extmem wrote all of it.

    extmem wrote a folder when its ``manifest`` lists every entry, or when every entry is one of
    ``own_names`` (the fixed file names of a model folder). A URI names a prefix in object storage, checked the same way.
    """
    target = destination(path)
    if isinstance(target, RemoteFolder):
        _reachable(target.uri, option, lambda: check_bucket(target.uri))
        names = _reachable(target.uri, option, lambda: remote_names(target.uri))
        entries = [name for name in names if not name.endswith(PARTIAL_UPLOAD_SUFFIX)]
        _check_entries(
            str(target.uri),
            entries,
            overwrite=overwrite,
            own_names=own_names,
            option=option,
            listed=lambda: _remote_listed(target, manifest),
        )
        return target
    if target.exists() and not target.is_dir():
        msg = f"The '{option}' path {str(target)!r} is a file, not a folder."
        raise OptionError(msg, options=(option,))
    entries = _entries(target) if target.is_dir() else []
    _check_entries(
        str(target),
        entries,
        overwrite=overwrite,
        own_names=own_names,
        option=option,
        listed=lambda: _listed_files(target, manifest) if manifest is not None else None,
    )
    _check_writable_parent(target, "folder", option)
    return target


def _check_entries(
    where: str, entries: list[str], *, overwrite: bool, own_names: Collection[str], option: str, listed: Callable[[], set[str] | None]
) -> None:
    """The one overwrite rule: a folder holding anything is replaced only with ``overwrite``, and only if extmem wrote all of it."""
    if not entries:
        return
    if not overwrite:
        msg = f"The '{option}' folder {where!r} exists and is not empty; pass 'overwrite' to replace it."
        raise OptionError(msg, options=(option, "overwrite"))
    allowed = set(own_names) | (listed() or set())
    stranger = sorted(name for name in entries if name not in allowed)
    if stranger:
        msg = (
            f"The '{option}' folder {where!r} holds {stranger[0]!r}, which extmem did not write there; "
            "it replaces only folders it wrote. Choose another folder."
        )
        raise OptionError(msg, options=(option,))


def _remote_listed(target: RemoteFolder, manifest: str | None) -> set[str] | None:
    if manifest is None:
        return None
    text = read_remote_text(child(target.uri, manifest))
    return _manifest_files(text, manifest) if text is not None else None


def staging_folder(target: Path | RemoteFolder) -> PrivateFolder:
    """A private folder to build ``target`` in: beside it, or in the temp folder for a URI; a killed run's is swept by a later run."""
    if isinstance(target, RemoteFolder):
        return PrivateFolder(None, prefix="extmem-upload-", option="out", output=target.uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    return PrivateFolder(target.parent, prefix=f".{target.name}.extmem-staging-", option="out", output=target)


_RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the kernel or filesystem cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(second))


def publish_folder(staging: PrivateFolder, target: Path | RemoteFolder, *, replace: bool) -> None:
    """Make the complete ``staging`` folder ``target``, replacing what ``target`` held in one step.

    Without ``replace`` (no 'overwrite') the folder is only created: if another run filled
    ``target`` while this one ran, nothing is replaced and OptionError says so. In object
    storage each file is uploaded atomically (partial name, then moved), the manifest last, then
    the objects of the folder's previous contents that the new one lacks are deleted.
    """
    if isinstance(target, RemoteFolder):
        if not replace and remote_names(target.uri):
            raise written_meanwhile(target.uri)
        _upload(staging, target)
        return
    with deferred():
        _publish(staging, target, replace)


def _upload(staging: PrivateFolder, target: RemoteFolder) -> None:
    names = sorted(name for name in _entries(staging.path) if (staging.path / name).is_file())
    names.sort(key=lambda name: name == MANIFEST_FILE)  # the manifest, which lists the rest, comes last
    for name in names:
        upload_file(staging.path / name, child(target.uri, name))
    for stale in set(remote_names(target.uri)) - set(names):
        delete_remote(child(target.uri, stale))


def _publish(staging: PrivateFolder, target: Path, replace: bool) -> None:
    for _ in range(100):  # another run may publish the same target between two steps: try again
        if not target.exists() or (target.is_dir() and not os.listdir(target)):
            with contextlib.suppress(FileNotFoundError):
                target.rmdir()
            try:
                staging.publish(target)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue
        if not replace:
            raise written_meanwhile(target)
        old = staging.path
        if _exchange(staging.path, target):
            staging.published_as(target)
            shutil.rmtree(old, ignore_errors=True)
            return
        previous = target.with_name(f".{target.name}.extmem-staging-previous-{os.getpid()}")
        try:
            os.rename(target, previous)
        except FileNotFoundError:
            continue
        shutil.rmtree(previous, ignore_errors=True)
    msg = f"Could not publish {str(target)!r}: other runs kept replacing it."
    raise OptionError(msg)
