"""Cross-validation out of core: folds that partition the rows (or the groups), each fold one external-memory run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import extmem
from extmem.read._dataset import Holdout
from extmem.read._holdout import holdout_mask


@pytest.mark.parametrize("group_by", [None, "gene_id"])
def test_folds_partition_the_rows_and_keep_each_group_on_one_side(small_synth: Path, group_by: str | None) -> None:
    """Every row is validated in exactly one fold (the last fold ends at 1, whatever the rounding); a gene never straddles."""
    folds = 3
    table = pq.read_table(small_synth / "batch_00001.parquet", columns=["gene_id"])
    batch = table.combine_chunks().to_batches()[0]
    sides = []
    for fold in range(folds):
        holdout = Holdout((fold + 1) / folds - fold / folds, group_by, 7, side="valid", start=fold / folds)
        sides.append(holdout_mask(holdout, batch, "batch_00001.parquet", 0, 0))
    assert (np.sum(sides, axis=0) == 1).all() and all(side.any() for side in sides)
    if group_by is not None:
        genes = np.array(table["gene_id"].to_pylist())
        for side in sides:
            assert not set(genes[side]) & set(genes[~side])


def test_cross_validation_reports_each_fold_and_the_mean_over_folds(small_synth: Path) -> None:
    result = extmem.cross_validate(small_synth, preset="splice-sites", folds=3, rounds=4, group_by="gene_id", params={"max_depth": 3})
    per_fold = result["per_fold"]
    assert len(per_fold) == 3 and sum(fold["valid_rows"] for fold in per_fold) == 3000
    assert all(fold["train_rows"] + fold["valid_rows"] == 3000 for fold in per_fold)
    logloss = result["history"]["mlogloss"]
    assert len(logloss["mean"]) == 4 and logloss["mean"][-1] < logloss["mean"][0]
    finals = [fold["metrics"]["mlogloss"] for fold in per_fold]
    assert result["metrics"]["mlogloss"]["mean"] == pytest.approx(np.mean(finals))
    assert result["metrics"]["mlogloss"]["std"] == pytest.approx(np.std(finals))
    with pytest.raises(extmem.OptionError, match="The 'folds' option must be an integer from 2 to 100"):
        extmem.cross_validate(small_synth, preset="splice-sites", folds=1)


def test_cv_on_the_command_line_writes_its_results(small_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from extmem.cli._main import main

    argv = ["cv", str(small_synth), "--folds", "2", "--rounds", "3", "--group-by", "gene_id", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "cv.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 folds by 'gene_id' (validation rows ") and "valid: mlogloss " in printed
    assert json.loads((tmp_path / "cv.json").read_text())["folds"] == 2
    assert main([*argv, "--out", str(tmp_path / "cv.json")]) == 2 and "already exists" in capsys.readouterr().err
    assert main([*argv, "--encoded-cache", str(tmp_path / "enc")]) == 2 and not (tmp_path / "enc").exists()


def test_more_folds_than_groups_is_one_line_about_folds(tmp_path: Path) -> None:
    from conftest import write_shard

    data = write_shard(tmp_path / "data" / "a.parquet", {"x": list(range(60)), "g": ["a", "b", "c"] * 20, "y": [0, 1] * 30}).parent
    with pytest.raises(extmem.NoRowsError, match=r"Fold \d of 5 of '.*data' has no validation rows: too few groups of 'g' for 5 folds"):
        extmem.cross_validate(data, label="y", folds=5, group_by="g", rounds=2)


def test_a_metric_a_fold_lacks_is_left_out_of_its_mean() -> None:
    """An AUC a fold cannot have (no positives among its validation rows) is None there: the spread is over the other folds."""
    from extmem.run._cv import _summary

    def report(auc: float | None, losses: list[float]) -> dict:
        valid = {"logloss": losses[-1], "auc": auc}
        return {
            "history": {"valid": {"logloss": losses, "auc": [auc] * len(losses)}},
            "metrics": {"valid": valid},
            "data": {"train": {"rows": 8}, "valid": {"rows": 2}},
            "early_stopping": None,
        }

    summary = _summary([report(None, [0.7, 0.5]), report(0.8, [0.6, 0.4, 0.3])], None, 0)
    assert summary["metrics"]["auc"] == {"mean": 0.8, "std": 0.0}
    assert summary["history"]["logloss"]["mean"] == pytest.approx([0.65, 0.45]) and summary["history"]["auc"]["mean"] == [0.8, 0.8]
