"""Ways to train on a parquet dataset, each measured in its own process by `bench.worker`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PARAMS = {
    "tree_method": "hist",
    "objective": "multi:softprob",
    "num_class": 3,
    "eta": 0.1,
    "max_depth": 6,
    "seed": 0,
    "eval_metric": "mlogloss",
}


def run_extmem(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem.train`` with default settings, or with ``options`` (train keywords; ``hash_kmers``: N hashed k-mer features)."""
    import extmem

    options = dict(options)
    if "hash_kmers" in options:
        options["kmers"] = extmem.KmerEncoding(width=options.pop("hash_kmers"))
    report = extmem.train(data, preset="splice-sites", rounds=rounds, params={"eval_metric": "mlogloss"}, **options).report
    return {
        "rows": report["rows"],
        "features": report["features"],
        "mlogloss": report["metrics"]["train"]["mlogloss"],
        "cache_bytes": report["cache_bytes"],
        "plan": report["memory_plan"]["train"],
        "stage_seconds": {stage: measured["seconds"] for stage, measured in report["stages"].items()},
        "build_seconds": report["data"]["train"]["seconds"],
    }


def run_extmem_sklearn(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem.XGBClassifier(...).fit(extmem.Dataset(data))``: the scikit-learn-style drop-in."""
    import extmem
    from extmem.diagnostics import schema_of

    clf = extmem.XGBClassifier(n_estimators=rounds, max_depth=6, learning_rate=0.1, eval_metric="mlogloss", random_state=0, **options)
    dataset = extmem.Dataset(data, preset="splice-sites")
    clf.fit(dataset, eval_set=[dataset], verbose=False)
    rows = schema_of(data).rows
    return {"rows": rows, "features": clf.n_features_in_, "mlogloss": clf.evals_result()["validation_0"]["mlogloss"][-1]}


def run_extmem_incremental(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem.train_incremental`` (``options``: its keywords, e.g. ``model``, ``epochs``, ``valid_fraction``); ``rounds`` is unused."""
    import extmem

    report = extmem.train_incremental(data, preset="splice-sites", **options).report
    evaluated = next(iter(report["evaluation"].values()))
    return {
        "rows": report["rows"],
        "features": report["features"],
        "macro_f1": evaluated["macro_f1"],
        "evaluated_on": next(iter(report["evaluation"])),
        "cache_bytes": report["cache_bytes"],
    }


def run_extmem_cluster(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem.train_distributed`` on a new local Dask cluster (``options["scheduler"]``, default ``local:2``); per-worker peaks."""
    import extmem

    report = extmem.train_distributed(options.get("scheduler", "local:2"), data, preset="splice-sites", rounds=rounds).report
    workers = report["details"]["workers"]
    return {
        "rows": report["rows"],
        "features": report["features"],
        "mlogloss": report["metrics"]["train"]["mlogloss"],
        "workers": workers,
        "worker_peak_rss_bytes": max(worker["peak_rss_bytes"] for worker in workers),
        "worker_peak_anon_bytes": max(worker["peak_anon_bytes"] for worker in workers),
    }


def run_extmem_prune(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem prune`` of the dataset into ``options["out"]`` (removed afterwards); ``rounds`` is unused."""
    import shutil

    import extmem

    manifest = extmem.prune(data, options["out"], label="splice_type")
    shutil.rmtree(options["out"])
    return {"rows": manifest["rows_out"], "features": len(manifest["kept"]), "dropped": len(manifest["dropped"])}


def run_extmem_kmers(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem train`` with a k-mer encoding (``options["kmers"]``, None for the k-mer columns as they are) and ``options["valid"]``."""
    import extmem

    encoding = extmem.KmerEncoding(**options["kmers"]) if options.get("kmers") else None
    report = extmem.train(data, preset="splice-sites", rounds=rounds, valid=options["valid"], kmers=encoding).report
    valid = report["evaluation"]["valid"]
    return {"rows": report["rows"], "features": report["features"], "mlogloss": valid["mlogloss"], "macro_f1": valid["macro_f1"]}


def run_extmem_predict(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """extmem's streaming prediction into a parquet file (``options``: ``model`` folder, ``out`` file); ``rounds`` is unused."""
    import extmem

    report = extmem.predict(options["model"], data, options["out"], keep=["gene_id"], overwrite=True)
    return {"rows": report["rows"], "features": len(extmem.Model.load(options["model"]).layout.names)}


def run_extmem_explain(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem explain`` into a folder (``options``: ``model`` folder, ``out`` folder, ``memory_budget``); ``rounds`` is unused."""
    import extmem

    report = extmem.explain(
        options["model"], data, options["out"], keep=["gene_id"], memory_budget=options.get("memory_budget"), overwrite=True
    )
    return {
        "rows": report["rows"],
        "features": len(extmem.Model.load(options["model"]).layout.names),
        "batch_rows": report["memory_plan"]["batch_rows"],
    }


def run_data_path(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """One pass from parquet to the CSR pages XGBoost receives (``options["mode"]``), timed on its own.

    ``raw``: pyarrow's decode of the same columns, nothing else; ``blocks``: extmem's source and
    blocks stages; ``spool``: a replay of pages spooled on a first (untimed) pass; ``dmatrix``:
    the whole build of the external-memory DMatrix (every pass XGBoost makes, cache written),
    with ``options["prefetch"]`` pages read ahead.
    """
    import time

    import pyarrow.parquet as pq

    import extmem
    from extmem import diagnostics

    selection = diagnostics.selection_of(data, preset="splice-sites")
    mode = options["mode"]
    started = time.perf_counter()
    rows = stored = 0
    if mode == "raw":
        for shard in selection.schema.shards:
            with pq.ParquetFile(shard) as file:
                present = set(file.schema_arrow.names)
                block = selection.schema.packed_blocks.get(shard)
                columns = [name for name in selection.layout.names if name in present] + ([block.indices, block.values] if block else [])
                rows += sum(batch.num_rows for batch in file.iter_batches(batch_size=2048, columns=columns))
    elif mode == "dmatrix":
        matrix = extmem.dmatrix(data, preset="splice-sites", cache="disk", prefetch=options["prefetch"])
        stats = diagnostics.matrix_stats(matrix)
        rows, stored = stats.rows, stats.stored_values
        diagnostics.free_matrix(matrix)
    elif mode == "blocks":
        for page in diagnostics.stream_pages(data, preset="splice-sites"):
            rows, stored = rows + page.rows, stored + page.stored_values
    else:
        with diagnostics.spooled_pages(data, preset="splice-sites") as replay:
            started = time.perf_counter()
            for page in replay():
                rows, stored = rows + page.rows, stored + page.stored_values
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "features": len(selection.layout.names),
        "stored_values": stored,
        "pass_seconds": seconds,
        "rows_per_second": rows / seconds,
    }


def _shards_and_features(data: str) -> tuple[list[str], list[str]]:
    """The shards of ``data`` and the union of their numeric columns other than the label, in first-seen order."""
    from extmem.diagnostics import NUMERIC, schema_of

    union = schema_of(data)
    return union.shards, [c.name for c in union.columns.values() if c.kind == NUMERIC and c.name != "splice_type"]


def _class_ids(labels: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    import extmem

    return pc.index_in(labels, value_set=pa.array(list(extmem.SPLICE_SITES.label_map or {}))).to_numpy().astype(np.float32)


def _batches(items: list[Any], batch: Callable[[Any], dict[str, Any]], cache: str) -> Any:
    """An ``xgb.DataIter`` over ``items`` in order, each made into one batch's keywords (``data``, ``label``, ...) by ``batch``."""
    import xgboost as xgb

    class Batches(xgb.DataIter):
        def __init__(self) -> None:
            self._position = 0
            super().__init__(cache_prefix=cache)

        def next(self, input_data: Callable[..., None]) -> bool:
            if self._position == len(items):
                return False
            input_data(**batch(items[self._position]))
            self._position += 1
            return True

        def reset(self) -> None:
            self._position = 0

    return Batches()


def _train_xgboost(matrix: Any, rounds: int) -> float:
    """Train on ``matrix`` with the shared parameters; the last round's training mlogloss."""
    import xgboost as xgb

    history: dict[str, Any] = {}
    xgb.train(PARAMS, matrix, rounds, evals=[(matrix, "train")], evals_result=history, verbose_eval=False)
    return float(history["train"]["mlogloss"][-1])


def _shard_csr(table: Any, features: list[str]) -> Any:
    """One table's (or record batch's) feature columns as float32 CSR (absent columns and zeros not stored), column by column."""
    import scipy.sparse as sp

    rows, columns, values = [], [], []
    present = set(table.column_names)
    for position, name in enumerate(features):
        if name not in present:
            continue
        array = table.column(name).to_numpy(zero_copy_only=False).astype(np.float32)
        kept = np.flatnonzero(np.nan_to_num(array, nan=0.0))
        rows.append(kept)
        columns.append(np.full(kept.size, position, dtype=np.int32))
        values.append(array[kept])
    return sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(table.num_rows, len(features)), dtype=np.float32
    )


def _read_all_csr(data: str, batch_rows: int | None = None) -> tuple[Any, np.ndarray, list[str]]:
    """Every shard read (whole, or in ``batch_rows``-row batches) and made CSR, then stacked: the sparse in-memory baselines' data."""
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    shards, features = _shards_and_features(data)
    wanted = set(features) | {"splice_type"}
    blocks, labels = [], []

    def parts(file: Any, columns: list[str]) -> Any:
        if batch_rows is None:
            yield file.read(columns=columns)
        else:
            yield from file.iter_batches(batch_size=batch_rows, columns=columns)

    for shard in shards:
        file = pq.ParquetFile(shard)
        for part in parts(file, [name for name in file.schema_arrow.names if name in wanted]):
            blocks.append(_shard_csr(part, features))
            labels.append(_class_ids(part.column("splice_type")))
            del part  # one shard's table at a time
    return sp.vstack(blocks, format="csr"), np.concatenate(labels), features


def run_inmemory(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """What most users do: read every shard, make one dense numpy matrix, QuantileDMatrix, train."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    shards, features = _shards_and_features(data)
    tables = [pq.read_table(shard) for shard in shards]
    table = pa.concat_tables(tables, promote_options="permissive")
    del tables
    X = np.column_stack([table.column(name).to_numpy().astype(np.float32) for name in features])
    labels = _class_ids(table.column("splice_type"))
    del table
    matrix = xgb.QuantileDMatrix(X, labels, feature_names=features)
    return {"rows": int(X.shape[0]), "features": len(features), "mlogloss": _train_xgboost(matrix, rounds)}


def run_inmemory_csr(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """What a skilled user does with sparse k-mers: every shard into one scipy CSR matrix, QuantileDMatrix, train."""
    import xgboost as xgb

    X, labels, features = _read_all_csr(data)
    matrix = xgb.QuantileDMatrix(X, labels, feature_names=features)
    return {"rows": int(X.shape[0]), "features": len(features), "mlogloss": _train_xgboost(matrix, rounds)}


def run_batched_csr(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """The strongest in-RAM baseline, a skilled user's: every shard read in 8,192-row batches into one float32 CSR
    (zeros not stored), ``QuantileDMatrix``, ``xgb.train``; seconds of each step apart (build plus rounds: XGBoost's own compute)."""
    import time

    import xgboost as xgb

    started = time.perf_counter()
    X, labels, features = _read_all_csr(data, batch_rows=8192)
    read = time.perf_counter() - started
    matrix = xgb.QuantileDMatrix(X, labels, feature_names=features)
    build = time.perf_counter() - started - read
    mlogloss = _train_xgboost(matrix, rounds)
    train = time.perf_counter() - started - read - build
    stages = {"read": round(read, 3), "build": round(build, 3), "train": round(train, 3)}
    return {"rows": int(X.shape[0]), "features": len(features), "mlogloss": mlogloss, "stage_seconds": stages}


def run_xgboost_extmem(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """XGBoost's own external memory with nothing of extmem's: the batched-CSR baseline's matrix, already in RAM, fed to
    ``ExtMemQuantileDMatrix`` in pages of ``options["page_rows"]`` rows (default 65,536, extmem's unbudgeted pages) with its
    cache on disk, then ``xgb.train``; build plus rounds is the engine's own cost of ``--cache disk``, read not timed."""
    import tempfile
    import time

    import xgboost as xgb

    X, labels, features = _read_all_csr(data, batch_rows=8192)
    page_rows = int(options.get("page_rows", 65_536))
    pages = [(X[start : start + page_rows], labels[start : start + page_rows]) for start in range(0, X.shape[0], page_rows)]
    rows = int(X.shape[0])
    del X

    with tempfile.TemporaryDirectory(prefix="xgboost-extmem-") as folder:
        started = time.perf_counter()
        iterator = _batches(pages, lambda page: {"data": page[0], "label": page[1], "feature_names": features}, str(Path(folder) / "cache"))
        matrix = xgb.ExtMemQuantileDMatrix(iterator)
        build = time.perf_counter() - started
        mlogloss = _train_xgboost(matrix, rounds)
        train = time.perf_counter() - started - build
        del matrix  # its cache files go before their folder
    stages = {"build": round(build, 3), "train": round(train, 3)}
    return {"rows": rows, "features": len(features), "mlogloss": mlogloss, "stage_seconds": stages}


def run_lightgbm(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """The tool a user would pick instead: the same CSR matrix into ``lightgbm.Dataset``, 63 leaves (about depth 6)."""
    import lightgbm as lgb

    X, labels, features = _read_all_csr(data)
    params = {"objective": "multiclass", "num_class": 3, "learning_rate": 0.1, "num_leaves": 63, "seed": 0, "verbose": -1}
    train_set = lgb.Dataset(X, labels, free_raw_data=True)
    history: dict[str, Any] = {}
    lgb.train(params, train_set, rounds, valid_sets=[train_set], valid_names=["train"], callbacks=[lgb.record_evaluation(history)])
    return {"rows": int(X.shape[0]), "features": len(features), "mlogloss": float(history["train"]["multi_logloss"][-1])}


def run_polars(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """The original pipeline's way: ``pl.scan_parquet(..., missing_columns="insert")``, collect, numpy, QuantileDMatrix."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    shards, features = _shards_and_features(data)
    # Without a schema, polars takes the first shard's columns and drops k-mers only later shards have.
    union = pa.unify_schemas([pq.read_schema(shard) for shard in shards], promote_options="permissive")
    schema = pl.from_arrow(union.empty_table()).schema
    frame = pl.scan_parquet(shards, schema=schema, missing_columns="insert", extra_columns="ignore").collect()
    X = frame.select(features).to_numpy().astype(np.float32)
    labels = _class_ids(pa.array(frame.get_column("splice_type").to_list()))
    del frame
    matrix = xgb.QuantileDMatrix(X, labels, feature_names=features)
    return {"rows": int(X.shape[0]), "features": len(features), "mlogloss": _train_xgboost(matrix, rounds)}


def run_naive_iter(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """XGBoost's documented ``DataIter`` pattern: each shard read whole as dense numpy, into ``ExtMemQuantileDMatrix``."""
    import tempfile

    import pyarrow.parquet as pq
    import xgboost as xgb

    shards, features = _shards_and_features(data)

    def shard_batch(shard: str) -> dict[str, Any]:
        table = pq.read_table(shard)
        present = set(table.column_names)
        X = np.column_stack(
            [
                table.column(n).to_numpy().astype(np.float32) if n in present else np.full(table.num_rows, np.nan, np.float32)
                for n in features
            ]
        )
        return {"data": X, "label": _class_ids(table.column("splice_type")), "feature_names": features}

    with tempfile.TemporaryDirectory() as cache:
        matrix = xgb.ExtMemQuantileDMatrix(_batches(shards, shard_batch, str(Path(cache) / "naive")))
        rows = matrix.num_row()
        mlogloss = _train_xgboost(matrix, rounds)
        del matrix
    return {"rows": rows, "features": len(features), "mlogloss": mlogloss}


METHODS: dict[str, Callable[[str, int, dict[str, Any]], dict[str, Any]]] = {
    "extmem": run_extmem,
    "extmem-predict": run_extmem_predict,
    "extmem-explain": run_extmem_explain,
    "extmem-sklearn": run_extmem_sklearn,
    "extmem-prune": run_extmem_prune,
    "extmem-incremental": run_extmem_incremental,
    "extmem-cluster": run_extmem_cluster,
    "extmem-kmers": run_extmem_kmers,
    "inmemory": run_inmemory,
    "inmemory-csr": run_inmemory_csr,
    "batched-csr": run_batched_csr,
    "xgboost-extmem": run_xgboost_extmem,
    "lightgbm": run_lightgbm,
    "polars": run_polars,
    "naive-iter": run_naive_iter,
    "data-path": run_data_path,
}
