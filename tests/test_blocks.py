from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from conftest import encoded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extmem import Dataset
from extmem._contracts import Block, ReadCounters
from extmem._layout import FeatureLayout
from extmem.encode._blocks import Encoder, to_csr, to_dense
from extmem.encode._features import FeatureColumns, wide_features
from extmem.encode._packed import PackedRows
from extmem.encode._pages import concat_blocks, page_blocks, pages, read_pages
from extmem.read._reader import read_batches
from extmem.read._selection import select_dataset
from extmem.tools._pack import rewrite_shard
from extmem.xgb._spool import PageSpool


def features_of(batch: pa.RecordBatch) -> FeatureColumns:
    """All columns of ``batch`` as wide feature columns at positions 0, 1, ..."""
    return wide_features(batch, batch.schema.names, np.arange(batch.num_columns))


def expected_dense(columns: dict[str, list], layout: FeatureLayout) -> tuple[np.ndarray, np.ndarray]:
    """Reference: values (nulls as NaN) and which cells XGBoost must receive."""
    rows = len(next(iter(columns.values()))) if columns else 0
    values = np.full((rows, len(layout.names)), np.nan, dtype=np.float32)
    for j, name in enumerate(layout.names):
        if name in columns:
            values[:, j] = [np.nan if v is None else v for v in columns[name]]
    stored = ~np.isnan(values) & ((values != 0) | ~layout.sparse_mask[None, :])
    return values, stored


def check_csr(X: sp.csr_matrix, values: np.ndarray, stored: np.ndarray) -> None:
    assert X.dtype == np.float32 and X.has_canonical_format
    present = np.zeros(X.shape, dtype=bool)
    coo = X.tocoo()
    present[coo.row, coo.col] = True
    np.testing.assert_array_equal(present, stored)
    np.testing.assert_array_equal(coo.data, values[coo.row, coo.col])


def test_counts_drop_zeros_and_nulls_but_dense_columns_keep_zeros() -> None:
    layout = FeatureLayout.build(["6mer_AAAAAA", "score", "6mer_CCCCCC"], r"^\d+mer_")
    columns = {"6mer_AAAAAA": [0.0, 2.0, None], "score": [0.0, None, 0.5], "6mer_CCCCCC": [None, None, None]}
    batch = pa.RecordBatch.from_pydict({k: pa.array(v, pa.float32()) for k, v in columns.items()})
    X = to_csr(features_of(batch), layout)
    check_csr(X, *expected_dense(columns, layout))
    assert X.nnz == 3  # 2.0, the stored 0.0 score, 0.5


def test_integer_columns_with_nulls_convert() -> None:
    layout = FeatureLayout.build(["4mer_ACGT", "position"], r"^\d+mer_")
    columns = {"4mer_ACGT": [3, None, 0], "position": [10, 0, None]}
    batch = pa.RecordBatch.from_pydict({k: pa.array(v, pa.int64()) for k, v in columns.items()})
    check_csr(to_csr(features_of(batch), layout), *expected_dense(columns, layout))


@given(st.lists(st.booleans(), min_size=2, max_size=8), st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=60, deadline=None)
def test_packed_entries_merge_with_wide_columns_wherever_they_sit(is_packed: list[bool], seed: int, descending: bool) -> None:
    """Packed positions before, after or between the wide ones, in any order within a row: the CSR equals the dense reference, canonical."""
    rng = np.random.default_rng(seed)
    rows, names = 6, [f"6mer_{'ACGT'[i % 4] * 5}{'ACGT'[i // 4]}" for i in range(len(is_packed))]
    layout = FeatureLayout.build(names, r"^\d+mer_")
    values = rng.choice([0.0, 1.0, 2.0, 7.0], size=(rows, len(names))).astype(np.float32)
    wide_at = np.flatnonzero(~np.array(is_packed))
    packed_at = np.flatnonzero(is_packed)[:: -1 if descending else 1]
    batch = pa.RecordBatch.from_arrays([pa.array(values[:, j]) for j in wide_at], names=[names[j] for j in wide_at])
    kept = values[:, packed_at] != 0
    entries = PackedRows(
        np.concatenate([[0], np.cumsum(kept.sum(axis=1))]),
        np.broadcast_to(packed_at, kept.shape)[kept].astype(np.int32),
        values[:, packed_at][kept],
    )
    features = FeatureColumns(rows, batch, wide_at, entries)
    X = to_csr(features, layout)
    check_csr(X, values, values != 0)


def test_dense_path_keeps_nan_for_nulls() -> None:
    batch = pa.RecordBatch.from_pydict({"a": pa.array([1.0, None]), "b": pa.array([0, 5])})
    layout = FeatureLayout.build(["a", "b"], None)
    np.testing.assert_array_equal(to_dense(features_of(batch), layout), np.array([[1.0, 0.0], [np.nan, 5.0]], dtype=np.float32))


def test_pages_hold_exactly_page_rows_however_the_rows_were_read(small_synth: Path) -> None:
    """Pages cut blocks where they end: the same pages from batches of 128 or 700 rows, or from whole row groups."""
    selection = select_dataset(Dataset(small_synth, preset="splice-sites"))
    counters = ReadCounters()
    encoder = Encoder(selection.layout)
    small = list(pages(map(encoder, read_batches(selection, 128, counters=counters)), 1000))
    assert [page.rows for page in small] == [1000, 1000, 1000]
    assert len(small) < counters.batches
    for other in (
        pages(map(encoder, read_batches(selection, 700)), 1000),
        read_pages(selection, encoder, 128, 1000),  # row groups of 500 rows come whole
    ):
        for page, expected in zip(other, small, strict=True):
            assert (page.X != expected.X).nnz == 0 and np.array_equal(page.label, expected.label)


