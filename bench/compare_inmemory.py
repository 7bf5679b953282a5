"""extmem against a plain in-memory load, side by side on the same data, in one run.

    python -m bench.compare_inmemory [--rows 40000] [--shards 4] [--k 6] [--rounds 10] [--repeats 3]

The in-memory method reads every shard, builds one dense float32 numpy matrix and trains on
an `xgb.QuantileDMatrix` (what most users do). Runs alternate between methods, each in its own
subprocess. Writes bench/results/compare_inmemory.json; prints medians and extmem/in-memory ratios.
"""

from __future__ import annotations

import argparse

from .harness import add_common_flags, ensure_dataset, median_of, mib, run_method, write_json

METHODS = ("extmem", "inmemory")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=4)
    add_common_flags(parser, "compare_inmemory.json")
    args = parser.parse_args(argv)

    folder = ensure_dataset(args.data_dir / f"compare-k{args.k}-{args.rows}x{args.shards}", args.rows, args.shards, args.k)
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            runs[method].append(run_method(method, folder, args.rounds))
    failed = [run for method_runs in runs.values() for run in method_runs if run.get("failed")]
    if failed:
        raise SystemExit(f"a run failed: {failed[0]}")
    keys = ("rows", "features", "peak_rss_bytes", "peak_anon_bytes", "seconds", "mlogloss")
    summary = {method: {key: median_of(method_runs, key) for key in keys} for method, method_runs in runs.items()}
    ratios = {key: summary["extmem"][key] / summary["inmemory"][key] for key in ("peak_rss_bytes", "peak_anon_bytes", "seconds")}
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "median": summary, "ratio_extmem_over_inmemory": ratios}
    write_json(args.out, payload)
    first = summary["extmem"]
    print(f"{first['rows']:,.0f} rows x {first['features']:,.0f} features, {args.rounds} rounds, medians of {args.repeats}")
    print(f"{'method':>10} {'peak RSS':>10} {'peak anon':>10} {'seconds':>8} {'mlogloss':>9}")
    for method in METHODS:
        s = summary[method]
        print(f"{method:>10} {mib(s['peak_rss_bytes']):>10} {mib(s['peak_anon_bytes']):>10} {s['seconds']:>8.1f} {s['mlogloss']:>9.4f}")
    print(
        f"extmem/inmemory: peak RSS {ratios['peak_rss_bytes']:.2f}, peak anon {ratios['peak_anon_bytes']:.2f}, wall time {ratios['seconds']:.2f}"
    )
    return payload


if __name__ == "__main__":
    main()
