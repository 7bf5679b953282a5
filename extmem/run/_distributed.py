"""Distributed training on a Dask cluster: every worker streams its own shards into its own external-memory cache.

The client reads only parquet footers: it fixes the feature layout, assigns whole shards to
workers balanced by rows and starts XGBoost's tracker. Each worker then opens its shards
with that layout, builds an ``ExtMemQuantileDMatrix`` in a private cache folder on its own
disk and trains inside XGBoost's collective communicator, so quantile sketches, histograms
and metrics are reduced across workers and every worker holds the same trees. Rank 0's
booster comes back to the client. Cache folders live and die on the workers; after a
failure, stale ones (their owner process gone) are swept on every worker.

Needs the ``dask`` extra: ``pip install 'extmem[dask]'``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from extmem._defaults import BOOSTER_MODEL_FILE, DEFAULT_SKETCH_ROWS
from extmem._folders import PrivateFolder, sweep_stale
from extmem._layout import LAYOUT_ATTRIBUTE, FeatureLayout
from extmem._measure import MemoryMonitor
from extmem.errors import ExtmemError, OptionError
from extmem.read._dataset import Dataset, DatasetLike, takes_dataset_options
from extmem.read._queries import shards_sharing_queries
from extmem.read._scan import Schema
from extmem.read._selection import Selection, select_dataset
from extmem.read._storage import absolute
from extmem.run._callbacks import EarlyStop, History
from extmem.run._collective import failure_reason, stop_tracker, tracker_host
from extmem.run._datasets import query_column, training_datasets
from extmem.run._params import infer_objective, merged_params
from extmem.run._skeleton import TrainingRun, TrainResult
from extmem.run._stopping import EarlyStopping
from extmem.xgb._build import MatrixOptions
from extmem.xgb._matrix import free_matrix, open_matrix

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger("extmem")


class ClusterError(ExtmemError):
    """Distributed training failed on a worker (killed, out of memory, or an error in its shards)."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        msg = "Distributed training needs dask: pip install 'extmem[dask]'."
        raise OptionError(msg) from None
    return distributed


def connect(scheduler: str | Client) -> tuple[Client, ExitStack]:
    """A client for ``scheduler``: a ``distributed.Client``, a scheduler address, or ``local:N`` (a new local cluster of N worker processes).

    The returned stack closes what was opened here (never a client passed in).
    """
    distributed = _import_distributed()
    stack = ExitStack()
    if isinstance(scheduler, distributed.Client):
        return scheduler, stack
    if scheduler.startswith("local:"):
        count = scheduler.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            msg = f"The 'scheduler' local:N needs a positive number of workers; got {scheduler!r}."
            raise OptionError(msg, options=("scheduler",))
        workers = int(count)
        import dask

        # a worker that dies is not given the task again: the other workers could not rejoin its collective anyway
        stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": 0}))
        cluster = stack.enter_context(
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=max(1, (os.cpu_count() or 1) // workers), processes=True, dashboard_address=":0"
            )
        )
        return stack.enter_context(distributed.Client(cluster)), stack
    try:
        return stack.enter_context(distributed.Client(scheduler, timeout=30)), stack
    except OSError as exc:
        msg = f"Cannot reach the Dask 'scheduler' {scheduler!r}: {exc}"
        raise OptionError(msg, options=("scheduler",)) from None


def assign_shards(shards: Sequence[str], rows: Sequence[int], workers: int, together: Sequence[Sequence[int]] = ()) -> list[list[str]]:
    """Whole shards per worker, largest first to the worker with the fewest rows so far (balanced by rows).

    Workers beyond the number of shards get none. Each worker's shards keep their dataset order. ``together``: runs of
    shards (indices) that go to one worker as a unit (a ranking dataset's shards that share a query).
    """
    grouped = {index for run in together for index in run}
    units = [list(run) for run in together] + [[index] for index in range(len(shards)) if index not in grouped]
    loads = [0] * workers
    assigned: list[list[int]] = [[] for _ in range(workers)]
    for unit in sorted(units, key=lambda unit: -sum(rows[i] for i in unit)):
        worker = min(range(workers), key=lambda w: (loads[w], w))
        assigned[worker].extend(unit)
        loads[worker] += sum(rows[i] for i in unit)
    return [[shards[i] for i in sorted(indices)] for indices in assigned if indices]


