"""Encoded-rows cache: the page spool of a dataset's first read kept in a folder of the user's, so later runs skip the parquet.

Like LightGBM's binary dataset: decoding and encoding the parquet is most of a build's time
(640k rows of 4,122 wide columns: about 50 of 66 s), and a run that finds its rows here
replays them instead. An entry is keyed by everything that decides the encoded rows: each
shard's path, size and modification time, the dataset's options, the feature layout and the
extmem version; any change makes a new entry. Entries of the same rows in other page sizes sit
side by side: a run replays the one with the largest pages its memory plan allows (its planned
page size may vary a little with the process's memory at planning time), and keeps its own when
none fits. An entry appears complete or not at
all: it is written in a private staging folder beside it and renamed into place, so a run that
stops, or a second run doing the same at the same time, leaves no partial entry. Its manifest
lists every file's size: an entry whose files are missing or of another size (damaged, or
changed by hand) is deleted instead of replayed, and the run reads the parquet. extmem deletes
no other entries: delete the folder (or an entry) to reclaim its space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from extmem._atomic import json_default
from extmem._destinations import RemoteFolder
from extmem._folders import PrivateFolder
from extmem._signals import deferred
from extmem._stores import is_remote, local_path
from extmem._version import __version__
from extmem.errors import OptionError
from extmem.read._selection import Selection
from extmem.read._storage import file_stamp
from extmem.xgb._spool import PageSpool

logger = logging.getLogger("extmem")

MANIFEST_FILE = "rows.json"
STAGING_PREFIX = ".extmem-rows-staging-"
_NOT_ENCODING = ("batch_rows",)
"""Dataset options that change how rows are read, not the rows: runs that differ only there share entries."""


def check_folder(folder: str | os.PathLike[str]) -> Path:
    """The cache folder, created if absent; an error naming the option when it cannot be used (a URI: it must be local)."""
    if is_remote(os.fspath(folder)):
        msg = f"The 'encoded_cache' folder must be a local folder (the rows are replayed memory-mapped); got {os.fspath(folder)!r}."
        raise OptionError(msg, options=("encoded_cache",))
    path = Path(local_path(os.fspath(folder)))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"The 'encoded_cache' folder {str(path)!r} cannot be created: {exc.strerror or exc}."
        raise OptionError(msg, options=("encoded_cache",)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        msg = f"The 'encoded_cache' folder {str(path)!r} is not writable."
        raise OptionError(msg, options=("encoded_cache",))
    return path


def check_outside(folder: str | None, out: Path | RemoteFolder | None) -> None:
    """Refuse a cache ``folder`` at or inside the local output folder ``out``: a run replaces that folder with its model."""
    if folder is None or not isinstance(out, Path) or is_remote(folder):
        return
    cache, target = Path(local_path(folder)).resolve(), out.resolve()
    if cache.is_relative_to(target):
        msg = (
            f"The 'encoded_cache' folder {folder!r} is inside the 'out' folder {str(out)!r}, which the run replaces with "
            "its model at the end: keep the rows elsewhere."
        )
        raise OptionError(msg, options=("encoded_cache", "out"))


def entry_identity(selection: Selection) -> dict[str, Any]:
    """What decides the encoded rows of ``selection`` (JSON-ready), the page size aside."""
    options = {name: value for name, value in selection.dataset.to_dict().items() if name not in _NOT_ENCODING}
    identity = {
        "extmem_version": __version__,
        "dataset": options,
        "layout": selection.layout.to_json(),
        "shards": [[shard, *file_stamp(shard)] for shard in selection.schema.shards],
    }
    return json.loads(json.dumps(identity, default=str))  # as a manifest holds it


def spool_for(
    folder: str | None, selection: Selection, page_rows: int | None, scratch: Path, *, wanted: bool
) -> tuple[PageSpool | None, Path | None, dict[str, Any]]:
    """The spool a build of ``selection`` in pages of at most ``page_rows`` rows uses, the encoded-rows cache folder (None:
    none) and the identity of its entries there.

    The spool is a kept entry's if there is one, in pages of at most ``page_rows`` rows (the
    largest such; None: any); else a new one in ``scratch`` when ``wanted`` or when there is a cache folder
    (to keep it there); else None.
    """
    if folder is None:
        return (PageSpool(scratch) if wanted else None), None, {}
    identity = entry_identity(selection)
    kept_in = Path(local_path(folder))
    return find(kept_in, identity, page_rows) or PageSpool(scratch), kept_in, identity


def _entry_stem(identity: dict[str, Any]) -> str:
    """The entries of one identity are ``<stem>-<page rows>``: the same rows, in pages of that many rows."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=json_default).encode()).hexdigest()[:32]


