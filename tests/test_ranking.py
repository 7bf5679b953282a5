"""Learning to rank: query groups (``qid``) kept whole through batches and pages, XGBoost's ranking, metrics and refusals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
import xgboost as xgb
from conftest import all_rows, write_shard
from hypothesis import given, settings
from hypothesis import strategies as st

import extmem
from extmem._contracts import Block
from extmem.cli import main
from extmem.diagnostics import schema_of
from extmem.encode._pages import concat_blocks, page_blocks
from extmem.read._queries import query_ranges
from extmem.read._selection import select_dataset
from extmem.run._datasets import training_datasets
from extmem.score import _ranking as ranking_module
from extmem.score._ranking import RankingMetrics

FEATURES = 6


def _ranking_rows(rows: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, relevance labels 0..4 and sorted query ids."""
    rng = np.random.default_rng(seed)
    qid = np.sort(rng.integers(0, queries, rows))
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    relevance = np.clip(np.round(X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.7, size=rows)) + 1, 0, 4).astype(np.int64)
    return X, relevance, qid


def _write(
    folder: Path, X: np.ndarray, relevance: np.ndarray, qid: np.ndarray, cuts: list[int], row_group_size: int = 700, **more: np.ndarray
) -> Path:
    """Shards split at ``cuts`` (inside queries, mostly), in row groups that split queries too; ``more``: other columns."""
    bounds = [0, *cuts, len(qid)]
    for i, (start, stop) in enumerate(itertools.pairwise(bounds)):
        columns = {"query": qid[start:stop], "rel": relevance[start:stop], **{f"f{j}": X[start:stop, j] for j in range(FEATURES)}}
        columns |= {name: values[start:stop] for name, values in more.items()}
        write_shard(folder / f"part-{i}.parquet", columns, row_group_size=row_group_size)
    return folder


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    X, relevance, qid = _ranking_rows(12_000, 900)
    return _write(tmp_path_factory.mktemp("ranked") / "data", X, relevance, qid, [4_001, 7_999]), X, relevance, qid


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=8),
    queries=st.integers(1, 40),
    page_rows=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_pages_end_only_where_a_query_ends(sizes: list[int], queries: int, page_rows: int, seed: int) -> None:
    """Whatever the blocks and page size: the rows come through in order, no query is on two pages, and a page grows past
    ``page_rows`` only by the query it ends with."""
    rng = np.random.default_rng(seed)
    rows = sum(sizes)
    qid = np.sort(rng.integers(0, queries, rows))
    X = sp.random(rows, 3, density=0.5, format="csr", random_state=seed, dtype=np.float32)
    bounds = np.cumsum([0, *sizes])
    blocks = [Block(X[a:b], qid[a:b].astype(np.float32), None, qid[a:b]) for a, b in itertools.pairwise(bounds)]
    pages = [concat_blocks(page) for page in page_blocks(blocks, page_rows)]
    assert np.array_equal(np.concatenate([page.qid for page in pages]), qid)
    assert (sp.vstack([page.X for page in pages]) != X).nnz == 0
    assert all(before.qid[-1] != after.qid[0] for before, after in itertools.pairwise(pages))
    assert all(page.rows - np.count_nonzero(page.qid == page.qid[-1]) < page_rows for page in pages)


@pytest.mark.parametrize(("cache", "page_rows"), [("disk", 1_000), ("memory", 450), ("disk", None)])
def test_ranking_equals_xgboosts_in_memory_ranking(ranked: tuple, cache: str, page_rows: int | None, cache_root: Path) -> None:
    """Queries cut by shards, row groups and pages train the model XGBoost trains on the whole matrix in RAM (a query cut by
    a page would be two queries to XGBoost)."""
    folder, X, relevance, qid = ranked
    result = extmem.train(folder, label="rel", qid="query", rounds=6, cache=cache, page_rows=page_rows, cache_dir=cache_root)
    assert result.report["params"]["objective"] == "rank:ndcg"
    assert result.report["data"]["train"]["pages"] > (1 if page_rows else 0)
    log: dict[str, dict[str, list[float]]] = {}
    matrix = xgb.QuantileDMatrix(X, relevance, qid=qid)
    booster = xgb.train(result.report["params"], matrix, 6, evals=[(matrix, "train")], evals_result=log, verbose_eval=False)
    np.testing.assert_array_equal(result.report["history"]["train"]["ndcg@32"], log["train"]["ndcg@32"])
    evaluation = result.report["evaluation"]["train"]
    assert evaluation["queries"] == len(np.unique(qid)) and evaluation["ndcg@32"] == pytest.approx(log["train"]["ndcg@32"][-1], abs=1e-6)
    np.testing.assert_allclose(result.model.inplace_predict(X), booster.inplace_predict(X), rtol=1e-6)


