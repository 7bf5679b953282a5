"""The bench scripts run end to end on tiny data (their figures come from full-size runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import compare_inmemory, data_path, hashing, scaling


def test_scaling_bench_runs(tmp_path: Path) -> None:
    args = ["--rows-per-shard", "300", "--shards", "1", "--k", "3", "--rounds", "2", "--repeats", "1"]
    payload = scaling.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "scaling.json")])
    assert payload["median"][8]["rows"] == 8 * payload["median"][1]["rows"] == 2400
    assert payload["ratio_peak_rss_8x_over_1x"] > 0
    assert (tmp_path / "scaling.json").exists()


@pytest.mark.parametrize("stage", ["predict", "sklearn", "prune"])
def test_other_stages_scaling_bench_runs(tmp_path: Path, stage: str) -> None:
    args = ["--stage", stage, "--rows-per-shard", "300", "--shards", "1", "--k", "3", "--rounds", "2", "--repeats", "1"]
    payload = scaling.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "scaling.json")])
    assert payload["median"][8]["rows"] == 8 * payload["median"][1]["rows"] == 2400
    assert not (tmp_path / "scaling.parquet").exists()


def test_compare_inmemory_bench_runs(tmp_path: Path) -> None:
    args = ["--rows", "600", "--shards", "2", "--k", "3", "--rounds", "2", "--repeats", "1"]
    payload = compare_inmemory.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "compare.json")])
    extmem_run, inmemory_run = payload["median"]["extmem"], payload["median"]["inmemory"]
    assert extmem_run["rows"] == inmemory_run["rows"] == 600
    assert extmem_run["features"] == inmemory_run["features"]
    assert abs(extmem_run["mlogloss"] - inmemory_run["mlogloss"]) < 0.2


def test_data_path_bench_runs(tmp_path: Path) -> None:
    args = ["--rows-per-shard", "300", "--shards", "1", "--k", "3", "--rounds", "2"]
    payload = data_path.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "data_path.json")])
    assert {case["rows"] for case in payload["data_path"].values()} == {300}
    assert payload["train"]["packed 8x"]["rows"] == 2400
    assert payload["train"]["packed 1x"]["mlogloss"] == payload["train"]["wide 1x"]["mlogloss"]


def test_hashing_bench_runs(tmp_path: Path) -> None:
    args = ["--rows", "600", "--shards", "2", "--valid-rows", "200", "--k", "3", "--rounds", "2"]
    payload = hashing.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "hashing.json")])
    features = {case: summary["features"] for case, summary in payload["median"].items()}
    assert features["hashed columns, 256"] - features["exact columns (4,096)"] == 256 - 4**3
    assert payload["hashing_speed"]["max_difference"] == 0.0
