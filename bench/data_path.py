"""Data path of wide vs packed vs spooled-wide shards, and end-to-end `extmem train` at 1x and 8x rows.

    python -m bench.data_path [--rows-per-shard 10000] [--shards 4] [--k 6] [--rounds 10] [--repeats 1]

The data path is one pass from parquet to the CSR pages XGBoost receives, in rows/s, beside
pyarrow's raw decode of the same columns. Every case runs in its own subprocess on the same
data (the packed copy is made with `extmem.pack`). Writes bench/results/data_path.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from extmem import pack

from .harness import add_common_flags, ensure_dataset, median_of, mib, run_method, write_json

PATH_CASES = {
    "wide raw decode": ("wide", "raw"),
    "wide": ("wide", "blocks"),
    "spooled wide": ("wide", "spool"),
    "packed": ("packed", "blocks"),
}


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=4, help="shards at 1x; 8x uses 8 times as many")
    add_common_flags(parser, "data_path.json")
    parser.set_defaults(repeats=1)
    args = parser.parse_args(argv)

    data: dict[tuple[str, int], Path] = {}
    for factor in (1, 8):
        shards = args.shards * factor
        wide = ensure_dataset(
            args.data_dir / f"scaling-k{args.k}-{args.rows_per_shard}x{shards}", args.rows_per_shard * shards, shards, args.k
        )
        packed = args.data_dir / f"packed-k{args.k}-{args.rows_per_shard}x{shards}"
        if not packed.exists():
            pack(wide, packed)
        data["wide", factor], data["packed", factor] = wide, packed
    path_runs: dict[str, list[dict]] = {case: [] for case in PATH_CASES}
    train_runs: dict[str, list[dict]] = {f"{layout} {factor}x": [] for factor in (1, 8) for layout in ("wide", "packed")}
    for _ in range(args.repeats):
        for case, (layout, mode) in PATH_CASES.items():
            path_runs[case].append(run_method("data-path", data[layout, 1], 0, {"mode": mode}))
        for case, runs in train_runs.items():
            layout, factor = case.split()
            runs.append(run_method("extmem", data[layout, int(factor[:-1])], args.rounds))
    failed = [run for runs in (*path_runs.values(), *train_runs.values()) for run in runs if run.get("failed")]
    if failed:
        raise SystemExit(f"a run failed: {failed[0]}")
    keys = ("rows", "rows_per_second", "peak_rss_bytes", "peak_anon_bytes")
    path = {case: {key: median_of(runs, key) for key in keys} for case, runs in path_runs.items()}
    train = {
        case: {key: median_of(runs, key) for key in ("rows", "seconds", "peak_rss_bytes", "peak_anon_bytes", "mlogloss")}
        for case, runs in train_runs.items()
    }
    disk = {layout: _disk_bytes(data[layout, 1]) for layout in ("wide", "packed")}
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "data_path": path,
        "train": train,
        "disk_bytes_1x": disk,
        "packed_over_wide_rows_per_second": path["packed"]["rows_per_second"] / path["wide"]["rows_per_second"],
        "spooled_over_wide_rows_per_second": path["spooled wide"]["rows_per_second"] / path["wide"]["rows_per_second"],
        "runs": {"data_path": path_runs, "train": train_runs},
    }
    write_json(args.out, payload)
    print(f"data path, {path['wide']['rows']:,.0f} rows (medians of {args.repeats}):")
    for case, s in path.items():
        print(
            f"  {case:<16} {s['rows_per_second']:>10,.0f} rows/s  peak RSS {mib(s['peak_rss_bytes']):>9}  anon {mib(s['peak_anon_bytes']):>9}"
        )
    print(
        f"  packed/wide {payload['packed_over_wide_rows_per_second']:.1f}x, spooled/wide {payload['spooled_over_wide_rows_per_second']:.1f}x"
    )
    print(f"  disk: wide {mib(disk['wide'])}, packed {mib(disk['packed'])} ({disk['packed'] / disk['wide']:.2f})")
    print(f"extmem train, {args.rounds} rounds:")
    for case, s in train.items():
        print(
            f"  {case:<10} {s['rows']:>9,.0f} rows {s['seconds']:>7.1f} s  peak RSS {mib(s['peak_rss_bytes']):>9}  mlogloss {s['mlogloss']:.4f}"
        )
    return payload


if __name__ == "__main__":
    main()
