"""Per-worker peak RSS of distributed training on a local Dask cluster, at 1x and 8x the rows, beside one machine.

    python -m bench.cluster [--workers 2] [--rows-per-shard 10000] [--shards 8] [--k 6] [--rounds 10] [--repeats 1]

Each case runs in its own subprocess (which starts its own local cluster); the worker processes
measure their own peaks while they build and train. The single-machine cases are ``extmem train
--cache disk`` on the same data. Writes bench/results/cluster.json and prints a table.
"""

from __future__ import annotations

import argparse

from .harness import add_common_flags, ensure_dataset, median_of, mib, run_method, write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=8, help="shards at 1x; 8x uses 8 times as many")
    add_common_flags(parser, "cluster.json")
    args = parser.parse_args(argv)
    datasets = {
        factor: ensure_dataset(
            args.data_dir / f"scaling-k{args.k}-{args.rows_per_shard}x{args.shards * factor}",
            args.rows_per_shard * args.shards * factor,
            args.shards * factor,
            args.k,
        )
        for factor in (1, 8)
    }
    runs: dict[str, list[dict]] = {"single 1x": [], "single 8x": [], "cluster 1x": [], "cluster 8x": []}
    for _ in range(args.repeats):
        for factor in (1, 8):
            runs[f"single {factor}x"].append(run_method("extmem", datasets[factor], args.rounds, {"cache": "disk"}))
            runs[f"cluster {factor}x"].append(
                run_method("extmem-cluster", datasets[factor], args.rounds, {"scheduler": f"local:{args.workers}"})
            )
    failed = [run for case in runs.values() for run in case if run.get("failed")]
    if failed:
        raise SystemExit(f"a run failed: {failed[0]}")
    rows = {}
    for case, case_runs in runs.items():
        per_process = "peak_rss_bytes" if case.startswith("single") else "worker_peak_rss_bytes"
        per_process_anon = "peak_anon_bytes" if case.startswith("single") else "worker_peak_anon_bytes"
        rows[case] = {
            "rows": median_of(case_runs, "rows"),
            "process_peak_rss_bytes": median_of(case_runs, per_process),
            "process_peak_anon_bytes": median_of(case_runs, per_process_anon),
            "client_peak_rss_bytes": median_of(case_runs, "peak_rss_bytes"),
            "mlogloss": median_of(case_runs, "mlogloss"),
            "seconds": median_of(case_runs, "seconds"),
        }
    ratio = rows["cluster 8x"]["process_peak_rss_bytes"] / rows["cluster 1x"]["process_peak_rss_bytes"]
    speedup = rows["single 8x"]["seconds"] / rows["cluster 8x"]["seconds"]
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "median": rows,
        "ratio_worker_peak_rss_8x_over_1x": ratio,
        "speedup_8x": speedup,
    }
    write_json(args.out, payload)
    print(f"{'case':<12} {'rows':>9} {'peak RSS/process':>17} {'anon/process':>13} {'client RSS':>11} {'mlogloss':>9} {'seconds':>8}")
    for case, row in rows.items():
        print(
            f"{case:<12} {row['rows']:>9,.0f} {mib(row['process_peak_rss_bytes']):>17} {mib(row['process_peak_anon_bytes']):>13} "
            f"{mib(row['client_peak_rss_bytes']):>11} {row['mlogloss']:>9.4f} {row['seconds']:>8.1f}"
        )
    print(f"per-worker peak RSS, 8x/1x: {ratio:.3f} (target <= 1.15); at 8x, one machine's time / the cluster's: {speedup:.2f}")
    return payload


if __name__ == "__main__":
    main()
