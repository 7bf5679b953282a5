from __future__ import annotations

import collections
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import extmem
from extmem.tools._synth import SCORE_COLUMNS, kmer_names


def test_kmer_counts_agree_with_the_sequence(small_synth: Path) -> None:
    table = pq.read_table(small_synth / "batch_00002.parquet")
    kmers = [n for n in table.column_names if n.startswith("4mer_")]
    counts = {name: table.column(name).to_pylist() for name in kmers}
    for row, sequence in enumerate(table.column("sequence").to_pylist()[:200]):
        expected = collections.Counter(sequence[i : i + 4] for i in range(len(sequence) - 3))
        observed = {name[5:]: counts[name][row] for name in kmers if counts[name][row]}
        assert observed == expected


def test_shape_matches_the_splice_data(small_synth: Path) -> None:
    shards = sorted(small_synth.glob("*.parquet"))
    assert [p.name for p in shards] == ["batch_00001.parquet", "batch_00002.parquet", "batch_00003.parquet"]
    metadata = pq.read_metadata(shards[0])
    assert metadata.num_row_groups == 2
    schema = pq.read_schema(shards[0])
    for name in ("gene_id", "transcript_id", "chrom", "strand", "gene_type", "sequence", "splice_type", "position", *SCORE_COLUMNS):
        assert name in schema.names
    assert len(SCORE_COLUMNS) == 20
    labels = pq.ParquetDataset(small_synth).read(columns=["splice_type"]).column(0).to_pylist()
    shares = collections.Counter(labels)
    assert set(shares) == {"neither", "donor", "acceptor"}
    assert 0.89 < shares["neither"] / len(labels) < 0.95


def test_rare_kmers_make_schemas_differ(tmp_path: Path) -> None:
    extmem.synth(tmp_path, extmem.SynthOptions(rows=300, shards=3, k=5, seq_len=40))
    seen = [{n for n in pq.read_schema(p).names if n.startswith("5mer_")} for p in sorted(tmp_path.glob("*.parquet"))]
    assert len({frozenset(s) for s in seen}) == 3
    assert all(s <= set(kmer_names(5)) for s in seen)


def test_generation_is_deterministic_by_seed(tmp_path: Path) -> None:
    options = extmem.SynthOptions(rows=200, shards=2, k=3, seq_len=40, seed=5)
    a, b = extmem.synth(tmp_path / "a", options), extmem.synth(tmp_path / "b", options)
    assert all(pq.read_table(x).equals(pq.read_table(y)) for x, y in zip(a, b))
    c = extmem.synth(tmp_path / "c", extmem.SynthOptions(rows=200, shards=2, k=3, seq_len=40, seed=6))
    assert not pq.read_table(a[0]).equals(pq.read_table(c[0]))


def test_refuses_a_folder_with_shards(tmp_path: Path) -> None:
    extmem.synth(tmp_path, extmem.SynthOptions(rows=10, shards=1, k=3, seq_len=40))
    before = sorted(tmp_path.iterdir())
    with pytest.raises(extmem.OptionError, match="exists and is not empty; pass 'overwrite' to replace it"):
        extmem.synth(tmp_path, extmem.SynthOptions(rows=10, shards=1, k=3, seq_len=40))
    assert sorted(tmp_path.iterdir()) == before
    extmem.synth(tmp_path, extmem.SynthOptions(rows=20, shards=2, k=3, seq_len=40), overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["_manifest.json", "batch_00001.parquet", "batch_00002.parquet"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"rows": 0}, "'rows' option must be a positive integer"),
        ({"rows": 3, "shards": 4}, "at least the number of shards"),
        ({"rows": 10, "k": 9}, "'k' option must be an integer from 1 to 8"),
        ({"rows": 10, "seq_len": 10}, "'seq_len'"),
    ],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises(extmem.OptionError, match=match):
        extmem.SynthOptions(**options)
