"""Distributed training on a local Dask cluster: same model as one machine, caches on the workers, clear failures."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import write_shard

import extmem
from extmem.run import _collective
from extmem.run._distributed import ClusterError, assign_shards, train_distributed

pytestmark = pytest.mark.slow  # the fast set: pytest -m "not slow"

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 rows of 4-mer data in 4 shards of unequal size (row groups of 500)."""
    folder = tmp_path_factory.mktemp("cluster_synth")
    extmem.synth(folder, extmem.SynthOptions(rows=6000, shards=4, k=4, seq_len=40, row_group_rows=500, seed=11))
    return folder


def single_machine(data: Path, **options: object) -> extmem.TrainResult:
    """The reference: one process, external memory, cuts from every row (as each worker sketches)."""
    return extmem.train(data, preset="splice-sites", rounds=8, cache="disk", sketch_rows=1 << 40, **options)


def test_assign_shards_balances_rows() -> None:
    shares = assign_shards(["a", "b", "c", "d", "e"], [500, 100, 400, 300, 200], 2)
    loads = sorted(sum({"a": 500, "b": 100, "c": 400, "d": 300, "e": 200}[s] for s in share) for share in shares)
    assert loads == [700, 800]
    assert shares[0] == sorted(shares[0]) and shares[1] == sorted(shares[1])  # dataset order within a worker
    assert assign_shards(["a"], [10], 3) == [["a"]]  # workers without shards sit out
    together = assign_shards(["a", "b", "c", "d", "e"], [500, 100, 400, 300, 200], 2, together=[[1, 2, 3]])  # b, c, d share a query
    assert sorted(together) == [["a", "e"], ["b", "c", "d"]]


def test_exact_cuts_give_the_single_machine_model(client: distributed.Client, shards: Path, cache_root: Path) -> None:
    """With only small-integer k-mer counts, every cut is exact on one machine and on two: then the trees must agree."""
    distributed_result = train_distributed(client, shards, preset="splice-sites", rounds=8, features="4mer_*", cache_dir=cache_root)
    reference = single_machine(shards, features="4mer_*")
    assert distributed_result.report["rows"] == reference.report["rows"] == 6000
    assert [worker["rank"] for worker in distributed_result.report["details"]["workers"]] == [0, 1]
    assert sum(worker["shards"] for worker in distributed_result.report["details"]["workers"]) == 4
    ours, theirs = extmem.Model.from_booster(distributed_result.booster), extmem.Model.from_booster(reference.booster)
    np.testing.assert_allclose(ours.predict_proba(shards), theirs.predict_proba(shards), atol=1e-5)
    np.testing.assert_allclose(
        distributed_result.report["history"]["train"]["mlogloss"], reference.report["history"]["train"]["mlogloss"], rtol=1e-5
    )
    assert list(cache_root.iterdir()) == []


def test_sampled_cuts_take_the_same_path_on_every_worker(client: distributed.Client, shards: Path, cache_root: Path) -> None:
    """Above sketch_rows every worker samples its share, even a worker whose own rows are fewer: no collective call is left unmatched."""
    result = train_distributed(
        client, shards, preset="splice-sites", rounds=4, features="4mer_*", sketch_rows=2500, page_rows=500, cache_dir=cache_root
    )
    assert all(worker["cuts_from_rows"] < worker["rows"] for worker in result.report["details"]["workers"])
    reference = extmem.train(shards, preset="splice-sites", rounds=4, cache="disk", features="4mer_*", sketch_rows=2500)
    np.testing.assert_allclose(
        extmem.Model.from_booster(result.booster).predict_proba(shards),
        extmem.Model.from_booster(reference.booster).predict_proba(shards),
        atol=1e-3,  # small counts: sampled cuts are almost all exact; a rare count left out of one sample moves a bin edge
    )
    assert list(cache_root.iterdir()) == []


def test_sketched_cuts_stay_close_to_the_single_machine_model(client: distributed.Client, shards: Path, tmp_path: Path) -> None:
    """With continuous scores, each worker sketches its own rows and the merged sketch gives slightly different bins.

    Tolerance: training log-loss within 2 %, predicted classes agree on 97 % of rows, mean probability difference below 0.02.
    """
    result = train_distributed(client, shards, preset="splice-sites", rounds=8, out=tmp_path / "model")
    reference = single_machine(shards)
    ours = extmem.Model.load(tmp_path / "model").predict_proba(shards)
    theirs = extmem.Model.from_booster(reference.booster).predict_proba(shards)
    assert result.report["metrics"]["train"]["mlogloss"] == pytest.approx(reference.report["metrics"]["train"]["mlogloss"], rel=0.02)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.97
    assert np.abs(ours - theirs).mean() < 0.02
    workers = result.report["details"]["workers"]
    assert all(worker["cache_bytes"] > 0 and worker["peak_rss_bytes"] > 0 for worker in workers)
    # each worker holds its own shards' pages, never the dataset: far below a dense copy of all rows on top of the runtime
    dense_bytes = result.report["rows"] * result.report["features"] * 4
    assert max(worker["peak_anon_bytes"] for worker in workers) < 1.5 * 2**30 + dense_bytes