@pytest.mark.parametrize(("cache", "page_rows"), [("disk", 20_000), ("memory", 20_000), ("disk", 1_000)])
def test_query_weights_train_and_score_as_xgboosts_group_weights(
    ranked: tuple, tmp_path: Path, cache: str, page_rows: int, cache_root: Path
) -> None:
    """A weight column constant within each query is XGBoost's per-query weight. On one page: XGBoost's model on the arrays.
    On many: XGBoost merges weighted sketches page by page (its own iterator's cuts differ from its arrays' too), and the
    weighted metrics still equal XGBoost's for the model trained."""
    _, X, relevance, qid = ranked
    queries, sizes = np.unique(qid, return_counts=True)
    query_weight = np.random.default_rng(1).uniform(0.2, 3.0, queries.size).round(2)
    folder = _write(tmp_path / "weighted", X, relevance, qid, [4_001, 7_999], w=np.repeat(query_weight, sizes))
    result = extmem.train(folder, label="rel", qid="query", weight="w", rounds=6, cache=cache, page_rows=page_rows, cache_dir=cache_root)
    matrix = xgb.QuantileDMatrix(X, relevance, qid=qid, weight=query_weight, feature_names=[f"f{j}" for j in range(FEATURES)])
    rows = xgb.DMatrix(X, relevance, qid=qid, weight=query_weight, feature_names=[f"f{j}" for j in range(FEATURES)])
    theirs = float(result.model.eval(rows).split("ndcg@32:")[1].split()[0])  # XGBoost's weighted NDCG of the model trained
    assert result.report["history"]["train"]["ndcg@32"][-1] == pytest.approx(theirs, abs=1e-6)
    assert result.report["evaluation"]["train"]["ndcg@32"] == pytest.approx(theirs, abs=1e-6)
    assert extmem.evaluate(result.model, folder, weight="w")["ndcg@32"] == pytest.approx(theirs, abs=1e-6)
    unweighted = extmem.evaluate(result.model, folder)["ndcg@32"]
    assert unweighted != pytest.approx(theirs, abs=1e-4)  # the weights count
    if page_rows > len(qid):
        log: dict[str, dict[str, list[float]]] = {}
        booster = xgb.train(result.report["params"], matrix, 6, evals=[(matrix, "train")], evals_result=log, verbose_eval=False)
        np.testing.assert_array_equal(result.report["history"]["train"]["ndcg@32"], log["train"]["ndcg@32"])
        np.testing.assert_allclose(result.model.inplace_predict(X), booster.inplace_predict(X), rtol=1e-6)


