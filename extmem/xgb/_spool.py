"""Page spool: the blocks of the first pass saved in the cache folder and replayed on later passes.

XGBoost reads the iterator several times (shape, sketch, index). Decoding wide parquet is the
slow part, so the first pass writes each page's arrays as ``.npy`` files and later passes map
them back (file-backed pages, which the kernel can reclaim) instead of decoding again; the
quantile cuts of a large dataset come from a sample of the spooled pages. The spool
lives in the DMatrix's private cache folder and goes with it; a kept one (see
:mod:`extmem.xgb._encoded`) lives in the user's encoded-rows cache and stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from extmem._contracts import ROW_ARRAYS, Block
from extmem.encode._pages import stacked_indptr, stored_parts
from extmem.errors import CacheError
from extmem.xgb._iterator import Prefetcher

_PARTS = ("data", "indices", "indptr", "dense", *ROW_ARRAYS)


class PageSpool:
    """Pages written during one pass, in order; :meth:`replay` reads them back memory-mapped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pages = 0
        self.page_rows: list[int] = []
        self.complete = False
        self.bytes = 0
        self.reused = False
        """Whether the pages were recorded by an earlier run (a kept spool, which :meth:`clear` leaves in place)."""

    @classmethod
    def kept(cls, folder: Path, page_rows: list[int], size: int) -> PageSpool:
        """The complete spool an earlier run recorded in ``folder``: replayed, never recorded over or cleared."""
        spool = cls(folder)
        spool.pages, spool.page_rows, spool.bytes, spool.complete, spool.reused = len(page_rows), page_rows, size, True, True
        return spool

    def files(self) -> Iterator[Path]:
        """The files of the recorded pages."""
        for page in range(self.pages):
            for part in _PARTS:
                path = self._path(page, part)
                if path.exists():
                    yield path

    def record(self, pages: Iterable[Block]) -> Iterator[Block]:
        """Pass ``pages`` through, saving each; the spool is complete once they are exhausted."""
        for blocks in self._recorded([page] for page in pages):
            yield blocks[0]

    def fill(self, pages: Iterator[list[Block]], *, prefetch: int = 0) -> Iterator[int]:
        """Save pages given as the blocks they are made of, written one after another (never joined in memory); yields each page's rows.

        With ``prefetch``, pages are produced that many ahead in a background thread while this one
        writes; closing the iterator stops that thread.
        """
        ahead = Prefetcher(pages, prefetch) if prefetch > 0 else pages
        try:
            for blocks in self._recorded(ahead):
                yield sum(block.rows for block in blocks)
        finally:
            if isinstance(ahead, Prefetcher):
                ahead.close()

    def _recorded(self, pages: Iterable[list[Block]]) -> Iterator[list[Block]]:
        assert not self.reused, "a kept spool is replayed, not recorded over"
        self.clear()
        self.bytes = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for blocks in pages:
            self._save(blocks)
            yield blocks
        self.complete = True

    def _save(self, blocks: list[Block]) -> None:
        matrices = [block.X for block in blocks]
        parts: dict[str, list[np.ndarray] | None] = {
            name: None if getattr(blocks[0], name) is None else [getattr(block, name) for block in blocks] for name in ROW_ARRAYS
        }
        if sp.issparse(matrices[0]):
            parts.update(data=stored_parts(matrices, "data"), indices=stored_parts(matrices, "indices"), indptr=[stacked_indptr(matrices)])
        else:
            parts["dense"] = matrices
        for name, arrays in parts.items():
            if arrays is not None:
                path = self._path(self.pages, name)
                _write_npy(path, arrays)
                self.bytes += path.stat().st_size
        self.pages += 1
        self.page_rows.append(sum(block.rows for block in blocks))

    @property
    def rows(self) -> int:
        return sum(self.page_rows)

    def sample(self, target_rows: int, seed: int) -> list[int]:
        """Pages drawn uniformly at random (without replacement) until they hold ``target_rows``, in order."""
        chosen: list[int] = []
        rows = 0
        for page in np.random.default_rng(seed).permutation(self.pages):
            if rows >= target_rows:
                break
            chosen.append(int(page))
            rows += self.page_rows[page]
        return sorted(chosen)

    def _path(self, page: int, part: str) -> Path:
        return self.folder / f"page-{page:06d}.{part}.npy"

    def _load(self, page: int, part: str, *, required: bool = False) -> np.ndarray | None:
        path = self._path(page, part)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            if not required:
                return None
            reason = "it is missing"
        except (OSError, ValueError) as exc:
            reason = str(exc)
        where = "kept encoded rows" if self.reused else "page spool"
        advice = ": delete that folder, and a later run keeps the rows again" if self.reused else ""
        raise CacheError(f"Cannot read {path.name} of the {where} in {str(self.folder)!r} ({reason}){advice}.")

    def replay(self, n_features: int, pages: Sequence[int] | None = None) -> Iterator[Block]:
        """The recorded pages (or only ``pages``), in order."""
        for page in range(self.pages) if pages is None else pages:
            dense = self._load(page, "dense")
            if dense is not None:
                X: sp.csr_matrix | np.ndarray = dense
            else:
                indptr = self._load(page, "indptr", required=True)
                assert indptr is not None
                stored = (self._load(page, "data", required=True), self._load(page, "indices", required=True))
                X = sp.csr_matrix((*stored, indptr), shape=(indptr.size - 1, n_features))
            yield Block(X, **{name: self._load(page, name) for name in ROW_ARRAYS})

    def clear(self) -> None:
        """Delete the recorded pages and the spool folder (a kept spool stays as it is)."""
        if self.reused:
            return
        for path in list(self.files()):
            path.unlink(missing_ok=True)
        if self.folder.is_dir():
            self.folder.rmdir()
        self.pages, self.page_rows, self.complete = 0, [], False


def _write_npy(path: Path, arrays: list[np.ndarray]) -> None:
    """Save ``arrays`` joined along their first axis as one ``.npy`` file, each written in turn (no joined copy in memory)."""
    dtype = np.result_type(*arrays)
    shape = (sum(len(array) for array in arrays), *arrays[0].shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for array in arrays:
            file.write(np.ascontiguousarray(array, dtype=dtype).data)
