"""Explanations against the row count: peak memory and wall time of ``extmem explain`` beside ``extmem predict``.

    python -m bench.explain [--rows 20000,160000] [--shards 4] [--k 6] [--model-rows 20000] [--rounds 20] [--budget 1GiB]

One model is trained on the first size's data; then, for every size, ``explain`` and ``predict``
run each in its own subprocess on the same generated dataset (under ``prlimit --data`` with
``--budget``), alternating. The table gives each one's peak RSS, anonymous RSS and wall time, and
the ratios largest / smallest size: explanations' memory depends on the batch, not the rows.
Writes bench/results/explain.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import extmem
from extmem.diagnostics import parse_size

from .harness import RESULTS, ensure_dataset, median_of, mib, run_method, write_json


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="20000,160000", help="comma-separated dataset sizes")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=20, help="boosting rounds of the explained model")
    parser.add_argument("--budget", help="run explain and predict under prlimit --data=BUDGET and plan for it (e.g. 1GiB)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=RESULTS / "data")
    parser.add_argument("--out", type=Path, default=RESULTS / "explain.json")
    args = parser.parse_args(argv)
    sizes = [int(value) for value in args.rows.split(",")]
    limit = parse_size(args.budget) if args.budget else None
    folders = {rows: ensure_dataset(args.data_dir / f"explain-k{args.k}-{rows}x{args.shards}", rows, args.shards, args.k) for rows in sizes}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {"explain": {rows: [] for rows in sizes}, "predict": {rows: [] for rows in sizes}}
    with tempfile.TemporaryDirectory(prefix="extmem-bench-explain-") as scratch:
        model = Path(scratch) / "model"
        extmem.train(folders[sizes[0]], preset="splice-sites", out=model, rounds=args.rounds)
        for _ in range(args.repeats):
            for rows, data in folders.items():
                for name in runs:
                    options = {"model": str(model), "out": str(Path(scratch) / name), "memory_budget": limit}
                    run = run_method(f"extmem-{name}", data, 0, options, data_limit=limit)
                    runs[name][rows].append(run)
                    print(
                        f"{name:>8} {rows:>9,} rows: "
                        + ("failed" if run.get("failed") else f"{mib(run['peak_rss_bytes'])}, {run['seconds']:.1f} s"),
                        flush=True,
                    )
    summary = {
        name: {
            rows: {key: median_of(done, key) for key in ("peak_rss_bytes", "peak_anon_bytes", "seconds")}
            if not any(run.get("failed") for run in done)
            else None
            for rows, done in by_rows.items()
        }
        for name, by_rows in runs.items()
    }
    largest, smallest = sizes[-1], sizes[0]
    explained = summary["explain"]
    payload = {
        "sizes": sizes,
        "rounds": args.rounds,
        "budget_bytes": limit,
        "summary": summary,
        "peak_ratio_largest_to_smallest": explained[largest]["peak_rss_bytes"] / explained[smallest]["peak_rss_bytes"]
        if explained[largest] and explained[smallest]
        else None,
        "explain_to_predict_seconds": {
            rows: explained[rows]["seconds"] / summary["predict"][rows]["seconds"] if explained[rows] and summary["predict"][rows] else None
            for rows in sizes
        },
        "runs": runs,
    }
    write_json(args.out, payload)
    print(f"{'rows':>10} {'explain peak':>13} {'anon':>9} {'wall':>8} {'predict peak':>13} {'wall':>8} {'explain/predict':>16}")
    for rows in sizes:
        done, scored = explained[rows], summary["predict"][rows]
        if done is None or scored is None:
            print(f"{rows:>10,} failed")
            continue
        print(
            f"{rows:>10,} {mib(done['peak_rss_bytes']):>13} {mib(done['peak_anon_bytes']):>9} {done['seconds']:>7.1f}s "
            f"{mib(scored['peak_rss_bytes']):>13} {scored['seconds']:>7.1f}s {payload['explain_to_predict_seconds'][rows]:>15.1f}x"
        )
    if payload["peak_ratio_largest_to_smallest"] is not None:
        print(f"explain's peak RSS, {largest:,} rows / {smallest:,} rows: {payload['peak_ratio_largest_to_smallest']:.3f}")
    return payload


if __name__ == "__main__":
    main()
