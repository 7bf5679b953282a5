"""Pages: encoded batches grouped into the pages XGBoost receives, and the read -> encode -> pages composition every build uses."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp

from extmem._contracts import ROW_ARRAYS, Block, ReadCounters, RowGroupRef
from extmem.encode._blocks import Encoder
from extmem.read._reader import read_batches
from extmem.read._selection import Selection


def read_pages(
    selection: Selection,
    encoder: Encoder,
    batch_rows: int,
    page_rows: int,
    refs: list[RowGroupRef] | None = None,
    counters: ReadCounters | None = None,
) -> Iterator[Block]:
    """One pass of pages of ``page_rows`` rows over the selection (or the row groups ``refs``), read in batches of ``batch_rows`` rows.

    Row groups of up to half a page come whole, their wide columns decoded in column parts (see
    :mod:`extmem.read._parts`): a page holds such a row group's block with room to spare.
    """
    return map(concat_blocks, read_page_blocks(selection, encoder, batch_rows, page_rows, refs, counters))


def read_page_blocks(
    selection: Selection,
    encoder: Encoder,
    batch_rows: int,
    page_rows: int,
    refs: list[RowGroupRef] | None = None,
    counters: ReadCounters | None = None,
) -> Iterator[list[Block]]:
    """:func:`read_pages`, each page as the blocks it is made of (for a writer that needs them not joined)."""
    raw = read_batches(selection, batch_rows, refs, counters, whole_rows=page_rows // 2)
    return page_blocks(map(encoder, raw), page_rows)


def concat_blocks(blocks: list[Block]) -> Block:
    """Stack blocks vertically (labels, weights and query ids too)."""
    if len(blocks) == 1:
        return blocks[0]
    if sp.issparse(blocks[0].X):
        X: sp.csr_matrix | np.ndarray = _stacked_csr([b.X for b in blocks])
    else:
        X = np.vstack([b.X for b in blocks])
    arrays = {name: None if getattr(blocks[0], name) is None else np.concatenate([getattr(b, name) for b in blocks]) for name in ROW_ARRAYS}
    return Block(X, **arrays)


def _stacked_csr(matrices: list[sp.csr_matrix]) -> sp.csr_matrix:
    """CSR rows of ``matrices`` one after another: their arrays concatenated, ten times faster than ``scipy.sparse.vstack``."""
    rows = sum(matrix.shape[0] for matrix in matrices)
    data = np.concatenate(stored_parts(matrices, "data"))
    indices = np.concatenate(stored_parts(matrices, "indices"))
    return sp.csr_matrix((data, indices, stacked_indptr(matrices)), shape=(rows, matrices[0].shape[1]))


def stored_parts(matrices: list[sp.csr_matrix], name: str) -> list[np.ndarray]:
    """The stored ``data`` or ``indices`` of each CSR matrix (views: a matrix may be rows sliced out of a larger one)."""
    return [getattr(matrix, name)[matrix.indptr[0] : matrix.indptr[-1]] for matrix in matrices]


def stacked_indptr(matrices: list[sp.csr_matrix]) -> np.ndarray:
    """The row pointers of ``matrices``' rows one after another (int64)."""
    indptr = np.empty(sum(matrix.shape[0] for matrix in matrices) + 1, dtype=np.int64)
    indptr[0] = start = stored = 0
    for matrix in matrices:
        np.add(matrix.indptr[1:], stored - matrix.indptr[0], out=indptr[start + 1 : start + 1 + matrix.shape[0]])
        start += matrix.shape[0]
        stored += matrix.indptr[-1] - matrix.indptr[0]
    return indptr


def pages(blocks: Iterable[Block], page_rows: int) -> Iterator[Block]:
    """Group blocks into pages of exactly ``page_rows`` rows (the last may be smaller); see :func:`page_blocks`."""
    return map(concat_blocks, page_blocks(blocks, page_rows))


def page_blocks(blocks: Iterable[Block], page_rows: int) -> Iterator[list[Block]]:
    """Group blocks into pages of exactly ``page_rows`` rows (the last may be smaller), cutting blocks where pages end; each page as its blocks.

    XGBoost keeps state per external-memory page, so pages of tens of thousands of rows
    keep its memory flat while batches stay small enough to decode cheaply. Pages depend only
    on the rows and ``page_rows``, not on how they were read (row batches or whole row groups,
    a local folder or a store), so neither changes the model.
    """
    stream = iter(blocks)
    first = next(stream, None)
    if first is not None:
        blocks = itertools.chain([first], stream)
        yield from (_query_page_blocks if first.qid is not None else _page_blocks)(blocks, page_rows)


def _page_blocks(blocks: Iterable[Block], page_rows: int) -> Iterator[list[Block]]:
    pending: list[Block] = []
    pending_rows = 0
    for block in blocks:
        start = 0
        while start < block.rows:
            taken = min(block.rows - start, page_rows - pending_rows)
            # a block's tail that waits for the next page is copied, so the rest of the block is freed
            pending.append(block if taken == block.rows else _rows(block, start, start + taken, copy=pending_rows + taken < page_rows))
            pending_rows += taken
            start += taken
            if pending_rows == page_rows:
                yield pending
                pending, pending_rows = [], 0
    if pending:
        yield pending


def _query_page_blocks(blocks: Iterable[Block], page_rows: int) -> Iterator[list[Block]]:
    """Pages of blocks with query ids: as :func:`_page_blocks`, but a page ends only where a query ends.

    XGBoost takes a query cut by a page boundary for two queries. A page ends before the
    query that would not fit; a query longer than a page makes a page of its own.
    """
    pending: list[Block] = []
    pending_rows = 0
    for block in blocks:
        qid = block.qid
        assert qid is not None
        start = 0
        while start < block.rows:
            last = pending[-1].qid[-1] if pending else None  # type: ignore[index]
            query_end = int(np.searchsorted(qid, qid[start], side="right"))
            if pending and qid[start] != last and (pending_rows >= page_rows or pending_rows + query_end - start > page_rows):
                yield pending  # the next query starts a page: this one is full, or the query would not fit in it
                pending, pending_rows = [], 0
                continue
            if pending_rows >= page_rows or qid[start] == last:
                end = query_end  # the page's last query goes on in this block: the rest of it joins the page
            else:
                end = min(block.rows, start + page_rows - pending_rows)
                if end < block.rows and qid[end] == qid[end - 1]:
                    # the cut would split a query: end before it (or after it, if it starts the page)
                    query_start = int(np.searchsorted(qid, qid[end - 1], side="left"))
                    end = query_start if query_start > start else query_end
            whole = start == 0 and end == block.rows
            pending.append(block if whole else _rows(block, start, end, copy=end == block.rows))
            pending_rows += end - start
            start = end
            if start < block.rows and pending_rows >= page_rows:
                yield pending
                pending, pending_rows = [], 0
    if pending:
        yield pending


def _rows(block: Block, start: int, stop: int, *, copy: bool) -> Block:
    """Rows ``start:stop`` of a block: views of its arrays, or a copy."""
    X = block.X
    if sp.issparse(X):
        first, last = X.indptr[start], X.indptr[stop]
        X = sp.csr_matrix((X.data[first:last], X.indices[first:last], X.indptr[start : stop + 1] - first), shape=(stop - start, X.shape[1]))
    else:
        X = X[start:stop]
    if copy:
        X = X.copy()
    arrays = {name: None if getattr(block, name) is None else getattr(block, name)[start:stop] for name in ROW_ARRAYS}
    return Block(X, **{name: array.copy() if copy and array is not None else array for name, array in arrays.items()})
