"""The bench scripts run end to end on tiny data (their figures come from full-size runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from bench import budget, compare_inmemory, data_path, hashing, remote, rounds, scaling, suite, xgboost_demo
from bench import explain as explain_bench

pytestmark = pytest.mark.slow  # the fast set: pytest -m "not slow"


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


def test_xgboost_demo_bench_equals_xgboosts_own_run(tmp_path: Path) -> None:
    payload = xgboost_demo.main(["--batches", "6", "--rounds", "3", "--out", str(tmp_path / "demo.json")])
    for method in ("hist", "approx"):
        assert payload["results"][method]["rows"] == 6 * 1024
        assert payload["results"][method]["max_abs_difference"] < 1e-3


def test_rounds_bench_separates_build_and_round_costs(tmp_path: Path) -> None:
    args = ["--rows", "400", "--shards", "2", "--k", "3", "--rounds", "1,4", "--packed", "--reused"]
    payload = rounds.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "rounds.json")])
    assert set(payload["seconds"]) == {"extmem-disk", "batched-csr", "extmem-packed", "xgboost-extmem", "extmem-reused"}
    reused, read = payload["runs"]["extmem-reused"][4][0], payload["runs"]["extmem-disk"][4][0]
    assert reused["build_seconds"]["decode"] == 0 < read["build_seconds"]["decode"]  # the kept rows, not the parquet
    assert reused["mlogloss"] == read["mlogloss"]
    for name, line in payload["fixed_and_per_round"].items():  # the line through the two wall times (their values depend on the load)
        one, four = payload["seconds"][name][1], payload["seconds"][name][4]
        assert line["per_round"] == pytest.approx((four - one) / 3) and line["fixed"] == pytest.approx(one - line["per_round"]), name
    baseline_runs = payload["runs"]["batched-csr"][4]
    assert baseline_runs[0]["rows"] == 400 and set(baseline_runs[0]["stage_seconds"]) == {"read", "build", "train"}
    assert payload["ratio_packed_to_xgboost_compute"][4] > 0
    engine_runs = payload["runs"]["xgboost-extmem"][4]  # XGBoost's own external memory over the baseline's rows
    assert engine_runs[0]["rows"] == 400 and set(engine_runs[0]["stage_seconds"]) == {"build", "train"}
    assert engine_runs[0]["mlogloss"] == pytest.approx(baseline_runs[0]["mlogloss"], rel=0.05)
    assert payload["ratio_packed_to_xgboost_extmem"][4] > 0


def test_rounds_bench_reports_a_failed_method_beside_the_others(tmp_path: Path) -> None:
    args = ["--rows", "400", "--shards", "2", "--k", "3", "--rounds", "2", "--memory-budget", "1MiB"]
    payload = rounds.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "rounds.json")])
    (refused,) = payload["runs"]["extmem-disk"][2]
    assert refused["failed"] and "is too small" in refused["stderr"]
    assert payload["seconds"]["extmem-disk"][2] is None and payload["ratio_to_batched_csr"]["extmem-disk"][2] is None
    assert payload["seconds"]["batched-csr"][2] > 0 and "extmem-disk" not in payload["fixed_and_per_round"]


def test_hashing_bench_runs(tmp_path: Path) -> None:
    args = ["--rows", "600", "--shards", "2", "--valid-rows", "200", "--k", "3", "--rounds", "2"]
    payload = hashing.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "hashing.json")])
    features = {case: summary["features"] for case, summary in payload["median"].items()}
    assert features["hashed columns, 256"] - features["exact columns (4,096)"] == 256 - 4**3
    assert payload["hashing_speed"]["max_difference"] == 0.0


def test_budget_bench_runs(tmp_path: Path) -> None:
    args = ["--rows-per-shard", "300", "--shards", "2", "--throughput-shards", "1", "--k", "3", "--rounds", "2", "--repeats", "1"]
    payload = budget.main([*args, "--budgets", "2", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "budget.json")])
    run = payload["budgets"]["2 GiB"]
    assert not run.get("failed"), run
    assert run["plan"]["budget_bytes"] == 2 * 2**30 and run["peak_data_bytes"] <= 2 * 2**30
    assert payload["too_small"]["failed"] and "is too small:" in payload["too_small"]["message"][0]
    assert set(payload["ratio_to_raw_decode"]) == {"prefetch 0", "prefetch 1"}


def test_suite_runs_every_method_side_by_side_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"  # the runs' scratch folders go here, apart from other processes' in the shared one
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    methods = "inmemory,inmemory-csr,naive-iter,extmem,extmem-disk"
    args = ["--sizes", "300,600", "--shards", "2", "--k", "3", "--rounds", "2", "--methods", methods]
    payload = suite.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    results = payload["results"]
    assert set(results) == set(methods.split(","))
    for method, sizes in results.items():
        assert {rows: s["rows"] for rows, s in sizes.items()} == {300: 300, 600: 600}, method
        assert len({s["features"] for s in sizes.values()}) == 1
    losses = [sizes[600]["mlogloss"] for sizes in results.values()]
    assert max(losses) - min(losses) < 0.2, "every method trains the same task"
    assert set(payload["ratios"]) == {"extmem/inmemory", "extmem/inmemory-csr", "extmem-disk/inmemory", "extmem-disk/inmemory-csr"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["peaks.png", "results.json", "results.md", "rss_over_time.png"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["runs"]["extmem"]["600"][0]["samples"], "RSS over time is kept"
    assert "| extmem-disk | 600 |" in (tmp_path / "out" / "results.md").read_text()
    assert list(scratch.iterdir()) == []


def test_suite_budget_mode_records_failures_without_crashing(tmp_path: Path) -> None:
    args = ["--sizes", "300", "--shards", "1", "--k", "3", "--rounds", "2", "--methods", "inmemory,extmem", "--budget", "64MiB"]
    payload = suite.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    assert payload["budget_bytes"] == 64 * 2**20
    assert all(sizes[300]["failed"] for sizes in payload["results"].values()), "64 MiB cannot even hold the imports"
    assert "failed:" in (tmp_path / "out" / "results.md").read_text()


def test_a_terminated_suite_leaves_no_process_or_scratch_folder(tmp_path: Path) -> None:
    args = ["--sizes", "3000", "--shards", "1", "--k", "3", "--rounds", "5000", "--methods", "extmem-disk"]
    command = [sys.executable, "-m", "bench", "run", *args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    bench = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(scratch)}, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while not (workers and any(scratch.glob("extmem-bench-*/extmem-cache-*"))):
        assert bench.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        workers = psutil.Process(bench.pid).children(recursive=True)
        time.sleep(0.05)
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=60) == 128 + signal.SIGTERM
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
    assert list(scratch.iterdir()) == []


def test_explain_bench_runs_explain_beside_predict(tmp_path: Path) -> None:
    args = ["--rows", "400,800", "--shards", "2", "--k", "3", "--rounds", "3"]
    payload = explain_bench.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "explain.json")])
    for name in ("explain", "predict"):
        assert [runs[0]["rows"] for runs in payload["runs"][name].values()] == [400, 800]
    assert payload["peak_ratio_largest_to_smallest"] > 0 and payload["explain_to_predict_seconds"][800] > 0


def test_remote_bench_compares_the_store_with_local_disk(tmp_path: Path) -> None:
    pytest.importorskip("moto.server")
    args = ["--rows", "600", "--shards", "2", "--k", "3", "--rounds", "2", "--prefetch", "0,1"]
    payload = remote.main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "remote.json")])
    assert payload["same_model_everywhere"] is True
    for prefetch in (0, 1):
        ratio = payload["ratios"][prefetch]
        assert ratio["seconds"] > 0 and 0.5 < ratio["peak_rss"] < 2
        assert ratio["store_bytes_to_projected"] > 0.5
    assert payload["summary"]["s3 prefetch 0"]["store_bytes"] < 3 * payload["shard_bytes"]  # tiny shards: footers and requests dominate