def test_validation_split_and_early_stopping(client: distributed.Client, shards: Path) -> None:
    """Each worker splits its own rows by the same hash; the all-reduced metric stops every worker at the same round."""
    result = train_distributed(
        client, shards, preset="splice-sites", rounds=200, valid_fraction=0.25, early_stopping_rounds=3, params={"eta": 0.5}
    )
    reference = extmem.train(
        shards,
        preset="splice-sites",
        rounds=200,
        valid_fraction=0.25,
        early_stopping_rounds=3,
        params={"eta": 0.5},
        cache="disk",
        sketch_rows=1 << 40,
    )
    history = result.report["history"]
    assert set(history) == {"train", "valid"}
    assert result.report["early_stopping"]["best_iteration"] + 1 == result.booster.num_boosted_rounds() < 200
    assert 3000 < result.report["rows"] < 5500  # the training side only
    assert result.report["metrics"]["valid"]["mlogloss"] == pytest.approx(reference.report["metrics"]["valid"]["mlogloss"], rel=0.05)


def test_a_worker_whose_rows_all_weigh_zero_trains_with_the_others(client: distributed.Client, tmp_path: Path, cache_root: Path) -> None:
    """Weights of 0 in every row of one worker's shards are one share of the total, not a dataset without weight."""
    rows = {"x": [float(i) for i in range(40)], "splice_type": ["donor", "neither", "acceptor", "neither"] * 10}
    write_shard(tmp_path / "data" / "a.parquet", {**rows, "w": [0.0] * 40})
    write_shard(tmp_path / "data" / "b.parquet", {**rows, "w": [1.0] * 40})
    result = train_distributed(client, tmp_path / "data", preset="splice-sites", weight="w", rounds=2, cache_dir=cache_root)
    assert result.report["rows"] == 80 and len(result.report["details"]["workers"]) == 2


def test_a_dask_dataframe_is_refused_with_the_way_to_train_on_it(client: distributed.Client, shards: Path) -> None:
    frame = dd.read_parquet(sorted(str(p) for p in shards.glob("*.parquet")))
    with pytest.raises(extmem.OptionError, match=r"write it to parquet first \(frame.to_parquet"):
        train_distributed(client, frame, preset="splice-sites", rounds=2)


def test_killed_worker_fails_clearly_and_leaves_no_cache(shards: Path, tmp_path: Path) -> None:
    big = tmp_path / "big"
    extmem.synth(big, extmem.SynthOptions(rows=20000, shards=4, k=5, row_group_rows=1000, seed=5))
    cache_root = tmp_path / "caches"
    cache_root.mkdir()
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        pids = list(dask_client.run(os.getpid).values())
        outcome: dict[str, BaseException] = {}

        def run() -> None:
            try:
                train_distributed(dask_client, big, preset="splice-sites", rounds=2000, cache_dir=cache_root)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)  # a hang fails the test without keeping pytest alive
        thread.start()
        deadline = time.monotonic() + 120
        while len(list(cache_root.iterdir())) < 2:  # both workers are building their caches
            assert thread.is_alive() and time.monotonic() < deadline, "training ended before the kill"
            time.sleep(0.02)
        os.kill(pids[1], signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, ClusterError), error
    assert "Distributed training failed on worker" in str(error) and "cache folders were removed" in str(error)
    assert list(cache_root.iterdir()) == []