@pytest.mark.parametrize("page_rows", [4, 7, 10, 25, 100])
def test_pages_cut_and_join_blocks_with_their_labels_and_weights(page_rows: int) -> None:
    rng = np.random.default_rng(page_rows)
    blocks = [
        Block(sp.random(rows, 6, density=0.4, format="csr", dtype=np.float32, random_state=rows), rng.random(rows), rng.random(rows))
        for rows in (10, 3, 0, 12)
    ]
    paged = list(pages(iter(blocks), page_rows))
    assert [page.rows for page in paged[:-1]] == [page_rows] * (len(paged) - 1) and 0 < paged[-1].rows <= page_rows
    for name in ("label", "weight"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(page, name) for page in paged]), np.concatenate([getattr(b, name) for b in blocks])
        )
    joined = sp.vstack([page.X for page in paged])
    assert (joined != sp.vstack([b.X for b in blocks])).nnz == 0
    for page in paged:
        page.X.check_format(full_check=True)


@pytest.mark.parametrize(("page_rows", "prefetch"), [(4, 0), (25, 1)])
@pytest.mark.parametrize("dense", [False, True])
def test_spooled_page_blocks_replay_as_the_joined_pages(tmp_path: Path, page_rows: int, prefetch: int, dense: bool) -> None:
    rng = np.random.default_rng(page_rows)
    blocks = []
    for rows in (10, 3, 0, 12):
        X = sp.random(rows, 6, density=0.4, format="csr", dtype=np.float32, random_state=rows)
        if rows == 12:  # scipy may give a block 64-bit indices: the spool writes one dtype per file
            X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
        blocks.append(Block(X.toarray() if dense else X, rng.random(rows).astype(np.float32), None))
    spool = PageSpool(tmp_path / "spool")
    rows = list(spool.fill(page_blocks(iter(blocks), page_rows), prefetch=prefetch))
    expected = list(pages(iter(blocks), page_rows))
    assert rows == [page.rows for page in expected] and spool.complete
    for replayed, page in zip(spool.replay(6), expected, strict=True):
        assert replayed.weight is None
        np.testing.assert_array_equal(replayed.label, page.label)
        if dense:
            np.testing.assert_array_equal(replayed.X, page.X)
        else:
            replayed.X.check_format(full_check=True)
            np.testing.assert_array_equal(replayed.X.toarray(), page.X.toarray())
    spool.clear()
    assert not (tmp_path / "spool").exists()


def test_a_failure_while_pages_are_read_ahead_reaches_the_filling_thread_and_stops_the_reader(tmp_path: Path) -> None:
    def failing() -> Iterator[list[Block]]:
        yield [Block(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)), None, None)]
        raise OSError("the second page cannot be read")

    spool = PageSpool(tmp_path / "spool")
    filled = spool.fill(failing(), prefetch=1)
    assert next(filled) == 2
    with pytest.raises(OSError, match="second page"):
        next(filled)
    assert not spool.complete
    assert not [thread for thread in threading.enumerate() if thread.name == "extmem-prefetch"]


names = st.sampled_from(["3mer_AAA", "3mer_CGT", "3mer_TTT", "score_a", "score_b", "position"])
cell = st.one_of(st.none(), st.integers(0, 3).map(float), st.floats(-5, 5, allow_nan=False, width=32))


@st.composite
def shard_sets(draw: st.DrawFn) -> list[dict[str, list]]:
    shards = []
    for _ in range(draw(st.integers(1, 4))):
        rows = draw(st.integers(0, 12))
        chosen = draw(st.lists(names, min_size=1, max_size=5, unique=True))
        shard = {name: draw(st.lists(cell, min_size=rows, max_size=rows)) for name in chosen}
        shard["splice_type"] = draw(st.lists(st.sampled_from(["neither", "donor", "acceptor"]), min_size=rows, max_size=rows))
        shards.append(shard)
    return shards


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shards=shard_sets(), batch_rows=st.integers(1, 7), page_rows=st.integers(1, 20), packed=st.lists(st.booleans(), min_size=4, max_size=4)
)
def test_streamed_pages_equal_the_concatenated_shards(
    tmp_path_factory, shards: list[dict[str, list]], batch_rows: int, page_rows: int, packed: list[bool]
) -> None:
    """Wide and packed shards, mixed, with differing k-mer sets, stream exactly the wide reference."""
    folder = tmp_path_factory.mktemp("prop")
    for i, shard in enumerate(shards):
        table = pa.table({k: pa.array(v, pa.string() if k == "splice_type" else pa.float64()) for k, v in shard.items()})
        path = folder / f"batch_{i:05d}.parquet"
        pq.write_table(table, path, row_group_size=3)
        if packed[i]:
            wide = path.rename(path.with_suffix(".wide"))
            rewrite_shard(str(wide), path, batch_rows=2, row_group_rows=4)
            wide.unlink()
    source = select_dataset(Dataset(folder, preset="splice-sites", batch_rows=batch_rows))
    streamed = list(pages(encoded(source), page_rows))
    total_rows = sum(len(s["splice_type"]) for s in shards)
    if total_rows == 0:
        assert streamed == []
        return
    block = concat_blocks(streamed)
    reference = {name: [] for name in source.layout.names}
    labels: list[int] = []
    for shard in shards:
        rows = len(shard["splice_type"])
        for name, values in reference.items():
            values.extend(shard.get(name, [None] * rows))
        labels.extend({"neither": 0, "donor": 1, "acceptor": 2}[v] for v in shard["splice_type"])
    values, stored = expected_dense(reference, source.layout)
    if any(source.layout.zero_is_missing):
        check_csr(block.X, values, stored)
    else:
        np.testing.assert_array_equal(block.X, values)
    assert block.label.tolist() == labels
    assert all(math.isfinite(v) for v in block.label)