def find(folder: Path, identity: dict[str, Any], page_rows: int | None) -> PageSpool | None:
    """The kept spool of ``identity`` in ``folder`` with the largest pages of at most ``page_rows`` rows (the memory plan's
    page size: smaller pages take less memory), or None when there is none (or it cannot be read, or is damaged)."""
    stem = _entry_stem(identity)
    suffixes = (path.name.rpartition("-")[2] for path in folder.glob(f"{stem}-*"))
    sizes = sorted((int(suffix) for suffix in suffixes if suffix.isdigit()), reverse=True)
    for size in (size for size in sizes if page_rows is None or size <= page_rows):
        entry = folder / f"{stem}-{size}"
        manifest = _manifest(entry, identity)
        if manifest is None:
            continue
        if not _intact(entry, manifest):
            logger.warning(
                "extmem: the encoded rows in %r are damaged (a file missing or resized) or were kept by an older extmem; "
                "they are deleted, and this run reads the parquet again.",
                str(entry),
            )
            _discard(entry)
            continue
        return PageSpool.kept(entry, [int(rows) for rows in manifest["page_rows"]], int(manifest["bytes"]))
    return None


def _manifest(entry: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of ``entry`` if it is one of ``identity``'s, else None."""
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text())
        return manifest if isinstance(manifest, dict) and manifest.get("identity") == identity else None
    except (OSError, ValueError):
        return None


def _intact(entry: Path, manifest: dict[str, Any]) -> bool:
    """Whether every file the manifest lists is in ``entry`` with the size it had when kept (and the page list is sound)."""
    files, pages = manifest.get("files"), manifest.get("page_rows")
    if not isinstance(files, dict) or not files or not isinstance(pages, list) or not isinstance(manifest.get("bytes"), int):
        return False
    try:
        return all(isinstance(size, int) and (entry / name).stat().st_size == size for name, size in files.items())
    except (OSError, TypeError):
        return False


def keep(spool: PageSpool, folder: Path, identity: dict[str, Any], page_rows: int | None) -> None:
    """Store a complete spool as the entry for ``identity`` and its page size (files linked where the file system allows,
    else copied): its largest page, or ``page_rows``, the size it was built for, where pages ending with a whole query went past it.

    When another run stored the same entry meanwhile, its entry stays and this one is dropped;
    a damaged one is replaced. A failure to write (a full disk) is logged and leaves nothing: the
    run itself goes on.
    """
    assert spool.complete
    largest = max(spool.page_rows, default=0)
    entry = folder / f"{_entry_stem(identity)}-{largest if page_rows is None else min(largest, page_rows)}"
    try:
        with PrivateFolder(folder, prefix=STAGING_PREFIX, option="encoded_cache") as staging:
            files = {}
            for source in spool.files():
                target = staging.path / source.name
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
                files[source.name] = target.stat().st_size
            manifest = {"identity": identity, "page_rows": spool.page_rows, "bytes": spool.bytes, "files": files}
            (staging.path / MANIFEST_FILE).write_text(json.dumps(manifest))
            if entry.exists():
                kept = _manifest(entry, identity)
                if kept is not None and _intact(entry, kept):
                    return
                _discard(entry)
            with deferred():  # the rename and the lock file's removal as one step
                staging.publish(entry)
    except OSError as exc:
        if (entry / MANIFEST_FILE).is_file():
            return  # another run stored it first
        logger.warning("extmem: the encoded rows could not be kept in %r (%s); this run goes on without.", str(folder), exc.strerror or exc)


def _discard(entry: Path) -> None:
    """Move a damaged entry aside (under a staging name, so a later sweep finishes what a stop interrupts) and delete it."""
    aside = entry.with_name(f"{STAGING_PREFIX}{secrets.token_hex(8)}")
    try:
        os.rename(entry, aside)
    except FileNotFoundError:
        return  # another run moved it first
    shutil.rmtree(aside, ignore_errors=True)