class _StuckTracker:
    """A tracker whose ``free`` blocks until released, as XGBoost's did after a worker was killed mid-build."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.freed = threading.Event()

    def free(self) -> None:
        self.release.wait()
        self.freed.set()


def test_a_tracker_that_does_not_stop_after_a_failure_is_left_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_collective, "TRACKER_STOP_SECONDS", 0.1)
    stuck = _StuckTracker()
    returned = threading.Event()

    def stop_after_failure() -> None:
        _collective.stop_tracker(stuck, failed=True)  # type: ignore[arg-type]
        returned.set()

    threading.Thread(target=stop_after_failure, daemon=True).start()
    assert returned.wait(30) and not stuck.freed.is_set()  # returned while free() still blocks (a regression fails, not hangs)
    stuck.release.set()
    assert stuck.freed.wait(10)
    finished = _StuckTracker()
    threading.Timer(0.2, finished.release.set).start()
    _collective.stop_tracker(finished, failed=False)  # type: ignore[arg-type]
    assert finished.freed.is_set()  # after a success, waited for


def test_cli_scheduler_local(shards: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "extmem", "train", str(shards), "--scheduler", "local:2", "--rounds", "3", "--out", str(tmp_path / "m"),
         "--no-progress"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "on 2 workers" in completed.stdout
    assert (tmp_path / "m" / "model.ubj").is_file()
    refused = subprocess.run(
        [sys.executable, "-m", "extmem", "train", str(shards), "--scheduler", "local:0", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "--scheduler local:N needs a positive number" in refused.stderr
    single_machine = subprocess.run(
        [sys.executable, "-m", "extmem", "train", str(shards), "--scheduler", "local:2", "--checkpoint-every", "2", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert single_machine.returncode == 2 and "--checkpoint-every does not apply to distributed training" in single_machine.stderr
    assert not (tmp_path / "x").exists()


def test_without_dask_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch, shards: Path) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(extmem.OptionError, match=r"pip install 'extmem\[dask\]'"):
        train_distributed("local:2", shards, preset="splice-sites")


def test_ranking_on_workers_gives_the_single_machine_model(client: distributed.Client, tmp_path: Path, cache_root: Path) -> None:
    """Queries whole in each shard (the footers' qid statistics say so) rank on two workers as on one machine (integer
    features: exact cuts); shards that share a query go to one worker together, and rank as on one machine too."""
    rng = np.random.default_rng(5)
    rows = 4_000
    qid = np.sort(rng.integers(0, 400, rows))
    X = rng.integers(0, 8, size=(rows, 3)).astype(np.float64)
    relevance = np.clip(X[:, 0] // 2 + rng.integers(0, 2, rows), 0, 4).astype(np.int64)
    cuts = [0, *(int(np.searchsorted(qid, q)) for q in (100, 200, 300)), rows]  # shards end where queries end
    for i, (start, stop) in enumerate(itertools.pairwise(cuts)):
        columns = {"query": qid[start:stop], "rel": relevance[start:stop], **{f"f{j}": X[start:stop, j] for j in range(3)}}
        write_shard(tmp_path / "ranked" / f"part-{i}.parquet", columns, row_group_size=300)
    options = {"label": "rel", "qid": "query", "rounds": 5}
    ours = train_distributed(client, tmp_path / "ranked", cache_dir=cache_root, **options)
    reference = extmem.train(tmp_path / "ranked", cache="disk", sketch_rows=1 << 40, **options)
    assert ours.report["params"]["objective"] == "rank:ndcg"
    np.testing.assert_allclose(ours.report["history"]["train"]["ndcg@32"], reference.report["history"]["train"]["ndcg@32"], rtol=1e-6)
    np.testing.assert_allclose(ours.booster.inplace_predict(X), reference.booster.inplace_predict(X), rtol=1e-5, atol=1e-6)
    inside = int(np.searchsorted(qid, 250)) + 1  # inside query 250: part-1 and part-2 share it
    cuts = [0, int(np.searchsorted(qid, 120)), inside, int(np.searchsorted(qid, 330)), rows]
    for i, (start, stop) in enumerate(itertools.pairwise(cuts)):
        columns = {"query": qid[start:stop], "rel": relevance[start:stop], **{f"f{j}": X[start:stop, j] for j in range(3)}}
        write_shard(tmp_path / "cut" / f"part-{i}.parquet", columns, row_group_size=300)
    ours = train_distributed(client, tmp_path / "cut", cache_dir=cache_root, **options)
    reference = extmem.train(tmp_path / "cut", cache="disk", sketch_rows=1 << 40, **options)
    np.testing.assert_allclose(ours.report["history"]["train"]["ndcg@32"], reference.report["history"]["train"]["ndcg@32"], rtol=1e-6)
    np.testing.assert_allclose(ours.booster.inplace_predict(X), reference.booster.inplace_predict(X), rtol=1e-5, atol=1e-6)
    part_rows = np.diff(cuts).tolist()
    expected = assign_shards(["0", "1", "2", "3"], part_rows, 2, together=[[1, 2]])
    assert sorted(worker["rows"] for worker in ours.report["details"]["workers"]) == sorted(
        sum(part_rows[int(part)] for part in share) for share in expected
    )
    assert list(cache_root.iterdir()) == []