@pytest.mark.parametrize("metrics", [["ndcg", "ndcg@3", "ndcg@32", "ndcg-", "ndcg@3-"], ["map", "map@3", "map@5-", "map-", "ndcg@5"]])
def test_ranking_metrics_are_xgboosts_over_batches_that_cut_queries(metrics: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    X, relevance, qid = _ranking_rows(5_000, 500, seed=3)
    labels = (relevance > 2).astype(np.float64) if metrics[0] == "map" else relevance.astype(np.float64)
    labels[qid % 17 == 0] = 0  # queries without a relevant row: 1, or 0 with the trailing '-'
    matrix = xgb.DMatrix(X, labels, qid=qid)
    booster = xgb.train({"objective": "rank:ndcg", "max_depth": 3}, matrix, 4)
    scores = booster.predict(matrix)
    ranking = RankingMetrics([*metrics, "auc"])
    cuts = [0, *sorted(np.random.default_rng(1).choice(len(qid), 40, replace=False)), len(qid)]
    for start, stop in itertools.pairwise(cuts):
        ranking.update(labels[start:stop], scores[start:stop], qid[start:stop])
    result = ranking.result()
    monkeypatch.setattr(ranking_module, "UPDATE_CHUNK_ROWS", 13)  # one call, taken in chunks that cut queries too
    chunked = RankingMetrics(metrics)
    chunked.update(labels, scores, qid)
    assert chunked.result() == pytest.approx({k: v for k, v in result.items() if k != "auc"}, abs=1e-12)
    assert "auc" not in result and result["queries"] == len(np.unique(qid)) and result["rows"] == len(qid)
    for name in metrics:
        alone = xgb.Booster(model_file=booster.save_raw())  # eval metrics add up on one booster
        alone.set_param({"eval_metric": name})
        assert result[name] == pytest.approx(float(alone.eval(matrix).split(":")[1]), abs=1e-9), name


def test_text_query_ids_rank_as_their_integer_numbers(ranked: tuple, tmp_path: Path, cache_root: Path) -> None:
    """Query ids as text (session ids, sorted) are numbered query by query, across batches and shards: the same model as the
    integers; text that goes down is refused naming the values."""
    folder, X, relevance, qid = ranked
    text = np.array([f"q{number:05d}" for number in qid])
    _write(tmp_path / "text", X, relevance, text, [4_001, 7_999])  # type: ignore[arg-type]
    options = {"label": "rel", "qid": "query", "rounds": 4, "page_rows": 1_000, "cache": "disk", "cache_dir": cache_root}
    assert extmem.train(tmp_path / "text", **options).report["history"] == extmem.train(folder, **options).report["history"]
    order = np.r_[np.arange(6_000, 12_000), np.arange(6_000)]
    _write(tmp_path / "down", X[order], relevance[order], text[order], [6_000])  # type: ignore[arg-type]
    with pytest.raises(extmem.LabelError, match=r"goes down from 'q\d+' to 'q\d+' in row group 0 of '.*part-1.parquet'"):
        extmem.train(tmp_path / "down", **options)


def test_kept_encoded_rows_replay_whole_queries(ranked: tuple, tmp_path: Path) -> None:
    """Pages that end with a whole query run past the page size; the rows kept with them are still found and replayed."""
    folder, *_ = ranked
    runs = [
        extmem.train(folder, label="rel", qid="query", rounds=3, page_rows=1_000, encoded_cache=tmp_path / "rows").report for _ in range(2)
    ]
    assert [run["data"]["train"]["reused_encoded_rows"] for run in runs] == [False, True]
    assert runs[0]["history"] == runs[1]["history"]


def test_holdout_and_folds_keep_each_query_on_one_side(ranked: tuple, tmp_path: Path) -> None:
    """valid_fraction and cross-validation split by query without being told: no query is both trained on and validated."""
    folder, *_ = ranked
    training, validation = training_datasets(folder, "rel", {"qid": "query"}, None, 0.25, None, 0, queries=True)
    assert validation is not None
    sides = [set(np.unique(all_rows(select_dataset(dataset)).qid)) for dataset in (training, validation)]
    assert not sides[0] & sides[1] and len(sides[0]) + len(sides[1]) == 900 and 150 < len(sides[1]) < 300
    result = extmem.train(folder, label="rel", qid="query", rounds=3, valid_fraction=0.25, out=tmp_path / "m")
    assert result.report["config"]["data"]["holdout"]["group_by"] == "query"
    assert result.report["evaluation"]["valid"]["queries"] == len(sides[1])
    folds = extmem.cross_validate(folder, label="rel", qid="query", folds=3, rounds=2)
    assert sum(fold["valid_rows"] for fold in folds["per_fold"]) == 12_000
    assert "ndcg@32" in folds["metrics"] and folds["group_by"] == "query"


def test_evaluate_uses_the_models_query_column(ranked: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, *_ = ranked
    argv = ["train", str(folder), "--preset", "none", "--label", "rel", "--qid", "query", "--rounds", "4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert main(["evaluate", str(tmp_path / "m"), str(folder), "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    assert "ndcg@32" in capsys.readouterr().out
    evaluation = json.loads((tmp_path / "e.json").read_text())
    assert evaluation["ndcg@32"] == pytest.approx(report["evaluation"]["train"]["ndcg@32"], abs=1e-6)
    assert evaluation["queries"] == report["evaluation"]["train"]["queries"]


def test_ranking_refusals_name_the_option(ranked: tuple, tmp_path: Path) -> None:
    folder, X, relevance, qid = ranked
    with pytest.raises(extmem.OptionError, match="name the query-id column with 'qid'"):
        extmem.train(folder, label="rel", params={"objective": "rank:pairwise"}, rounds=2)
    with pytest.raises(extmem.OptionError, match="'qid' option gives query groups to ranking objectives"):
        extmem.train(folder, label="rel", qid="query", params={"objective": "reg:squarederror"}, rounds=2)
    with pytest.raises(
        extmem.OptionError, match="'qid' option gives a ranking model's query groups; this model's objective is 'multi:softprob'"
    ):
        extmem.evaluate(extmem.train(folder, label="rel", rounds=1).model, folder, qid="query")
    with pytest.raises(extmem.LabelError, match=r"'weight' column 'rel' gives the rows of query 0 \(of 'query'\) the weights"):
        extmem.train(folder, label="f0", qid="query", weight="rel", rounds=2, params={"objective": "rank:pairwise"})
    with pytest.raises(
        extmem.OptionError, match=r"Query groups \('qid'\) are for XGBoost's ranking objectives; the incremental trainer takes none"
    ):
        extmem.train_incremental(folder, label="rel", qid="query", epochs=1)
    with pytest.raises(extmem.OptionError, match="rank:map.*takes labels of 0 or 1"):
        extmem.train(folder, label="rel", qid="query", params={"objective": "rank:map"}, rounds=2)
    with pytest.raises(extmem.SchemaError, match="'qid' column 'f1' must hold integers"):
        extmem.train(folder, label="rel", qid="f1", rounds=2)
    shuffled = tmp_path / "shuffled"
    order = np.r_[np.arange(6_000, 12_000), np.arange(6_000)]  # the second shard's queries come first
    _write(shuffled, X[order], relevance[order], qid[order], [6_000])
    with pytest.raises(extmem.LabelError, match=r"goes down from \d+ to \d+ in row group 0 of '.*part-1.parquet'"):
        extmem.train(shuffled, label="rel", qid="query", rounds=2)
    nulls = tmp_path / "nulls" / "a.parquet"
    write_shard(nulls, {"query": pa.array([1, None, 2]), "rel": [0, 1, 2], "f0": [0.1, 0.2, 0.3]})
    with pytest.raises(extmem.LabelError, match="'qid' column 'query' has 1 null"):
        extmem.train(nulls.parent, label="rel", qid="query", rounds=2)


def test_xgbranker_fits_a_dataset_as_xgboosts_fits_the_arrays(ranked: tuple, cache_root: Path) -> None:
    """extmem.XGBRanker on a dataset with a qid column gives XGBoost's XGBRanker on the same arrays; arrays still go to XGBoost."""
    folder, X, relevance, qid = ranked
    dataset = extmem.Dataset(folder, label="rel", qid="query")
    ours = extmem.XGBRanker(n_estimators=5, max_depth=4, page_rows=1_000, cache="disk", cache_dir=cache_root, eval_metric="ndcg@10")
    ours.fit(dataset, eval_set=[dataset])
    theirs = xgb.XGBRanker(n_estimators=5, max_depth=4, eval_metric="ndcg@10").fit(
        X, relevance, qid=qid, eval_set=[(X, relevance)], eval_qid=[qid]
    )
    np.testing.assert_array_equal(ours.evals_result()["validation_0"]["ndcg@10"], theirs.evals_result()["validation_0"]["ndcg@10"])
    np.testing.assert_allclose(ours.predict(dataset), theirs.predict(X), rtol=1e-6)
    assert ours.score(dataset) == pytest.approx(extmem.evaluate(extmem.Model(ours.get_booster(), ours.layout), dataset)["ndcg@32"])
    arrays = extmem.XGBRanker(n_estimators=5, max_depth=4).fit(X, relevance, qid=qid)
    np.testing.assert_allclose(arrays.predict(X), xgb.XGBRanker(n_estimators=5, max_depth=4).fit(X, relevance, qid=qid).predict(X))
    with pytest.raises(extmem.OptionError, match="query groups come from its 'qid' column: pass qid as None"):
        extmem.XGBRanker().fit(dataset, qid=qid)
    with pytest.raises(extmem.OptionError, match="needs its query-id column"):
        extmem.XGBRanker().fit(extmem.Dataset(folder, label="rel"))


def test_an_in_memory_eval_set_of_a_dataset_ranker_takes_its_query_column(ranked: tuple, cache_root: Path) -> None:
    """A DataFrame eval set with the dataset's query column (or XGBoost's 'qid') scores as the dataset does; it lost its
    query ids and features' names before."""
    pandas = pytest.importorskip("pandas")
    folder, X, relevance, qid = ranked
    dataset = extmem.Dataset(folder, label="rel", qid="query")
    frame = pandas.DataFrame({"query": qid, **{f"f{j}": X[:, j] for j in range(FEATURES)}})
    ranker = extmem.XGBRanker(n_estimators=4, max_depth=4, cache_dir=cache_root, eval_metric="ndcg@10")
    ranker.fit(dataset, eval_set=[dataset, (frame, relevance), (frame.rename(columns={"query": "qid"}), relevance)])
    logs = [ranker.evals_result()[f"validation_{i}"]["ndcg@10"] for i in range(3)]
    np.testing.assert_allclose(logs[1], logs[0], rtol=1e-9)
    np.testing.assert_allclose(logs[2], logs[0], rtol=1e-9)
    with pytest.raises(extmem.OptionError, match="needs its query ids: a column 'query'"):
        ranker.fit(dataset, eval_set=[(frame.drop(columns="query"), relevance)])


def test_query_ranges_come_from_the_query_column_whatever_comes_before_it(tmp_path: Path) -> None:
    """A struct column before the query ids holds two parquet columns: the footer's statistics are looked up by the column's
    path, not by its arrow position (which named the struct's second field's statistics)."""
    write_shard(tmp_path / "a.parquet", {"s": pa.array([{"u": 100, "v": 200}] * 3), "query": [5, 6, 7], "rel": [0, 1, 2]}, row_group_size=2)
    write_shard(tmp_path / "b.parquet", {"s": pa.array([{"u": 1, "v": 2}] * 2), "query": [9, 12], "rel": [1, 0]})
    assert query_ranges(schema_of(str(tmp_path)), "query") == [(5, 7), (9, 12)]
