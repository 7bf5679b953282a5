from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import scipy.sparse as sp
from conftest import all_rows, write_shard
from sklearn.feature_extraction import FeatureHasher

import extmem
from extmem.encode._blocks import Encoder
from extmem.encode._kmers import bucket, count_kmers, sequence_entries
from extmem.encode._pages import concat_blocks, read_pages
from extmem.read import _reader
from extmem.read._selection import select_dataset


def _matrix(dataset: extmem.Dataset) -> tuple[extmem.FeatureLayout, sp.csr_matrix]:
    source = select_dataset(dataset)
    return source.layout, all_rows(source).X


def _kmer_part(layout: extmem.FeatureLayout, X: sp.csr_matrix) -> sp.csr_matrix:
    return X[:, layout.kmer_offset :]


def test_counts_from_sequences_equal_the_synth_kmer_columns(small_synth: Path) -> None:
    layout, counted = _matrix(
        extmem.Dataset(small_synth, preset="splice-sites", kmers=extmem.KmerEncoding(k=4, sequence_column="sequence"))
    )
    columns_layout, columns = _matrix(extmem.Dataset(small_synth, preset="splice-sites", features="4mer_*"))
    assert len(layout.names) - layout.kmer_offset == 256
    index = {name: j for j, name in enumerate(layout.names)}
    order = [index[name] for name in columns_layout.names]
    assert (counted[:, order] != columns).nnz == 0
    assert counted[:, order].nnz == columns.nnz > 0
    # the other numeric columns come first, unchanged
    assert "donor_score" in layout.names[: layout.kmer_offset]
    assert not any(name.startswith("4mer_") for name in layout.names[: layout.kmer_offset])


def test_counts_from_sequences_of_row_groups_read_in_parts_are_counted_once(tmp_path: Path) -> None:
    """Row groups of 1,500 rows come whole as pages are built, their value columns in two parts; the sequence is in one place only."""
    extmem.synth(tmp_path, extmem.SynthOptions(rows=3000, shards=2, k=4, seed=2))
    selection = select_dataset(extmem.Dataset(tmp_path, preset="splice-sites", kmers=extmem.KmerEncoding(k=3, sequence_column="sequence")))
    with patch.object(_reader, "part_reader", wraps=_reader.part_reader) as parts:
        paged = concat_blocks(list(read_pages(selection, Encoder(selection.layout), 2048, 4096))).X
    assert parts.call_count == 2, "each row group read whole, in parts"
    assert paged.shape == (3000, len(selection.layout.names)) and (paged != all_rows(selection).X).nnz == 0


@pytest.mark.parametrize("signed", [False, True])
def test_hashing_sequences_equals_folding_columns_and_sklearn(small_synth: Path, signed: bool) -> None:
    from_sequence = extmem.KmerEncoding(width=64, k=4, sequence_column="sequence", signed=signed)
    folded = extmem.KmerEncoding(width=64, signed=signed)
    layout_a, a = _matrix(extmem.Dataset(small_synth, preset="splice-sites", kmers=from_sequence))
    layout_b, b = _matrix(extmem.Dataset(small_synth, preset="splice-sites", kmers=folded))
    assert layout_a.names == layout_b.names and layout_a.names[-1] == "kmer_hash_63"
    assert (_kmer_part(layout_a, a) != _kmer_part(layout_b, b)).nnz == 0
    hashed = _kmer_part(layout_a, a)
    assert hashed.has_canonical_format and not (hashed.data == 0).any()  # collisions summed, cancelled sums removed
    sequences = pa.concat_arrays(
        [batch.column("sequence") for batch in ds.dataset(str(small_synth)).to_batches(columns=["sequence"])]
    ).to_pylist()
    hasher = FeatureHasher(n_features=64, input_type="string", alternate_sign=signed)
    reference = hasher.transform([[s[i : i + 4] for i in range(len(s) - 3)] for s in sequences])
    reference.eliminate_zeros()
    np.testing.assert_array_equal(hashed.toarray(), reference.toarray())


