"""XGBoost's own external-memory demo (``demo/guide-python/external_memory.py``) at a larger size, through extmem.

    python -m bench.xgboost_demo [--scale 32 | --batches N] [--rounds 10] [--out FILE]

The demo's workload: batches of 1,024 rows x 17 features from ``make_regression`` (31 batches,
times ``--scale``), trained with ``hist`` on an ``ExtMemQuantileDMatrix`` and with ``approx`` on a
paged ``DMatrix``, 10 rounds, depth 4. Each is run twice on the same arrays: XGBoost's own
iterator over the arrays, and extmem over the same batches written as parquet shards, with only
the matrix line changed (``extmem.ExtMemQuantileDMatrix(folder, label="y", ...)`` and
``extmem.DMatrix(folder, label="y", ...)``). Prints and writes (bench/results/xgboost_demo.json)
the maximum absolute difference of the predictions and each side's seconds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb
from sklearn.datasets import make_regression

import extmem

from .harness import RESULTS, write_json

BATCH_ROWS, FEATURES, BATCHES = 1024, 17, 31


class ArrayIter(xgb.DataIter):
    """The demo's iterator: one saved batch per step."""

    def __init__(self, files: list[tuple[Path, Path]], cache: str) -> None:
        self._files = files
        self._at = 0
        super().__init__(cache_prefix=os.path.join(cache, "cache"))

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._at == len(self._files):
            return False
        X_path, y_path = self._files[self._at]
        input_data(data=np.load(X_path), label=np.load(y_path))
        self._at += 1
        return True

    def reset(self) -> None:
        self._at = 0


def make_batches(n_batches: int, work: Path) -> tuple[list[tuple[Path, Path]], Path]:
    """The demo's batches as .npy pairs, and the same rows as parquet shards (columns f0..f16 and y)."""
    rng = np.random.RandomState(1994)
    files, shards = [], work / "shards"
    shards.mkdir()
    for i in range(n_batches):
        X, y = make_regression(BATCH_ROWS, FEATURES, random_state=rng)
        np.save(work / f"X-{i}.npy", X)
        np.save(work / f"y-{i}.npy", y)
        files.append((work / f"X-{i}.npy", work / f"y-{i}.npy"))
        pq.write_table(pa.table({f"f{j}": X[:, j] for j in range(FEATURES)} | {"y": y}), shards / f"batch_{i:05d}.parquet")
    return files, shards


def train_and_predict(matrix: xgb.DMatrix, method: str, rounds: int) -> np.ndarray:
    booster = xgb.train(
        {"tree_method": method, "max_depth": 4}, matrix, num_boost_round=rounds, evals=[(matrix, "Train")], verbose_eval=False
    )
    return booster.predict(matrix)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=32, help="the demo's 31 batches times this")
    parser.add_argument("--batches", type=int, help="this many batches instead (a quick run)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "xgboost_demo.json")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, shards = make_batches(args.batches or BATCHES * args.scale, work)
        for method, theirs_kind, ours_kind in (
            ("hist", xgb.ExtMemQuantileDMatrix, extmem.ExtMemQuantileDMatrix),
            ("approx", xgb.DMatrix, extmem.DMatrix),
        ):
            started = time.perf_counter()
            theirs = train_and_predict(theirs_kind(ArrayIter(files, tmp), missing=np.nan, enable_categorical=False), method, args.rounds)
            their_seconds = time.perf_counter() - started
            started = time.perf_counter()
            ours = train_and_predict(ours_kind(shards, label="y", missing=np.nan, enable_categorical=False), method, args.rounds)
            our_seconds = time.perf_counter() - started
            results[method] = {
                "rows": len(theirs),
                "max_abs_difference": float(np.max(np.abs(ours - theirs))),
                "xgboost_seconds": round(their_seconds, 2),
                "extmem_seconds": round(our_seconds, 2),
            }
            print(
                f"{method:>6}: {len(theirs):,} rows, max |difference| {results[method]['max_abs_difference']:.3g}, "
                f"XGBoost {their_seconds:.1f} s, extmem {our_seconds:.1f} s",
                flush=True,
            )
    payload = {"batches": args.batches or BATCHES * args.scale, "rounds": args.rounds, "results": results}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
