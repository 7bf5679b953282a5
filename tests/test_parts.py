"""Whole row groups read in column parts give the same rows, values and labels as row batches of every column."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from conftest import write_shard

import extmem
from extmem import Dataset, FeatureValueError, ShardReadError
from extmem._contracts import Block
from extmem.encode._blocks import Encoder
from extmem.encode._pages import concat_blocks, read_pages
from extmem.read import _parts
from extmem.read._parts import one_batch
from extmem.read._reader import read_batches
from extmem.read._selection import Selection, select_dataset

BATCH_ROWS = 128


def by_row_batches(selection: Selection) -> Block:
    encoder = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)
    return concat_blocks([encoder(batch) for batch in read_batches(selection, BATCH_ROWS)])


def by_whole_row_groups(selection: Selection) -> tuple[Block, int]:
    """The selection's rows through whole row groups where they qualify, and how many came whole."""
    whole = sum(batch.parts is not None for batch in read_batches(selection, BATCH_ROWS, whole_rows=1 << 20))
    encoder = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)
    return concat_blocks(list(read_pages(selection, encoder, BATCH_ROWS, 1 << 21))), whole


def assert_same_block(got: Block, expected: Block) -> None:
    assert got.X.shape == expected.X.shape
    if sp.issparse(expected.X):
        assert sp.issparse(got.X)
        for name in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(got.X, name), getattr(expected.X, name), err_msg=name)
    else:
        np.testing.assert_array_equal(got.X, expected.X)
    for name in ("label", "weight"):
        if getattr(expected, name) is None:
            assert getattr(got, name) is None
        else:
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


@pytest.mark.parametrize(
    ("options", "comes_whole"),
    [
        ({"preset": "splice-sites"}, True),
        ({"preset": "splice-sites", "filter": "(chrom == 'chr1') | (position > 20000)"}, True),
        ({"preset": "splice-sites", "holdout": extmem.Holdout(0.3, seed=5)}, True),
        ({"preset": "splice-sites", "holdout": extmem.Holdout(0.3, group_by="gene_id", side="valid")}, True),
        ({"preset": "splice-sites", "categorical": ("gene_type", "chrom")}, True),
        ({"preset": "splice-sites", "max_rows": 1700}, True),
        ({"label": "splice_type"}, True),  # no count columns: dense blocks
        ({"preset": "splice-sites", "kmers": extmem.KmerEncoding(width=32, signed=True)}, True),  # k-mers folded part by part
        # the sequences, decoded whole, would take more than half a batch's decoding: row batches
        ({"preset": "splice-sites", "kmers": extmem.KmerEncoding(k=3, sequence_column="sequence")}, False),
    ],
    ids=["plain", "filter", "holdout", "group-holdout", "categorical", "max-rows", "dense", "folded", "sequence"],
)
def test_whole_row_groups_give_the_same_block_as_row_batches(small_synth: Path, options: dict, comes_whole: bool) -> None:
    selection = select_dataset(Dataset(small_synth, **options))
    got, whole = by_whole_row_groups(selection)
    assert (whole > 0) == comes_whole  # row groups of 500 rows, batches of 128
    assert_same_block(got, by_row_batches(selection))


def test_row_groups_within_a_batch_come_whole_when_their_columns_make_several_parts(wide_synth: Path, small_synth: Path) -> None:
    """As scoring reads (whole row groups of at most a batch): 1,000 rows of 4,122 columns come in parts; 500 rows of 280 columns,
    one part's worth, come as one batch of every column."""
    for data, comes_whole in ((wide_synth, True), (small_synth, False)):
        selection = select_dataset(Dataset(data, preset="splice-sites"))
        encoder = Encoder(selection.layout)
        whole = []
        blocks = []
        for batch in read_batches(selection, 1000, whole_rows=1000):
            whole.append(batch.parts is not None)
            blocks.append(encoder(batch))
        assert whole == [comes_whole] * len(whole)
        got = concat_blocks(blocks)
        expected = concat_blocks([encoder(batch) for batch in read_batches(selection, 1000)])
        assert_same_block(got, expected)