def test_packed_columns_fold_like_wide_columns(small_synth: Path, tmp_path: Path) -> None:
    extmem.pack(small_synth, tmp_path / "packed")
    encoding = extmem.KmerEncoding(width=32, signed=True)
    layout_wide, wide = _matrix(extmem.Dataset(small_synth, preset="splice-sites", kmers=encoding))
    layout_packed, packed = _matrix(extmem.Dataset(tmp_path / "packed", preset="splice-sites", kmers=encoding))
    assert layout_wide == layout_packed
    assert (wide != packed).nnz == 0


def test_sequence_edge_cases_are_documented_behaviour() -> None:
    sequences = pa.array(["ACGT", "acgt", "ACNGT", None, "AC", "ACGTACGT"])
    rows, ids = (np.concatenate(parts) for parts in zip(*count_kmers(sequences, 3), strict=True))
    assert rows.tolist() == [0, 0, 1, 1, 5, 5, 5, 5, 5, 5]  # lower case counts; N breaks windows; null and short rows have none
    assert ids[:2].tolist() == [0 * 16 + 1 * 4 + 2, 1 * 16 + 2 * 4 + 3]  # ACG, CGT
    offsets, positions, values = sequence_entries(sequences.slice(2), extmem.KmerEncoding(k=3, sequence_column="s"), 10)
    assert offsets.tolist() == [0, 0, 0, 0, 4] and positions.min() >= 10 and sorted(values.tolist()) == [1, 1, 2, 2]  # ACG and CGT twice


def test_windows_split_between_chunks_are_counted_once() -> None:
    rng = np.random.default_rng(5)
    sequences = pa.array(["".join(rng.choice(list("ACGTN"), size=n)) for n in (0, 7, 40, 3, 25)] + [None, "ACGTACGTAC"])
    whole = [np.concatenate(parts) for parts in zip(*count_kmers(sequences, 4), strict=True)]
    for chunk in (1, 2, 5, 11):
        chunked = [np.concatenate(parts) for parts in zip(*count_kmers(sequences, 4, windows_per_chunk=chunk), strict=True)]
        assert all(np.array_equal(a, b) for a, b in zip(whole, chunked, strict=True)), chunk


@pytest.mark.parametrize(
    ("rows", "length", "k", "least_entries"),
    [(200, 50_000, 4, 200 * 4**4), (1024, 10_000, 6, 1024 * 3_000)],
    ids=["few-distinct", "many-distinct"],
)
def test_counting_long_sequences_holds_little_memory(rows: int, length: int, k: int, least_entries: int) -> None:
    """Temporaries are bounded by a chunk of windows and memory follows the batch's entries, not its windows. 200 rows of
    50 kb, k=4: 10 million bases, 256 k-mers a row. 1,024 rows of 10 kb, k=6: ~3,700 distinct k-mers a row (3.8 million
    entries, 29 MB as CSR); summing every window of the batch at once peaked at 422 MiB, rows finished chunk by chunk
    keep it near 125."""
    rng = np.random.default_rng(0)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size=rows * length)]
    sequences = pa.array([bases[i * length : (i + 1) * length].tobytes().decode() for i in range(rows)])
    del bases
    tracemalloc.start()
    try:
        offsets, _, values = sequence_entries(sequences, extmem.KmerEncoding(k=k, sequence_column="s"), 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert values.sum() == rows * (length - k + 1) and offsets[-1] >= least_entries  # every 4-mer in each row of 50 kb
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_hashed_model_scores_dataframes_and_parquet_alike(small_synth: Path, tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    encoding = extmem.KmerEncoding(width=128, k=4, sequence_column="sequence")
    result = extmem.train(small_synth, preset="splice-sites", out=tmp_path / "model", rounds=5, kmers=encoding)
    assert result.report["features"] == 128 + len(select_dataset(extmem.Dataset(small_synth, preset="splice-sites")).layout.names) - 256
    model = extmem.Model.load(tmp_path / "model")
    assert model.layout.kmers == encoding
    frame = ds.dataset(str(small_synth)).to_table().to_pandas()
    np.testing.assert_allclose(model.predict_proba(frame), model.predict_proba(small_synth), atol=1e-6)
    assert isinstance(frame, pandas.DataFrame)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0, "sequence_column": "sequence"}, "The 'k' option must be an integer from 1 to 12"),
        ({"k": 13, "sequence_column": "sequence", "width": 8}, "The 'k' option must be an integer from 1 to 12"),
        ({"k": 9, "sequence_column": "sequence"}, "would be 262,144 features"),
        ({"sequence_column": "sequence"}, "Counting k-mers from the sequence column 'sequence' needs 'k', the k-mer length \\(1 to 12\\)"),
        ({"width": 0}, "The 'width' of hashed k-mers must be a positive integer"),
        ({"width": 100_000_000}, "Hashed k-mer features \\('width'\\) are at most 16,777,216"),
        ({}, "Folding k-mer columns needs a hash 'width'"),
    ],
)
def test_bad_encodings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(extmem.OptionError, match=match):
        extmem.KmerEncoding(**kwargs)


