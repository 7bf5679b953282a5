"""k-mer features: counted from a sequence column, or folded from k-mer count columns, exact or hashed.

Hashing follows scikit-learn's ``FeatureHasher``: a k-mer (the text ``ACGTAC``, for a column
``6mer_ACGTAC`` its k-mer part) goes to bucket ``abs(h) % width`` with
``h = murmurhash3_32(kmer, seed)``, and with ``signed`` its count is multiplied by the sign of
``h`` so that collisions cancel on average. MurmurHash3 is stable across runs, machines and
Python versions (unlike ``hash()``). Folding the columns of a dataset and counting k-mers from
its sequences therefore give the same features.

Counting from sequences is vectorised over chunks of a batch's windows: bases map to 2-bit codes
(lower case as upper case), each window of ``k`` bases becomes an integer, and windows holding
any other character (``N``, gaps, non-ASCII bytes) or crossing the end of a row are skipped. A null
sequence has no k-mers, so all its k-mer features are missing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import pyarrow as pa

from extmem._layout import KMER_COLUMN, KmerEncoding

_CODES = np.full(256, 4, dtype=np.uint8)
for _code, _bases in enumerate(("Aa", "Cc", "Gg", "Tt")):
    for _base in _bases:
        _CODES[ord(_base)] = _code


def bucket(encoding: KmerEncoding, kmer: str) -> tuple[int, float]:
    """Feature index and sign of one k-mer text under a hashing ``encoding``."""
    from sklearn.utils import murmurhash3_32  # scikit-learn's FeatureHasher hash, imported when hashing

    assert encoding.width is not None
    h = int(murmurhash3_32(kmer, seed=encoding.seed, positive=False))
    return abs(h) % encoding.width, (-1.0 if h < 0 and encoding.signed else 1.0)


def fold_columns(encoding: KmerEncoding, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Feature index and sign of each ``{k}mer_*`` column name."""
    pairs = [bucket(encoding, KMER_COLUMN.match(name).group(2)) for name in names]  # type: ignore[union-attr]
    return np.array([p for p, _ in pairs], dtype=np.int64).reshape(-1), np.array([s for _, s in pairs], dtype=np.float32).reshape(-1)


@lru_cache(maxsize=8)
def _kmer_table(encoding: KmerEncoding) -> tuple[np.ndarray, np.ndarray]:
    """Feature index and sign of every k-mer id (base-4 number of the k-mer)."""
    assert encoding.k is not None
    if encoding.width is None:
        return np.arange(4**encoding.k, dtype=np.int64), np.ones(4**encoding.k, dtype=np.float32)
    kmers = ("".join(kmer) for kmer in itertools.product("ACGT", repeat=encoding.k))
    pairs = [bucket(encoding, kmer) for kmer in kmers]
    return np.array([p for p, _ in pairs], dtype=np.int64), np.array([s for _, s in pairs], dtype=np.float32)


WINDOWS_PER_CHUNK = 1 << 20
"""Windows counted at a time: the temporaries stay near 40 MB however long a batch's sequences are."""