@dataclass(frozen=True)
class _WorkerTask:
    """What one worker trains on and with."""

    rank: int
    train: Dataset
    valid: Dataset | None
    layout: FeatureLayout
    params: dict[str, Any]
    rounds: int
    early_stopping_rounds: int | None
    options: MatrixOptions
    cache_dir: str | None
    comm_args: dict[str, Any] = field(default_factory=dict)
    """XGBoost's communicator arguments, set once the tracker runs."""


def _worker_tasks(
    selection: Selection,
    valid: Dataset | None,
    workers: int,
    params: dict[str, Any],
    rounds: int,
    early_stopping_rounds: int | None,
    options: MatrixOptions,
    cache_dir: str | os.PathLike[str] | None,
) -> list[_WorkerTask]:
    """One task per worker that gets shards (absolute paths: the workers' working folders may differ).

    Every worker must make the same collective calls, so whether cuts come from a sample
    follows the whole dataset's rows, and each worker samples its share of ``sketch_rows`` in
    proportion to its rows (a planned sample is not possible: the workers must agree before
    reading, so ``sketch_rows`` defaults to ``DEFAULT_SKETCH_ROWS`` here). ``valid`` shards are assigned like the training shards; a
    ``valid_fraction`` split is applied by each worker to its own shards.
    """
    dataset, schema = selection.dataset, selection.schema
    rows_of = {absolute(shard): rows for shard, rows in zip(schema.shards, schema.shard_rows)}
    shares = assign_shards(list(rows_of), list(rows_of.values()), workers, _query_runs(schema, dataset.qid))
    valid_shares: list[list[str]] = []
    if valid is not None and valid.holdout is None:
        valid_schema = select_dataset(valid, layout=selection.layout, announce=False).schema
        valid_paths = [absolute(shard) for shard in valid_schema.shards]
        valid_shares = assign_shards(valid_paths, valid_schema.shard_rows, len(shares), _query_runs(valid_schema, valid.qid))
        if len(valid_shares) < len(shares):
            msg = f"The validation data has {len(valid_schema.shards)} shard(s), fewer than the {len(shares)} training workers: every worker needs some."
            raise OptionError(msg)
    total_rows = max(schema.rows, 1)
    tasks = []
    for rank, shards in enumerate(shares):
        worker_rows = sum(rows_of[shard] for shard in shards)
        assert options.sketch_rows is not None
        worker_options = replace(
            options, sketch_rows=max(1, options.sketch_rows * worker_rows // total_rows), sample_cuts=total_rows > options.sketch_rows
        )
        valid_part = None if valid is None else replace(valid, path=valid_shares[rank] if valid_shares else shards)
        tasks.append(
            _WorkerTask(
                rank,
                replace(dataset, path=shards),
                valid_part,
                selection.layout,
                params,
                rounds,
                early_stopping_rounds,
                worker_options,
                os.fspath(cache_dir) if cache_dir is not None else None,
            )
        )
    return tasks


def _agreed_objective(labels: np.ndarray, layout: FeatureLayout, params: Mapping[str, Any]) -> dict[str, Any]:
    """The objective inferred from every worker's labels: their minimum, maximum and integrality are all-reduced."""
    local = np.array([-labels.min(initial=np.inf), labels.max(initial=-np.inf), float(np.any(labels != np.round(labels)))])
    reduced = xgb.collective.allreduce(local, xgb.collective.Op.MAX)
    return infer_objective(layout, float(-reduced[0]), float(reduced[1]), bool(reduced[2]), params)


def _sweep_caches(root: str | None) -> list[str]:
    """Runs on every worker after a failure: remove cache folders whose owner process is gone."""
    return [str(path) for path in sweep_stale(root if root is not None else tempfile.gettempdir())]


def _train_on_worker(task: _WorkerTask) -> dict[str, Any]:
    """Runs on a Dask worker: build this worker's matrices inside the communicator and train."""
    from distributed import get_worker

    worker = get_worker()
    with MemoryMonitor() as monitor, xgb.collective.CommunicatorContext(**task.comm_args), ExitStack() as stack:
        dtrain, info = open_matrix(task.train, stack.enter_context(PrivateFolder(task.cache_dir)), task.options, layout=task.layout)
        stack.callback(free_matrix, dtrain)
        evals = [(dtrain, "train")]
        if task.valid is not None:
            dvalid, _ = open_matrix(
                task.valid, stack.enter_context(PrivateFolder(task.cache_dir)), task.options, layout=task.layout, ref=dtrain
            )
            stack.callback(free_matrix, dvalid)
            evals.append((dvalid, "valid"))
        params = {**task.params, "nthread": worker.state.nthreads}
        params.update(_agreed_objective(dtrain.get_label(), task.layout, params))
        history = History()
        callbacks: list[xgb.callback.TrainingCallback] = [history]
        if task.early_stopping_rounds is not None:  # metrics are all-reduced, so every worker stops at the same round
            metric = str(np.atleast_1d(params["eval_metric"])[0])
            callbacks.append(EarlyStop(history, EarlyStopping(task.early_stopping_rounds, metric), "valid"))
        booster = xgb.train(params, dtrain, task.rounds, evals=evals, verbose_eval=False, callbacks=callbacks)
        cache_bytes = info.cache.size_bytes()
        rank = xgb.collective.get_rank()
        model = bytes(booster.save_raw()) if rank == 0 else None
    return {
        "rank": rank,
        "worker": worker.address,
        "shards": len(info.selection.schema.shards),
        "rows": info.stats.rows,
        "cuts_from_rows": info.stats.cuts_from_rows,
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
        "cache_bytes": cache_bytes,
        "seconds": round(monitor.seconds, 3),
        "build_seconds": info.stats.timings(),
        "params": params,
        "history": history.log,
        "booster": model,
    }


@takes_dataset_options()
def train_distributed(
    scheduler: str | Client,
    data: DatasetLike,
    label: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    rounds: int = 100,
    params: Mapping[str, Any] | None = None,
    valid: DatasetLike | None = None,
    valid_fraction: float | None = None,
    group_by: str | None = None,
    early_stopping_rounds: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    page_rows: int | None = None,
    sketch_rows: int | None = None,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> TrainResult:
    """Train on a Dask cluster, each worker streaming its share of the shards through its own external-memory cache.

    ``scheduler`` is a ``distributed.Client``, a scheduler address or ``local:N``. Shards are
    assigned whole to workers, balanced by rows (from the parquet footers); ``valid`` shards
    are assigned the same way and ``valid_fraction`` splits every worker's rows as in
    :func:`extmem.train`; ``early_stopping_rounds`` keeps the best round's trees, as there.
    ``cache_dir`` and ``memory_budget`` apply on each worker (the cache is
    always on disk there). A dask DataFrame trains the same way once written to parquet
    (``frame.to_parquet(folder)``). Returns a :class:`extmem.TrainResult` with rank 0's booster; with ``out``, writes
    ``model.ubj`` and ``report.json`` there, as ``extmem train`` does (``overwrite`` as there).
    """
    distributed = _import_distributed()
    merged = merged_params(params, methods=("hist",), qid=query_column(data, options))
    dataset, valid_dataset = training_datasets(
        data, label, options, valid, valid_fraction, group_by, int(merged["seed"]), early_stopping_rounds, queries=True
    )
    build = MatrixOptions(
        page_rows,
        merged.get("max_bin"),
        sketch_rows=DEFAULT_SKETCH_ROWS if sketch_rows is None else sketch_rows,
        seed=int(merged["seed"]),
        cache="disk",
        memory_budget=memory_budget,
    )
    run = TrainingRun("distributed", "xgboost", out=out, overwrite=overwrite, cache_dir=cache_dir)
    with run:
        with run.stage("footers and planning"):
            selection = select_dataset(dataset)
        with run.stage("workers"):
            results = _train_on_cluster(
                scheduler, distributed, selection, valid_dataset, merged, rounds, early_stopping_rounds, build, cache_dir
            )
    first = results[0]
    booster = xgb.Booster(model_file=bytearray(first["booster"]))
    layout = selection.layout
    booster.set_attr(**{LAYOUT_ATTRIBUTE: layout.to_json()})
    history = first["history"]
    watched = history.get("valid", {}).get(str(np.atleast_1d(first["params"]["eval_metric"])[0]), [])
    common = {
        "rows": sum(result["rows"] for result in results),
        "features": len(layout.names),
        "classes": layout.classes,
        "params": first["params"],
        "rounds": booster.num_boosted_rounds(),
        "metrics": {name: {metric: float(values[-1]) for metric, values in metrics.items()} for name, metrics in history.items()},
        "history": history,
        "early_stopping": EarlyStopping(early_stopping_rounds, str(np.atleast_1d(first["params"]["eval_metric"])[0])).summary(
            watched, rounds
        )
        if early_stopping_rounds is not None
        else None,
        "cache_bytes": sum(result["cache_bytes"] for result in results),
        "dropped_columns": dict(selection.dropped),
    }
    workers = [{key: value for key, value in result.items() if key not in ("booster", "history", "params")} for result in results]
    details = {
        "workers": workers,
        "worker_peak_rss_bytes": max(result["peak_rss_bytes"] for result in results),
        "worker_peak_anon_bytes": max(result["peak_anon_bytes"] for result in results),
    }
    return run.finish(booster, BOOSTER_MODEL_FILE, lambda: bytes(booster.save_raw("ubj")), common, details)


def _query_runs(schema: Schema, column: str | None) -> list[list[int]]:
    """A ranking dataset's runs of shards that share a query (each run goes to one worker, whose rows stay in order)."""
    return [run for run in shards_sharing_queries(schema, column) if len(run) > 1] if column is not None else []


def _train_on_cluster(
    scheduler: str | Client,
    distributed: Any,
    selection: Selection,
    valid_dataset: Dataset | None,
    params: dict[str, Any],
    rounds: int,
    early_stopping_rounds: int | None,
    build: MatrixOptions,
    cache_dir: str | os.PathLike[str] | None,
) -> list[dict[str, Any]]:
    """Every worker's result, rank first; on a failure, one :class:`ClusterError` after the workers' caches are swept."""
    client, stack = connect(scheduler)
    with stack:
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            msg = "The Dask cluster has no workers."
            raise ClusterError(msg)
        tasks = _worker_tasks(selection, valid_dataset, len(workers), params, rounds, early_stopping_rounds, build, cache_dir)
        tracker = xgb.tracker.RabitTracker(n_workers=len(tasks), host_ip=tracker_host(client), sortby="task")
        tracker.start()
        comm_args = tracker.worker_args()
        futures = [
            client.submit(
                _train_on_worker,
                replace(task, comm_args={**comm_args, "dmlc_task_id": f"{task.rank:06d}"}),  # ranks follow the task ids
                workers=[workers[task.rank]],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
            for task in tasks
        ]
        failed = True
        try:
            for future in distributed.as_completed(futures):
                if future.status == "error":
                    rank = futures.index(future)
                    msg = (
                        f"Distributed training failed on worker {workers[rank]} (rank {rank}): {failure_reason(future.exception())}. "
                        "The workers' cache folders were removed."
                    )
                    raise ClusterError(msg)
            results = sorted(client.gather(futures), key=lambda result: result["rank"])
            tracker.wait_for()
            failed = False
        except BaseException:
            client.cancel(futures)
            swept = client.run(_sweep_caches, os.fspath(cache_dir) if cache_dir is not None else None)
            logger.info("extmem: swept stale cache folders on the workers: %s", swept)
            raise
        finally:
            stop_tracker(tracker, failed=failed)
    return results
