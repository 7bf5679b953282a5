from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import all_rows, kill_while_staging

import extmem
from extmem._destinations import MANIFEST_FILE
from extmem.cli import main
from extmem.read._discover import discover_shards
from extmem.read._selection import select_dataset
from extmem.tools._prune import ColumnStats, PruneOptions, prune


@pytest.fixture(scope="module")
def planted(small_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_synth plus columns that must go (constant, duplicate, correlated) and look-alikes that must stay."""
    out = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(5)
    for index, shard in enumerate(discover_shards([str(small_synth)])):
        table = pq.read_table(shard)
        rows = table.num_rows
        score = table.column("donor_score").to_numpy()
        planted_columns = {
            "const_seven": np.full(rows, 7.0),
            "4mer_never": np.zeros(rows),  # a count column that is never non-zero
            "copy_of_donor_score": score.copy(),
            "scaled_donor_score": 2 * score + 1 + rng.normal(scale=1e-4, size=rows),
            "same_within_shard": np.full(rows, float(index)),  # constant per shard, not over the dataset
            "seven_or_null": pa.array(np.where(rng.random(rows) < 0.5, 7.0, np.nan), from_pandas=True),
        }
        if index == 0:
            planted_columns["only_in_first_shard"] = np.ones(rows)  # absent elsewhere: not constant
        for name, values in planted_columns.items():
            table = table.append_column(name, pa.array(values) if not isinstance(values, pa.Array) else values)
        pq.write_table(table, out / Path(shard).name, row_group_size=400)
    return out


def _full_table(path: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(s) for s in discover_shards([str(path)])], promote_options="default")


def _as_trained(table: pa.Table, name: str) -> np.ndarray:
    """A column as prune's statistics see it: float32, counts with nulls as 0."""
    values = table.column(name).cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
    return np.nan_to_num(values, nan=0.0) if name.startswith("4mer_") else values


@pytest.fixture(scope="module")
def pruned(planted: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pruned") / "data"
    manifest = prune(planted, out, label="splice_type", options=PruneOptions(corr_threshold=0.99, sample_rows_per_shard=1000))
    return out, manifest


def test_planted_columns_are_dropped_for_their_reason(pruned: tuple[Path, dict]) -> None:
    _, manifest = pruned
    dropped = manifest["dropped"]
    assert dropped["const_seven"] == {"reason": "constant", "statistic": {"value": 7.0}}
    assert dropped["4mer_never"]["reason"] == "constant"
    assert dropped["copy_of_donor_score"] == {"reason": "duplicate", "statistic": {"of": "donor_score"}}
    assert dropped["scaled_donor_score"]["reason"] == "correlated"
    assert dropped["scaled_donor_score"]["statistic"]["with"] == "donor_score"
    for name in ("same_within_shard", "seven_or_null", "only_in_first_shard", "donor_score"):
        assert name in manifest["kept"], name


def test_dropped_and_kept_columns_are_exactly_what_the_data_says(planted: Path, pruned: tuple[Path, dict]) -> None:
    _, manifest = pruned
    table = _full_table(planted)
    for name, info in manifest["dropped"].items():
        values = _as_trained(table, name)
        if info["reason"] == "constant":
            assert np.unique(values).size == 1, name
        elif info["reason"] == "duplicate":
            np.testing.assert_array_equal(values, _as_trained(table, info["statistic"]["of"]))
        else:
            other = _as_trained(table, info["statistic"]["with"])
            both = ~np.isnan(values) & ~np.isnan(other)
            assert abs(np.corrcoef(values[both], other[both])[0, 1]) > 0.98, name
    kept = np.column_stack([_as_trained(table, name) for name in manifest["kept"]])
    filled = np.where(np.isnan(kept), np.nanmean(kept, axis=0), kept)
    assert all(np.unique(kept[:, j][~np.isnan(kept[:, j])]).size > 1 or np.isnan(kept[:, j]).any() for j in range(kept.shape[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(filled, rowvar=False)
    np.fill_diagonal(correlation, 0)
    assert np.nanmax(np.abs(correlation)) < 0.995  # the sample's estimate of r decided; the full data agrees
    assert len({filled[:, j].tobytes() for j in range(filled.shape[1])}) == filled.shape[1]


def test_output_keeps_rows_values_and_metadata(planted: Path, pruned: tuple[Path, dict]) -> None:
    out, manifest = pruned
    assert manifest["rows_in"] == manifest["rows_out"] == 3000
    original, result = _full_table(planted), _full_table(out)
    assert result.num_rows == 3000
    for name in ("gene_id", "sequence", "gene_type", "splice_type", "donor_score", "seven_or_null"):
        assert result.column(name).equals(original.column(name)), name
    assert not set(manifest["dropped"]) & set(result.column_names)
    trained = extmem.train(out, preset="splice-sites", rounds=3)
    assert trained.report["features"] == len(manifest["kept"])
    kmers = [name for name in manifest["kept"] if name.startswith("4mer_")]

    def block_of(path: Path) -> object:
        source = select_dataset(extmem.Dataset(path, preset="splice-sites", features=kmers))
        return all_rows(source).X

    assert (block_of(out) != block_of(planted)).nnz == 0


def test_wide_layout_output_keeps_original_types(planted: Path, tmp_path: Path) -> None:
    manifest = prune(planted, tmp_path / "wide", label="splice_type", output_format="wide", options=PruneOptions(sample_rows_per_shard=500))
    original, result = _full_table(planted), _full_table(tmp_path / "wide")
    for name in manifest["kept"][:50]:
        assert result.column(name).equals(original.column(name)), name
    assert "kmer_indices" not in result.column_names


@pytest.mark.slow
def test_killed_prune_leaves_the_previous_result(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prune(planted, out, label="splice_type", options=PruneOptions(sample_rows_per_shard=500))
    before = json.loads((out / MANIFEST_FILE).read_text())
    command = [
        sys.executable,
        "-m",
        "extmem",
        "prune",
        str(planted),
        str(out),
        "--corr-threshold",
        "0.5",
        "--batch-rows",
        "50",
        "--row-group-rows",  # input row groups larger than an output one are read in batches, not whole: the writing lasts
        "50",
        "--overwrite",
        "--no-progress",
    ]
    kill_while_staging(command, tmp_path, ".out.extmem-staging-")
    assert json.loads((out / MANIFEST_FILE).read_text()) == before
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet")) == 3000
    rerun = subprocess.run(command, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "correlated" in rerun.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert json.loads((out / MANIFEST_FILE).read_text())["parameters"]["corr_threshold"] == 0.5


def test_prune_refuses_a_folder_it_did_not_write(planted: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(extmem.OptionError, match="exists and is not empty"):
        prune(planted, tmp_path / "mine", label="splice_type")
    with pytest.raises(extmem.OptionError, match="holds 'notes.txt', which extmem did not write there"):
        prune(planted, tmp_path / "mine", label="splice_type", overwrite=True)
    assert [path.name for path in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    with pytest.raises(extmem.OptionError, match="'corr_threshold' option must be in"):
        PruneOptions(corr_threshold=1.5)


def test_statistics_merge_exactly_across_batches() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(loc=1e6, scale=3.0, size=(1000, 3)).astype(np.float32)
    values[rng.random((1000, 3)) < 0.1] = np.nan
    stats = ColumnStats(3)
    for start in range(0, 1000, 77):
        stats.update(values[start : start + 77])
    wide = values.astype(np.float64)
    np.testing.assert_allclose(stats.mean, np.nanmean(wide, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.variance, np.nanvar(wide, axis=0), rtol=1e-9)
    np.testing.assert_array_equal(stats.present, (~np.isnan(values)).sum(axis=0))
    np.testing.assert_array_equal(stats.minimum, np.nanmin(wide, axis=0))


def test_pruning_every_feature_away_is_refused_before_writing(tmp_path: Path) -> None:
    """Constant columns only: prune wrote a dataset without features, which the next train refused; now nothing is written."""
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"a": [1.0] * 50, "b": [2.0] * 50, "y": [0, 1] * 25}), tmp_path / "data" / "a.parquet")
    with pytest.raises(extmem.SchemaError, match=r"would drop every one of its 2 feature columns \(2 constant\): nothing would be left"):
        extmem.prune(tmp_path / "data", tmp_path / "pruned", label="y")
    assert not (tmp_path / "pruned").exists()


def test_keep_columns_pass_through_unpruned(tmp_path: Path) -> None:
    """A constant weight and a coordinate correlated with another were dropped, and a later run needing them failed; --keep
    leaves such columns as they are (names or globs), and names an unknown one before any work."""
    rng = np.random.default_rng(0)
    rows = 2_000
    columns = {"x": rng.normal(size=rows), "w": np.ones(rows), "start": np.arange(rows) * 10.0, "end": np.arange(rows) * 10.0 + 5}
    pq.write_table(pa.table({**columns, "y": rng.integers(0, 2, rows)}), tmp_path / "a.parquet")
    plain = prune(tmp_path / "a.parquet", tmp_path / "plain", label="y")
    assert set(plain["dropped"]) == {"w", "end"}
    assert main(["prune", str(tmp_path / "a.parquet"), str(tmp_path / "kept"), "--label", "y", "--keep", "w,en*", "--format", "wide"]) == 0
    manifest = json.loads((tmp_path / "kept" / MANIFEST_FILE).read_text())
    assert manifest["dropped"] == {} and manifest["parameters"]["keep"] == ["w", "en*"]
    assert pq.read_table(tmp_path / "kept").select(["w", "end"]).equals(pa.table(columns).select(["w", "end"]))
    extmem.train(tmp_path / "kept", label="y", weight="w", rounds=1)
    with pytest.raises(extmem.SchemaError, match="The 'keep' column 'wt' is in none of the shards"):
        prune(tmp_path / "a.parquet", tmp_path / "none", label="y", keep="wt")
    assert not (tmp_path / "none").exists()
