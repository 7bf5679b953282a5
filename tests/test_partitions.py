"""Partitioned datasets: ``key=value`` folders (Spark, dask, pyarrow) read as columns, filtered and split on like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import write_shard

import extmem
from extmem.cli import main
from extmem.diagnostics import schema_of
from extmem.read._discover import HIVE_NULL, discover_shards, partition_path, partition_values

ROWS = 3_000


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same rows as a dataset partitioned by chrom and year (as pyarrow writes it) and as one flat file in the same row order."""
    rng = np.random.default_rng(0)
    chrom = rng.choice(["chr1", "chr2", "chr 3"], ROWS)
    year = rng.choice([2020, 2021], ROWS)
    x = rng.normal(size=ROWS)
    y = ((x + (chrom == "chr2") + 0.3 * rng.normal(size=ROWS)) > 0.5).astype(np.int64)
    table = pa.table({"x": x, "chrom": chrom, "year": year, "y": y})
    root = tmp_path_factory.mktemp("partitions")
    ds.write_dataset(table, root / "hive", format="parquet", partitioning=["chrom", "year"], partitioning_flavor="hive")
    shards = sorted(str(path) for path in (root / "hive").rglob("*.parquet"))  # the order extmem reads them in
    read = ds.dataset(shards, format="parquet", partitioning="hive", partition_base_dir=str(root / "hive"))
    ordered = read.to_table(columns=["x", "chrom", "year", "y"])
    write_shard(root / "flat" / "all.parquet", {name: ordered.column(name).combine_chunks() for name in ordered.column_names})
    return root / "hive", root / "flat"


def test_folder_values_are_columns_of_their_rows(frames: tuple[Path, Path]) -> None:
    """Each shard's key=value folders give it columns: integers where every value is one, text (URL-decoded) otherwise."""
    hive, flat = frames
    schema = schema_of(str(hive))
    assert str(schema.columns["chrom"].arrow_type) == "large_string" and str(schema.columns["year"].arrow_type) == "int64"
    assert {values["chrom"] for values in schema.partitions.values()} == {"chr1", "chr2", "chr 3"}
    hive_model = extmem.train(hive, label="y", categorical=["chrom"], rounds=4, valid_fraction=0.6, group_by="chrom")
    flat_model = extmem.train(flat, label="y", categorical=["chrom"], rounds=4, valid_fraction=0.6, group_by="chrom")
    assert hive_model.report["features"] == 3  # x, year (numeric) and chrom (categorical)
    assert hive_model.report["history"] == flat_model.report["history"]


def test_a_filter_on_folder_values_skips_the_other_shards_unread(frames: tuple[Path, Path]) -> None:
    hive, flat = frames
    result = extmem.train(hive, label="y", filter="(chrom == 'chr2') & (year == 2021)", rounds=2)
    expected = pq.read_table(flat / "all.parquet", filters=(ds.field("chrom") == "chr2") & (ds.field("year") == 2021)).num_rows
    assert result.report["rows"] == expected
    assert result.report["data"]["train"]["row_groups_read"] == 1 and result.report["data"]["train"]["row_groups_skipped"] == 5


def test_predictions_keep_folder_columns(frames: tuple[Path, Path], tmp_path: Path) -> None:
    hive, flat = frames
    extmem.train(hive, label="y", out=tmp_path / "m", rounds=2)
    assert main(["predict", str(tmp_path / "m"), str(hive), "--out", str(tmp_path / "p.parquet"), "--keep", "chrom,year,x"]) == 0
    inside = hive / "chrom=chr1" / "year=2020" / "p.parquet"  # the next read of the dataset would take it for a shard
    assert main(["predict", str(tmp_path / "m"), str(hive), "--out", str(inside)]) == 2 and not inside.exists()
    kept = pq.read_table(tmp_path / "p.parquet").select(["chrom", "year", "x"]).sort_by("x")
    assert kept.equals(pq.read_table(flat / "all.parquet").select(["chrom", "year", "x"]).cast(kept.schema).sort_by("x"))