def count_kmers(sequences: pa.Array, k: int, *, windows_per_chunk: int = WINDOWS_PER_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per-row k-mer ids of a string array, a chunk of windows at a time: (row of each valid window, k-mer id of it).

    A row may span chunks; its windows are then split between them, none lost or repeated.
    """
    if isinstance(sequences, pa.ChunkedArray):
        sequences = sequences.combine_chunks()
    if not pa.types.is_string(sequences.type):
        sequences = sequences.cast(pa.string())
    text = sequences.fill_null("")
    buffers = text.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[text.offset : text.offset + len(text) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    codes = _CODES[data[offsets[0] : offsets[-1]]]
    offsets -= offsets[0]
    for first in range(0, max(codes.size - k + 1, 0), windows_per_chunk):
        starts = np.arange(first, min(first + windows_per_chunk, codes.size - k + 1))
        ids = np.zeros(starts.size, dtype=np.int64)
        broken = np.zeros(starts.size, dtype=bool)
        for j in range(k):  # the k-mer id in base 4, one base at a time: no (windows x k) array
            base = codes[starts[0] + j : starts[-1] + j + 1]
            ids = ids * 4 + base
            broken |= base > 3
        rows = np.searchsorted(offsets, starts, side="right") - 1
        valid = ~broken & (starts + k <= offsets[rows + 1])
        yield rows[valid], ids[valid]


def sequence_entries(
    sequences: pa.Array, encoding: KmerEncoding, first_position: int, *, windows_per_chunk: int = WINDOWS_PER_CHUNK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-mer features of a batch's sequences as (offsets, positions, values), canonical CSR rows.

    Rows are finished as the chunks of windows pass: the entries of the rows a chunk completes
    are summed, mapped to their features and kept as 4-byte positions and values, and only the
    row still being counted carries over. So memory is the batch's entries plus one chunk's
    temporaries, however long the sequences (a batch of 2,048 rows of 10,000 bases: 7.7 million
    entries, about 90 MB, where summing every window of the batch at once took 940 MB).
    """
    assert encoding.k is not None
    features, signs = _kmer_table(encoding)
    span = 4**encoding.k
    n_rows = len(sequences)
    row_entries = np.zeros(n_rows, dtype=np.int64)
    positions: list[np.ndarray] = []
    values: list[np.ndarray] = []

    def finish(keys: np.ndarray, counts: np.ndarray) -> None:
        rows, ids = keys // span, keys % span
        if encoding.width is None:  # one feature per k-mer, in k-mer order: the keys are these entries, sorted and distinct
            kept_positions, kept_values = ids + first_position, counts.astype(np.float32)
        else:  # k-mers hashed to a bucket: those sharing one in a row are summed (or cancel, signed)
            rows, kept_positions, kept_values = _canonical_entries(rows, features[ids] + first_position, signs[ids] * counts)
        row_entries[:] += np.bincount(rows, minlength=n_rows)
        positions.append(kept_positions.astype(np.int32))
        values.append(kept_values)

    carried_keys = carried_counts = np.zeros(0, dtype=np.int64)  # the windows so far of the row the last chunk ended in
    for chunk_rows, ids in count_kmers(sequences, encoding.k, windows_per_chunk=windows_per_chunk):
        keys, counts = np.unique(chunk_rows * span + ids, return_counts=True)
        if not keys.size:  # no valid window in this chunk (only N's, say)
            continue
        if carried_keys.size:
            keys, inverse = np.unique(np.concatenate([carried_keys, keys]), return_inverse=True)
            counts = np.bincount(inverse, weights=np.concatenate([carried_counts, counts]), minlength=keys.size).astype(np.int64)
        open_from = int(np.searchsorted(keys, (keys[-1] // span) * span))  # the last row may go on in the next chunk
        finish(keys[:open_from], counts[:open_from])
        carried_keys, carried_counts = keys[open_from:], counts[open_from:]
    finish(carried_keys, carried_counts)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(row_entries, out=offsets[1:])
    return offsets, np.concatenate(positions), np.concatenate(values)


def _canonical_entries(rows: np.ndarray, positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries summed per (row, position), zeros removed, sorted by row then position: (rows, positions, float32 values)."""
    span = int(positions.max()) + 1 if positions.size else 1
    keys, inverse = np.unique(rows.astype(np.int64) * span + positions, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=keys.size).astype(np.float32)
    kept = sums != 0
    keys, sums = keys[kept], sums[kept]
    return keys // span, keys % span, sums


def canonical_rows(n_rows: int, rows: np.ndarray, positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries summed per (row, position), zeros removed, sorted: CSR (offsets, positions, values)."""
    rows, positions, values = _canonical_entries(rows, positions, values)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
    return offsets, positions.astype(np.int32), values