def test_whole_row_groups_of_mixed_packed_and_wide_shards(small_synth: Path, tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    extmem.pack(small_synth, packed, row_group_rows=400)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shards = sorted(small_synth.glob("*.parquet"))
    (mixed / "a.parquet").write_bytes(shards[0].read_bytes())
    (mixed / "b.parquet").write_bytes(sorted(packed.glob("*.parquet"))[1].read_bytes())
    selection = select_dataset(Dataset(mixed, preset="splice-sites", weight="position"))
    got, whole = by_whole_row_groups(selection)
    assert whole > 0
    assert_same_block(got, by_row_batches(selection))


def test_nulls_integers_and_weights_in_whole_row_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 1000
    counts = [pa.array(rng.integers(0, 3, rows), type=kind) for kind in (pa.int8(), pa.uint16(), pa.int64())]
    with_nulls = pa.array(np.where(rng.random(rows) < 0.2, np.nan, rng.random(rows)), from_pandas=True)
    columns = {
        "2mer_AA": counts[0],
        "2mer_AC": counts[1],
        "2mer_AG": counts[2],
        **{f"2mer_T{base}": pa.array(rng.integers(0, 3, rows)) for base in "ACGT"},  # enough plain columns beside the weights
        "score": with_nulls,
        "flag": pa.array(rng.random(rows) < 0.5),
        "w": pa.array(rng.random(rows) + 0.5),
        "splice_type": pa.array(rng.choice(["neither", "donor", "acceptor"], rows)),
    }
    write_shard(tmp_path / "d" / "s.parquet", columns, row_group_size=300)
    selection = select_dataset(Dataset(tmp_path / "d", preset="splice-sites", weight="w"))
    got, whole = by_whole_row_groups(selection)
    assert whole > 0
    assert_same_block(got, by_row_batches(selection))


def test_large_carried_columns_keep_a_row_group_in_row_batches(tmp_path: Path) -> None:
    """The other columns of a whole row group are decoded at once: carried strings of 2 kB a row count, and keep it in batches."""
    rng = np.random.default_rng(1)
    rows = 1000
    columns: dict[str, object] = {f"3mer_{i:03d}": pa.array(rng.integers(0, 3, rows), type=pa.int8()) for i in range(64)}
    columns["note"] = pa.array([rng.bytes(1000).hex() for _ in range(rows)])
    columns["splice_type"] = pa.array(rng.choice(["neither", "donor", "acceptor"], rows))
    write_shard(tmp_path / "d" / "s.parquet", columns, row_group_size=rows)
    dataset = Dataset(tmp_path / "d", preset="splice-sites")
    for carry, comes_whole in (((), True), (("note",), False)):
        selection = select_dataset(dataset, carry=carry)
        whole = [batch.parts is not None for batch in read_batches(selection, 256, whole_rows=rows)]
        assert whole == ([True] if comes_whole else [False] * 4), carry  # whole, or in four batches of 256 rows


def test_parts_are_refused_once_the_reader_moved_on(small_synth: Path) -> None:
    selection = select_dataset(Dataset(small_synth, preset="splice-sites"))
    batches = read_batches(selection, BATCH_ROWS, whole_rows=1 << 20)
    first = next(batches)
    assert first.parts is not None
    assert sum(part.num_columns for part in first.parts()) > 0
    next(batches)
    with pytest.raises(RuntimeError, match="after the reader moved on"):
        next(first.parts())


def test_a_broken_column_chunk_in_a_part_names_the_shard_and_row_group(tmp_path: Path) -> None:
    rows = 2000
    columns = {f"2mer_{a}{b}": list(range(rows)) for a in "ACGT" for b in "ACGT"}
    columns["splice_type"] = ["donor"] * rows
    path = write_shard(tmp_path / "d" / "s.parquet", columns, row_group_size=1000)
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[footer_start // 2 : footer_start - 8] = b"\xff" * (footer_start - 8 - footer_start // 2)  # the second row group's pages
    path.write_bytes(bytes(data))
    selection = select_dataset(Dataset(tmp_path / "d", preset="splice-sites"))
    encoder = Encoder(selection.layout)
    with pytest.raises(ShardReadError, match=r"row group 1 of .*s\.parquet"):
        list(read_pages(selection, encoder, BATCH_ROWS, 1 << 21))


def test_the_next_part_is_decoded_ahead_and_closing_the_parts_waits_for_it(wide_synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    second_decoded = threading.Event()

    def counting(table: pa.Table) -> pa.RecordBatch:
        decoded.append(threading.current_thread().name)
        if len(decoded) == 2:
            second_decoded.set()
        return one_batch(table)

    monkeypatch.setattr(_parts, "one_batch", counting)
    selection = select_dataset(Dataset(wide_synth, preset="splice-sites"))
    batches = read_batches(selection, BATCH_ROWS, whole_rows=1 << 20)  # holds the shard open
    first = next(batches)
    assert first.parts is not None
    parts = first.parts()
    next(parts)
    assert second_decoded.wait(30)  # the second part is decoded before it is asked for
    assert all(name.startswith("extmem-parts") for name in decoded)
    parts.close()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("extmem-parts")]


def test_an_error_in_a_part_stops_the_part_decoded_ahead_at_once(tmp_path: Path) -> None:
    rows = 1000
    columns: dict[str, list] = {f"3mer_{a}{b}{c}": [1.0] * rows for a in "ACGT" for b in "ACGT" for c in "ACGT"}
    columns["3mer_ACA"][7] = 1e39  # beyond float32: refused while its part is encoded
    columns["splice_type"] = ["donor"] * rows
    write_shard(tmp_path / "d" / "s.parquet", columns, row_group_size=rows)
    selection = select_dataset(Dataset(tmp_path / "d", preset="splice-sites"))
    batches = read_batches(selection, BATCH_ROWS, whole_rows=1 << 20)
    whole = next(batches)
    assert whole.parts is not None
    with pytest.raises(FeatureValueError, match="3mer_ACA") as raised:
        Encoder(selection.layout)(whole)
    # the traceback still refers to the encoder's frames; the read ahead has ended all the same
    assert raised.value is not None
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("extmem-parts")]
