"""Peak RSS of `extmem train` (or `predict`, `XGBClassifier.fit`, `prune`, `train --model`) at 1x and 8x the rows (same shard size): within 15 %.

    python -m bench.scaling [--stage train|predict|sklearn|prune|incremental] [--model sgd_logistic] [--rows-per-shard 10000]
                            [--shards 8] [--k 6] [--rounds 10] [--repeats 3]

Each run is its own subprocess; runs alternate 1x/8x so machine noise hits both alike. For
``--stage predict`` a model is trained once on the 1x data, then each run scores a whole dataset
into a parquet file. Writes bench/results/scaling[-predict].json and prints a table of medians.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import extmem

from .harness import add_common_flags, ensure_dataset, median_of, mib, run_method, write_json

METHOD_OF_STAGE = {
    "train": "extmem",
    "predict": "extmem-predict",
    "sklearn": "extmem-sklearn",
    "prune": "extmem-prune",
    "incremental": "extmem-incremental",
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=8, help="shards at 1x; 8x uses 8 times as many")
    parser.add_argument("--stage", choices=tuple(METHOD_OF_STAGE), default="train")
    parser.add_argument(
        "--cache", choices=("auto", "memory", "disk"), help="train and sklearn stages: extmem's cache kind (default: its own, auto)"
    )
    parser.add_argument(
        "--model", default="sgd_logistic", help="incremental stage: the --model to train (default sgd_logistic, with alpha 0.01)"
    )
    add_common_flags(parser, "scaling.json")
    args = parser.parse_args(argv)
    if args.stage != "train" and args.out.name == "scaling.json":
        args.out = args.out.with_name(f"scaling-{args.stage}.json")

    datasets = {}
    for factor in (1, 8):
        shards = args.shards * factor
        folder = args.data_dir / f"scaling-k{args.k}-{args.rows_per_shard}x{shards}"
        datasets[factor] = ensure_dataset(folder, args.rows_per_shard * shards, shards, args.k)
    method, options = METHOD_OF_STAGE[args.stage], {}
    if args.stage == "predict":
        model = args.data_dir / f"scaling-model-k{args.k}-{args.rows_per_shard}x{args.shards}-r{args.rounds}"
        if not (model / "model.ubj").exists():
            extmem.train(datasets[1], preset="splice-sites", out=model, rounds=args.rounds, overwrite=True)
        options = {"model": str(model), "out": str(args.out.with_suffix(".parquet"))}
    elif args.stage == "prune":
        options = {"out": str(args.out.with_suffix(".pruned"))}
    elif args.stage == "incremental":
        options = {"model": args.model, "valid_fraction": 0.2, **({"params": {"alpha": 0.01}} if args.model.startswith("sgd") else {})}
    elif args.cache is not None:
        options = {"cache": args.cache}
    runs: dict[int, list[dict]] = {1: [], 8: []}
    for _ in range(args.repeats):
        for factor, folder in datasets.items():
            runs[factor].append(run_method(method, folder, args.rounds, options))
    if "out" in options:
        output = Path(options["out"])
        shutil.rmtree(output, ignore_errors=True) if output.is_dir() else output.unlink(missing_ok=True)
    failed = [run for factor_runs in runs.values() for run in factor_runs if run.get("failed")]
    if failed:
        raise SystemExit(f"a run failed: {failed[0]}")
    summary = {
        factor: {key: median_of(factor_runs, key) for key in ("rows", "features", "peak_rss_bytes", "peak_anon_bytes", "seconds")}
        | ({"macro_f1": median_of(factor_runs, "macro_f1")} if args.stage == "incremental" else {})
        for factor, factor_runs in runs.items()
    }
    ratio_rss = summary[8]["peak_rss_bytes"] / summary[1]["peak_rss_bytes"]
    ratio_anon = summary[8]["peak_anon_bytes"] / summary[1]["peak_anon_bytes"]
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "median": summary,
        "ratio_peak_rss_8x_over_1x": ratio_rss,
        "ratio_peak_anon_8x_over_1x": ratio_anon,
    }
    write_json(args.out, payload)
    print(f"{'rows':>10} {'features':>8} {'peak RSS':>10} {'peak anon':>10} {'seconds':>8}   (medians of {args.repeats})")
    for factor in (1, 8):
        s = summary[factor]
        print(
            f"{s['rows']:>10,.0f} {s['features']:>8,.0f} {mib(s['peak_rss_bytes']):>10} {mib(s['peak_anon_bytes']):>10} {s['seconds']:>8.1f}"
        )
    if args.stage == "incremental":
        print(f"{args.model}: macro-F1 on the 20 % held out {summary[1]['macro_f1']:.4f} (1x), {summary[8]['macro_f1']:.4f} (8x)")
    print(f"extmem {args.stage}: 8x/1x peak RSS ratio {ratio_rss:.3f}, peak anon ratio {ratio_anon:.3f} (target <= 1.15)")
    return payload


if __name__ == "__main__":
    main()