def test_null_values_clashes_and_rewrites(tmp_path: Path) -> None:
    """Spark's null marker is a null; a column both in a shard and in its folder name is refused, and so is a folder with
    shards both of its own and in partitions (one kind would go unread)."""
    write_shard(tmp_path / "data" / "g=a" / "p.parquet", {"x": [1.0, 2.0], "y": [0, 1]})
    write_shard(tmp_path / "data" / f"g={HIVE_NULL}" / "p.parquet", {"x": [3.0, 4.0], "y": [1, 0]})
    schema = schema_of(str(tmp_path / "data"))
    assert sorted(values["g"] or "" for values in schema.partitions.values()) == ["", "a"]
    write_shard(tmp_path / "wide" / "n=1" / "p.parquet", {"x": [1.0], "y": [0]})
    write_shard(tmp_path / "wide" / f"n={2**64}" / "p.parquet", {"x": [2.0], "y": [1]})
    assert str(schema_of(str(tmp_path / "wide")).columns["n"].arrow_type) == "large_string"  # beyond int64: text, not an overflow
    write_shard(tmp_path / "data" / "own.parquet", {"x": [5.0], "y": [1]})
    with pytest.raises(extmem.InputPathError, match="holds shards of its own .* and in partition folders"):
        extmem.train(tmp_path / "data", label="y", rounds=1)
    write_shard(tmp_path / "clash" / "g=a" / "p.parquet", {"x": [1.0], "g": ["b"], "y": [0]})
    with pytest.raises(extmem.SchemaError, match="holds the column 'g', which its folder name"):
        extmem.train(tmp_path / "clash", label="y", rounds=1)


def test_like_named_shards_of_partitions_split_apart() -> None:
    """Without group_by, rows are split by shard name and position: partitions' part-0.parquet files are told apart, and a plain
    folder's shards keep the names they always had (a split does not change)."""
    assert partition_path("/data/chrom=chr1/year=2020/part-0.parquet") == "chrom=chr1/year=2020/part-0.parquet"
    assert partition_path("/data/run/batch_00001.parquet") == "batch_00001.parquet"
    assert partition_path("s3://bucket/set/g=a/p.parquet?endpoint_override=x") == "g=a/p.parquet"


def test_a_shard_named_as_a_file_keeps_its_folder_values(frames: tuple[Path, Path]) -> None:
    """A distributed worker is given its shards as files: it reads the folder values the whole dataset's scan gave them."""
    hive, _ = frames
    shards = discover_shards([str(hive)])
    assert partition_values(shards, shards) == partition_values([str(hive)], shards)
    one_glob = str(hive / "chrom=chr2" / "*" / "*.parquet")  # a glob of one partition keeps the folders above its shards
    assert {values["chrom"] for values in partition_values([one_glob], discover_shards([one_glob])).values()} == {"chr2"}
    one = str(hive / "chrom=chr2")  # a partition read as a dataset: only the folders below it give columns
    assert [set(values) for values in partition_values([one], discover_shards([one])).values()] == [{"year"}, {"year"}]


def test_pack_and_prune_keep_the_folder_values_as_columns(frames: tuple[Path, Path], tmp_path: Path) -> None:
    """Their flat output holds each shard's folder values as its own columns (the shard named by its partition path), so
    nothing is lost: the rows read back equal the flat copy's."""
    hive, flat = frames
    expected = pq.read_table(flat / "all.parquet").select(["x", "chrom", "year", "y"])
    extmem.pack(hive, tmp_path / "packed", block_pattern="^x$")
    assert min(path.name for path in (tmp_path / "packed").glob("*.parquet")) == "chrom=chr%203__year=2020__part-0.parquet"
    manifest = extmem.prune(hive, tmp_path / "pruned", label="y", output_format="wide")
    assert "year" in manifest["kept"] and len(manifest["files"]) == 6
    packed = ds.dataset(tmp_path / "packed").to_table(columns=["kmer_values", "chrom", "year", "y"])
    x = pc.list_element(packed.column("kmer_values"), 0)  # x is never 0: one packed entry per row
    read = {"packed": packed.drop_columns("kmer_values").add_column(0, "x", x), "pruned": ds.dataset(tmp_path / "pruned").to_table()}
    expected = expected.set_column(0, "x", expected.column("x").cast(pa.float32()))  # packed values are float32
    for folder, table in read.items():
        table = table.select(["x", "chrom", "year", "y"]).cast(expected.schema)
        assert table.sort_by("x").equals(expected.sort_by("x")), folder