def test_bad_kmer_sources_are_refused(small_synth: Path, tmp_path: Path) -> None:
    with pytest.raises(extmem.SchemaError, match="The sequence column 'donor_score' \\('sequence_column'\\) is double"):
        select_dataset(extmem.Dataset(small_synth, preset="splice-sites", kmers=extmem.KmerEncoding(k=3, sequence_column="donor_score")))
    write_shard(tmp_path / "plain" / "a.parquet", {"x": [1.0], "splice_type": ["donor"]})
    with pytest.raises(extmem.SchemaError, match="hashed features \\('width'\\) found no k-mer count columns"):
        select_dataset(extmem.Dataset(tmp_path / "plain", preset="splice-sites", kmers=extmem.KmerEncoding(width=8)))
    layout = select_dataset(
        extmem.Dataset(small_synth, preset="splice-sites", kmers=extmem.KmerEncoding(k=3, sequence_column="sequence"))
    ).layout
    with pytest.raises(
        extmem.SchemaError, match=r"^The model's sequence column 'sequence' is in none of the 1 shards \(first: '.*plain/a\.parquet'\)\.$"
    ):
        select_dataset(extmem.Dataset(tmp_path / "plain"), layout=layout)


@pytest.mark.parametrize("encoding", [extmem.KmerEncoding(k=3, sequence_column="s"), extmem.KmerEncoding(k=3, width=5, signed=True)])
def test_sequence_entries_are_the_windows_counted_row_by_row_whatever_the_chunks(encoding: extmem.KmerEncoding) -> None:
    """Rows finished chunk by chunk (the last row carried over) give each row's k-mer counts, summed per feature, as counting
    that row's windows one by one does; a chunk with no valid window (only N's) changes nothing."""
    rng = np.random.default_rng(7)
    texts = ["".join(rng.choice(list("ACGTN"), size=n, p=[0.3, 0.3, 0.2, 0.15, 0.05])) for n in (0, 9, 60, 3, 31, 2)]
    texts += [None, "N" * 20, "ACGTACGTAC" * 4]
    expected: list[dict[int, float]] = []
    for text in texts:
        row: dict[int, float] = {}
        for start in range(len(text or "") - 2):
            kmer = text[start : start + 3]  # type: ignore[index]
            if set(kmer) <= set("ACGT"):
                position, sign = bucket(encoding, kmer) if encoding.width else (int(kmer.translate(str.maketrans("ACGT", "0123")), 4), 1.0)
                row[position + 10] = row.get(position + 10, 0.0) + sign
        expected.append({position: value for position, value in row.items() if value})
    for chunk in (1, 2, 5, 11, 1 << 20):
        offsets, positions, values = sequence_entries(pa.array(texts), encoding, 10, windows_per_chunk=chunk)
        rows = [dict(zip(positions[a:b].tolist(), values[a:b].tolist(), strict=True)) for a, b in itertools.pairwise(offsets)]
        assert rows == expected, chunk
        assert all(np.all(np.diff(positions[a:b]) > 0) for a, b in itertools.pairwise(offsets)), chunk  # sorted within each row
