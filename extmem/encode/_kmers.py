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


def sequence_entries(sequences: pa.Array, encoding: KmerEncoding, first_position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-mer features of a batch's sequences as (offsets, positions, values), canonical CSR rows.

    Each chunk of windows is reduced to counts per (row, k-mer) before the next is counted, so
    memory follows the distinct k-mers of the rows, not their length.
    """
    assert encoding.k is not None
    positions, signs = _kmer_table(encoding)
    span = 4**encoding.k
    rows, kmers, counts = [], [], []
    for chunk_rows, ids in count_kmers(sequences, encoding.k):
        keys, seen = np.unique(chunk_rows * span + ids, return_counts=True)
        rows.append(keys // span)
        kmers.append(keys % span)
        counts.append(seen)
    if not rows:
        return canonical_rows(len(sequences), *(np.zeros(0, dtype=np.int64),) * 3)
    ids = np.concatenate(kmers)
    return canonical_rows(len(sequences), np.concatenate(rows), positions[ids] + first_position, signs[ids] * np.concatenate(counts))


def canonical_rows(n_rows: int, rows: np.ndarray, positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries summed per (row, position), zeros removed, sorted: CSR (offsets, positions, values)."""
    span = int(positions.max()) + 1 if positions.size else 1
    keys, inverse = np.unique(rows.astype(np.int64) * span + positions, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=keys.size).astype(np.float32)
    kept = sums != 0
    keys, sums = keys[kept], sums[kept]
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // span, minlength=n_rows), out=offsets[1:])
    return offsets, (keys % span).astype(np.int32), sums
