from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import extmem
from extmem.read._reader import read_batches
from extmem.read._selection import select_dataset


def _rows(path: Path, holdout: extmem.Holdout | None, batch_rows: int = 2048, **options: object) -> list[tuple[str, int]]:
    """(gene_id, position) of every row a holdout side reads."""
    source = select_dataset(extmem.Dataset(path, holdout=holdout, batch_rows=batch_rows, **options), carry=("gene_id", "position"))
    rows: list[tuple[str, int]] = []
    for batch in read_batches(source, batch_rows):
        assert batch.carried is not None
        rows.extend(zip(batch.carried.column("gene_id").to_pylist(), batch.carried.column("position").to_pylist()))
    return rows


@pytest.mark.parametrize("group_by", [None, "gene_id"])
def test_sides_partition_the_rows(small_synth: Path, group_by: str | None) -> None:
    holdout = extmem.Holdout(0.25, group_by=group_by, seed=3)
    train = _rows(small_synth, holdout)
    valid = _rows(small_synth, extmem.Holdout(0.25, group_by=group_by, seed=3, side="valid"))
    everything = _rows(small_synth, None)
    assert sorted(train + valid) == sorted(everything)
    assert 0.15 < len(valid) / len(everything) < 0.35
    if group_by:
        assert not {gene for gene, _ in train} & {gene for gene, _ in valid}


@pytest.mark.parametrize("group_by", [None, "gene_id"])
def test_split_does_not_depend_on_batch_size_or_filter(small_synth: Path, group_by: str | None) -> None:
    holdout = extmem.Holdout(0.3, group_by=group_by, side="valid")
    reference = _rows(small_synth, holdout, batch_rows=2048)
    assert _rows(small_synth, holdout, batch_rows=97) == reference
    filtered = _rows(small_synth, holdout, batch_rows=113, filter="chrom == 'chr2'")
    assert filtered and set(filtered) <= set(reference)
    assert _rows(small_synth, extmem.Holdout(0.3, group_by=group_by, side="valid", seed=1)) != reference


def test_group_values_split_the_same_whatever_their_integer_or_float_type() -> None:
    from extmem.read._holdout import holdout_mask

    holdout = extmem.Holdout(0.5, group_by="g", side="valid")
    ints = pa.record_batch({"g": pa.array(range(200), pa.int64())})
    floats = pa.record_batch({"g": pa.array([float(i) for i in range(200)], pa.float64())})
    assert holdout_mask(holdout, ints, "a.parquet", 0, 0).tolist() == holdout_mask(holdout, floats, "b.parquet", 3, 0).tolist()


def test_training_with_a_group_holdout(small_synth: Path) -> None:
    result = extmem.train(small_synth, preset="splice-sites", rounds=5, valid_fraction=0.2, group_by="gene_id", early_stopping_rounds=3)
    train_rows, valid_rows = result.report["rows"], result.report["data"]["valid"]["rows"]
    assert train_rows + valid_rows == 3000 and 0.1 < valid_rows / 3000 < 0.3
    assert result.report["config"]["data"]["holdout"] == {"fraction": 0.2, "group_by": "gene_id", "seed": 0, "side": "train", "start": 0.0}
    per_class = {f"{metric}_{name}" for metric in ("roc_auc", "pr_auc") for name in ("neither", "donor", "acceptor")}
    assert set(result.report["history"]["valid"]) == {"mlogloss", "merror", "macro_f1", "accuracy", *per_class}
    assert set(result.report["history"]["train"]) == {"mlogloss", "merror"}
    assert len({len(values) for values in result.report["history"]["valid"].values()}) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"valid_fraction": 1.5}, extmem.OptionError, "'valid_fraction' option must be a number between 0 and 1"),
        ({"valid_fraction": 0.2, "valid": "x"}, extmem.OptionError, "either 'valid' or 'valid_fraction'"),
        ({"group_by": "gene_id"}, extmem.OptionError, "'group_by' option needs 'valid_fraction'"),
        ({"valid_fraction": 0.2, "group_by": "nope"}, extmem.SchemaError, "'group_by' column 'nope'"),
    ],
)
def test_bad_holdout_options(small_synth: Path, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        extmem.train(small_synth, preset="splice-sites", rounds=2, **kwargs)
