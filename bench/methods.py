"""Ways to train on a parquet dataset, each measured in its own process by `bench.worker`."""

from __future__ import annotations

from collections.abc import Callable
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
    """extmem's external-memory path with default settings."""
    import extmem

    report = extmem.train(data, rounds=rounds, params={"eval_metric": "mlogloss"}, **options).report
    return {
        "rows": report["rows"],
        "features": report["features"],
        "mlogloss": report["metrics"]["train"]["mlogloss"],
        "cache_bytes": report["cache_bytes"],
        "plan": report["memory_plan"]["train"],
    }


def run_extmem_sklearn(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem.XGBClassifier(...).fit(extmem.Dataset(data))``: the scikit-learn-style drop-in."""
    import extmem
    from extmem.schema import discover_shards, union_schema

    clf = extmem.XGBClassifier(n_estimators=rounds, max_depth=6, learning_rate=0.1, eval_metric="mlogloss", random_state=0, **options)
    clf.fit(extmem.Dataset(data), eval_set=[extmem.Dataset(data)], verbose=False)
    rows = union_schema(discover_shards([data])).rows
    return {"rows": rows, "features": clf.n_features_in_, "mlogloss": clf.evals_result()["validation_0"]["mlogloss"][-1]}


def run_extmem_prune(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem prune`` of the dataset into ``options["out"]`` (removed afterwards); ``rounds`` is unused."""
    import shutil

    from extmem.prune import prune

    manifest = prune(data, options["out"])
    shutil.rmtree(options["out"])
    return {"rows": manifest["rows_out"], "features": len(manifest["kept"]), "dropped": len(manifest["dropped"])}


def run_extmem_kmers(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """``extmem train`` with a k-mer encoding (``options["kmers"]``, None for the k-mer columns as they are) and ``options["valid"]``."""
    import extmem

    encoding = extmem.KmerEncoding(**options["kmers"]) if options.get("kmers") else None
    report = extmem.train(data, rounds=rounds, valid=options["valid"], kmers=encoding).report
    valid = report["evaluation"]["valid"]
    return {"rows": report["rows"], "features": report["features"], "mlogloss": valid["mlogloss"], "macro_f1": valid["macro_f1"]}


def run_extmem_predict(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """extmem's streaming prediction into a parquet file (``options``: ``model`` folder, ``out`` file); ``rounds`` is unused."""
    import extmem

    report = extmem.predict(options["model"], data, options["out"], keep=["gene_id"])
    return {"rows": report["rows"], "features": len(extmem.Model.load(options["model"]).layout.names)}


def run_data_path(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """One pass from parquet to the CSR pages XGBoost receives (``options["mode"]``), timed on its own.

    ``raw``: pyarrow's decode of the same columns, nothing else; ``blocks``: extmem's source and
    blocks stages; ``spool``: a replay of pages spooled on a first (untimed) pass; ``dmatrix``:
    the whole build of the external-memory DMatrix (every pass XGBoost makes, cache written),
    with ``options["prefetch"]`` pages read ahead.
    """
    import tempfile
    import time
    from pathlib import Path

    import pyarrow.parquet as pq

    import extmem
    from extmem.blocks import pages
    from extmem.source import Source
    from extmem.spool import PageSpool

    source = Source(extmem.Dataset(data))
    mode = options["mode"]
    started = time.perf_counter()
    rows = stored = 0
    if mode == "raw":
        for shard in source.schema.shards:
            with pq.ParquetFile(shard) as file:
                present = set(file.schema_arrow.names)
                block = source.schema.packed_blocks.get(shard)
                columns = [name for name in source.layout.names if name in present] + ([block.indices, block.values] if block else [])
                rows += sum(batch.num_rows for batch in file.iter_batches(batch_size=2048, columns=columns))
    elif mode == "dmatrix":
        from extmem.matrix import free_matrix, matrix_info

        matrix = extmem.dmatrix(data, cache="disk", prefetch=options["prefetch"])
        stats = matrix_info(matrix).stats
        rows, stored = stats.rows, stats.stored_values
        free_matrix(matrix)
    elif mode == "blocks":
        for page in pages(source.batches(), source.layout, 8192):
            rows, stored = rows + page.rows, stored + page.stored_values
    else:
        with tempfile.TemporaryDirectory() as folder:
            spool = PageSpool(Path(folder) / "spool")
            for _ in spool.record(pages(source.batches(), source.layout, 8192)):
                pass
            started = time.perf_counter()
            for page in spool.replay(len(source.layout.names)):
                rows, stored = rows + page.rows, stored + page.stored_values
            spool.clear()
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "features": len(source.layout.names),
        "stored_values": stored,
        "pass_seconds": seconds,
        "rows_per_second": rows / seconds,
    }


def run_inmemory(data: str, rounds: int, options: dict[str, Any]) -> dict[str, Any]:
    """What most users do: read every shard, make one dense numpy matrix, QuantileDMatrix, train."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import xgboost as xgb

    import extmem
    from extmem.schema import NUMERIC, discover_shards, union_schema

    union = union_schema(discover_shards([data]))
    features = [c.name for c in union.columns.values() if c.kind == NUMERIC and c.name != "splice_type"]
    tables = [pq.read_table(shard) for shard in union.shards]
    table = pa.concat_tables(tables, promote_options="permissive")
    del tables
    X = np.column_stack([table.column(name).to_numpy().astype(np.float32) for name in features])
    labels = pc.index_in(table.column("splice_type"), value_set=pa.array(list(extmem.SPLICE_LABELS))).to_numpy()
    del table
    matrix = xgb.QuantileDMatrix(X, labels, feature_names=features)
    history: dict[str, Any] = {}
    xgb.train(PARAMS, matrix, rounds, evals=[(matrix, "train")], evals_result=history, verbose_eval=False)
    return {"rows": int(X.shape[0]), "features": len(features), "mlogloss": history["train"]["mlogloss"][-1]}


METHODS: dict[str, Callable[[str, int, dict[str, Any]], dict[str, Any]]] = {
    "extmem": run_extmem,
    "extmem-predict": run_extmem_predict,
    "extmem-sklearn": run_extmem_sklearn,
    "extmem-prune": run_extmem_prune,
    "extmem-kmers": run_extmem_kmers,
    "inmemory": run_inmemory,
    "data-path": run_data_path,
}
