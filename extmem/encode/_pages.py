"""Pages: encoded batches grouped into the pages XGBoost receives, and the read -> encode -> pages composition every build uses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp

from extmem._contracts import Block, ReadCounters, RowGroupRef
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
    """Stack blocks vertically (labels and weights too)."""
    if len(blocks) == 1:
        return blocks[0]
    if sp.issparse(blocks[0].X):
        X: sp.csr_matrix | np.ndarray = _stacked_csr([b.X for b in blocks])
    else:
        X = np.vstack([b.X for b in blocks])
    label = None if blocks[0].label is None else np.concatenate([b.label for b in blocks])
    weight = None if blocks[0].weight is None else np.concatenate([b.weight for b in blocks])
    return Block(X, label, weight)


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


def _rows(block: Block, start: int, stop: int, *, copy: bool) -> Block:
    """Rows ``start:stop`` of a block: views of its arrays, or a copy."""
    X = block.X
    if sp.issparse(X):
        first, last = X.indptr[start], X.indptr[stop]
        X = sp.csr_matrix((X.data[first:last], X.indices[first:last], X.indptr[start : stop + 1] - first), shape=(stop - start, X.shape[1]))
    else:
        X = X[start:stop]
    parts = [X, *(None if array is None else array[start:stop] for array in (block.label, block.weight))]
    if copy:
        parts = [None if part is None else part.copy() for part in parts]
    return Block(*parts)
