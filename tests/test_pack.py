from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from conftest import all_rows, kill_while_staging, write_shard

import extmem
from extmem._contracts import PACKED_METADATA_KEY as METADATA_KEY
from extmem.encode import _pages as reading_pages
from extmem.read._selection import select_dataset
from extmem.tools._pack import pack


@pytest.fixture(scope="module")
def packed_synth(small_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "data"
    pack(small_synth, out, row_group_rows=700)
    return out


def _matrix(path: Path | list[str], layout: extmem.FeatureLayout | None = None) -> tuple[extmem.FeatureLayout, object, np.ndarray]:
    source = select_dataset(extmem.Dataset(path, preset="splice-sites"), layout=layout)
    block = all_rows(source)
    return source.layout, block.X, block.label


def test_packed_shards_read_back_as_the_wide_csr(small_synth: Path, packed_synth: Path) -> None:
    wide_layout, wide_X, wide_labels = _matrix(small_synth)
    packed_layout, packed_X, packed_labels = _matrix(packed_synth)
    assert packed_layout == wide_layout
    assert (packed_X != wide_X).nnz == 0 and packed_X.nnz == wide_X.nnz
    np.testing.assert_array_equal(packed_labels, wide_labels)


def test_packed_file_layout_is_documented_metadata_and_two_list_columns(small_synth: Path, packed_synth: Path) -> None:
    shard = min(packed_synth.glob("*.parquet"))
    file = pq.ParquetFile(shard)
    block = json.loads(file.metadata.metadata[METADATA_KEY])
    assert block["version"] == 1 and block["indices"] == "kmer_indices" and block["values"] == "kmer_values"
    wide_columns = pq.ParquetFile(min(small_synth.glob("*.parquet"))).schema_arrow.names
    assert block["columns"] == [name for name in wide_columns if name.startswith("4mer_")]
    schema = file.schema_arrow
    assert str(schema.field("kmer_indices").type) == "list<element: uint16>"
    assert str(schema.field("kmer_values").type) == "list<element: float>"
    assert "gene_id" in schema.names and "splice_type" in schema.names
    assert not any(name.startswith("4mer_") for name in schema.names)
    assert file.metadata.row_group(0).num_rows == 700


def test_mixed_wide_and_packed_shards_read_as_all_wide(small_synth: Path, packed_synth: Path) -> None:
    wide_shards = sorted(str(p) for p in small_synth.glob("*.parquet"))
    packed_shards = sorted(str(p) for p in packed_synth.glob("*.parquet"))
    layout, wide_X, _ = _matrix(wide_shards)
    _, mixed_X, _ = _matrix([wide_shards[0], packed_shards[1], wide_shards[2]], layout)
    assert (mixed_X != wide_X).nnz == 0


def test_training_on_packed_data_gives_the_wide_model(small_synth: Path, packed_synth: Path) -> None:
    wide = extmem.train(small_synth, preset="splice-sites", rounds=5, params={"max_depth": 3})
    packed = extmem.train(packed_synth, preset="splice-sites", rounds=5, params={"max_depth": 3})
    assert packed.report["data"]["train"]["spooled_bytes"] > 0 and wide.report["data"]["train"]["spooled_bytes"] > 0  # spooled by default
    model = extmem.Model.from_booster(wide.booster)
    np.testing.assert_array_equal(extmem.Model.from_booster(packed.booster).predict_proba(small_synth), model.predict_proba(small_synth))
    np.testing.assert_array_equal(model.predict_proba(packed_synth), model.predict_proba(small_synth))


def test_spool_replays_the_first_pass(small_synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = {"count": 0}
    original = reading_pages.read_batches

    def counting(*args: object, **kwargs: object) -> object:
        reads["count"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(reading_pages, "read_batches", counting)
    spooled = extmem.dmatrix(small_synth, preset="splice-sites", spool=True)
    assert reads["count"] == 1
    reads["count"] = 0
    plain = extmem.dmatrix(small_synth, preset="splice-sites", spool=False)
    assert reads["count"] == extmem.matrix_info(plain).stats.passes > 1
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3}
    import xgboost as xgb

    np.testing.assert_array_equal(xgb.train(params, spooled, 5).predict(spooled), xgb.train(params, plain, 5).predict(plain))
    assert not any(p.name.startswith("spool") for p in extmem.matrix_info(spooled).cache.path.iterdir())


def test_filter_on_a_packed_column_is_refused(packed_synth: Path) -> None:
    with pytest.raises(extmem.SchemaError, match="'4mer_AAAA' is stored in a packed block"):
        select_dataset(extmem.Dataset(packed_synth, preset="splice-sites", filter="field('4mer_AAAA') > 0"))


def test_pack_refuses_a_non_empty_destination(small_synth: Path, tmp_path: Path) -> None:
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("mine")
    with pytest.raises(extmem.OptionError, match="exists and is not empty"):
        pack(small_synth, tmp_path / "dst")
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["keep.txt"]


def test_a_block_pattern_matching_no_column_is_refused_before_writing(small_synth: Path, tmp_path: Path) -> None:
    with pytest.raises(extmem.OptionError, match=r"The 'block_pattern' '\^kmer_' matches no numeric column of .*: there are no count"):
        pack(small_synth, tmp_path / "dst", block_pattern="^kmer_")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("run", "option"),
    [
        (lambda data, out: pack(data, out, batch_rows=0), "batch_rows"),
        (lambda data, out: pack(data, out, row_group_rows=-1), "row_group_rows"),
        (lambda data, out: extmem.prune(data, out, row_group_rows=0), "row_group_rows"),
        (lambda data, out: extmem.dmatrix(data, preset="splice-sites", seed=-1), "seed"),
        (lambda data, out: extmem.train_incremental(data, preset="splice-sites", seed=2.5), "seed"),
    ],
    ids=["pack-batch", "pack-row-groups", "prune-row-groups", "dmatrix-seed", "incremental-seed"],
)
def test_sizes_and_seeds_of_the_wrong_kind_are_refused_by_name(small_synth: Path, tmp_path: Path, run: Callable, option: str) -> None:
    with pytest.raises(extmem.OptionError, match=f"The '{option}' option must be a"):
        run(small_synth, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_shard_leaves_no_output(small_synth: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_shard(src / "a.parquet", {"4mer_AAAA": [1.0, 0.0], "splice_type": ["donor", "neither"]})
    (src / "b.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    with pytest.raises(extmem.ShardReadError, match="b.parquet"):
        pack(src, tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.slow
def test_sigkill_leaves_nothing_and_the_next_run_sweeps_the_staging_folder(wide_synth: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    # row groups of 100 rows: the 1,000-row input groups are read in 100-row batches, not whole, so the writing lasts
    command = [sys.executable, "-m", "extmem", "pack", str(wide_synth), str(dst), "--batch-rows", "100", "--row-group-rows", "100"]
    command += ["--no-progress"]
    kill_while_staging(command, tmp_path, ".dst.extmem-staging-")
    assert not dst.exists()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in dst.glob("*.parquet")) == 4000


def test_pack_and_prune_never_replace_the_shards_they_read(small_synth: Path, tmp_path: Path) -> None:
    """pack data data --overwrite (or prune) replaced the dataset with its rewrite, the original gone; now refused, nothing touched."""
    data = tmp_path / "data"
    data.mkdir()
    for shard in sorted(small_synth.iterdir()):
        (data / shard.name).write_bytes(shard.read_bytes())
    before = {path.name: path.read_bytes() for path in data.iterdir()}
    for rewrite in (lambda: pack(data, data, overwrite=True), lambda: extmem.prune(data, data, label="splice_type", overwrite=True)):
        with pytest.raises(
            extmem.OptionError, match=r"'dst' folder '.*data' holds the shard '.*data/batch_00001\.parquet' it is written from"
        ):
            rewrite()
    assert {path.name: path.read_bytes() for path in data.iterdir()} == before


@pytest.mark.slow
def test_packing_tens_of_thousands_of_columns_reads_row_groups_in_column_parts(tmp_path: Path) -> None:
    """30,000 count columns: row batches of every column hold a reader per column (packing 65,536 columns took 3 GiB) and ran
    out of a 512 MiB data limit; row groups are read whole, their count columns in parts, and the shards are the same."""
    rng = np.random.default_rng(0)
    rows, width = 2000, 30_000
    names = [f"8mer_{i:05d}" for i in range(width)]
    counts = np.zeros((width, rows), dtype=np.uint8)
    counts[rng.integers(0, width, 4 * rows), rng.integers(0, rows, 4 * rows)] = 1
    table = pa.table({**dict(zip(names, counts)), "splice_type": np.array(["neither", "donor"])[rng.integers(0, 2, rows)]})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "a.parquet", row_group_size=1000)
    limited = ["prlimit", f"--data={512 * 2**20}", sys.executable, "-m", "extmem", "pack", str(tmp_path / "data"), str(tmp_path / "packed")]
    run = subprocess.run([*limited, "--block", "^8mer_", "--no-progress"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    packed = pq.read_table(tmp_path / "packed" / "a.parquet")
    offsets = packed.column("kmer_indices").combine_chunks().offsets.to_numpy()
    indices = packed.column("kmer_indices").combine_chunks().flatten().to_numpy()
    values = packed.column("kmer_values").combine_chunks().flatten().to_numpy()
    expected = sp.csr_matrix(counts.T.astype(np.float32))
    assert np.array_equal(offsets, expected.indptr) and np.array_equal(indices, expected.indices)
    assert np.array_equal(values, expected.data)
    assert packed.column("splice_type").equals(table.column("splice_type"))
