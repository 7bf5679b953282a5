"""Model quality, memory and time with exact k-mer columns vs hashed k-mer features.

    python -m bench.hashing [--rows 40000] [--shards 4] [--valid-rows 10000] [--rounds 30] [--repeats 1]

Cases, each `extmem train` in its own subprocess on the same data, scored on a held-out dataset
(generated with another seed): the 4,096 6-mer columns as they are; those columns folded into
1,024 and 256 hashed features; k-mers counted from the `sequence` column, exact and hashed to
1,024. Also times one batch of k-mer hashing with scikit-learn's FeatureHasher against extmem's
vectorised numpy counting. Writes bench/results/hashing.json and prints a table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher

from extmem.diagnostics import hashed_kmer_entries

from .harness import add_common_flags, ensure_dataset, median_of, mib, run_method, write_json

CASES = {
    "exact columns (4,096)": None,
    "hashed columns, 1,024": {"width": 1024},
    "hashed columns, 256": {"width": 256},
    "sequence, exact (4,096)": {"k": 6, "sequence_column": "sequence"},
    "sequence, hashed 1,024": {"width": 1024, "k": 6, "sequence_column": "sequence"},
}


def hashing_speed(shard: str, rows: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Seconds to featurise ``rows`` sequences into 1,024 hashed 6-mer features, both ways, and their agreement."""
    sequences = pq.read_table(shard, columns=["sequence"]).column("sequence").combine_chunks()[:rows]
    started = time.perf_counter()
    for _ in range(repeats):
        offsets, positions, values = hashed_kmer_entries(sequences, 1024, 6)
    numpy_seconds = (time.perf_counter() - started) / repeats
    hasher = FeatureHasher(n_features=1024, input_type="string", alternate_sign=False)
    texts = sequences.to_pylist()
    started = time.perf_counter()
    for _ in range(repeats):
        reference = hasher.transform([[s[i : i + 6] for i in range(len(s) - 5)] for s in texts])
    sklearn_seconds = (time.perf_counter() - started) / repeats
    ours = sp.csr_matrix((values, positions, offsets), shape=reference.shape)
    return {
        "rows": rows,
        "numpy_seconds": numpy_seconds,
        "sklearn_seconds": sklearn_seconds,
        "max_difference": float(abs(ours - reference).max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--valid-rows", type=int, default=10_000)
    add_common_flags(parser, "hashing.json")
    parser.set_defaults(repeats=1, rounds=30)
    args = parser.parse_args(argv)

    data = ensure_dataset(args.data_dir / f"compare-k{args.k}-{args.rows}x{args.shards}", args.rows, args.shards, args.k)
    valid = ensure_dataset(args.data_dir / f"valid-k{args.k}-{args.valid_rows}", args.valid_rows, 1, args.k, seed=1)
    runs: dict[str, list[dict]] = {case: [] for case in CASES}
    for _ in range(args.repeats):
        for case, kmers in CASES.items():
            if kmers is not None and "k" in kmers:
                kmers = {**kmers, "k": args.k}
            runs[case].append(run_method("extmem-kmers", data, args.rounds, {"kmers": kmers, "valid": str(valid)}))
    failed = [run for case_runs in runs.values() for run in case_runs if run.get("failed")]
    if failed:
        raise SystemExit(f"a run failed: {failed[0]}")
    keys = ("features", "mlogloss", "macro_f1", "peak_rss_bytes", "peak_anon_bytes", "seconds")
    summary = {case: {key: median_of(case_runs, key) for key in keys} for case, case_runs in runs.items()}
    speed = hashing_speed(min(str(p) for p in data.glob("*.parquet")))
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "median": summary, "hashing_speed": speed, "runs": runs}
    write_json(args.out, payload)
    print(f"{args.rows:,} training rows, {args.valid_rows:,} held-out rows, {args.rounds} rounds (medians of {args.repeats}):")
    print(f"{'case':<26} {'features':>8} {'mlogloss':>9} {'macro-F1':>9} {'peak RSS':>10} {'anon':>9} {'seconds':>8}")
    for case, s in summary.items():
        print(
            f"{case:<26} {s['features']:>8,.0f} {s['mlogloss']:>9.4f} {s['macro_f1']:>9.4f} "
            f"{mib(s['peak_rss_bytes']):>10} {mib(s['peak_anon_bytes']):>9} {s['seconds']:>8.1f}"
        )
    print(
        f"hashing {speed['rows']:,} sequences into 1,024 features: numpy {speed['numpy_seconds'] * 1000:.1f} ms, "
        f"FeatureHasher {speed['sklearn_seconds'] * 1000:.1f} ms ({speed['sklearn_seconds'] / speed['numpy_seconds']:.1f}x); "
        f"largest difference {speed['max_difference']}"
    )
    np.testing.assert_equal(speed["max_difference"], 0.0)
    return payload


if __name__ == "__main__":
    main()
