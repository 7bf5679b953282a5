"""Memory budget and data-path throughput (issue 13).

    python -m bench.budget [--rows-per-shard 10000] [--shards 64] [--budgets 1,2,4] [--rounds 10] [--repeats 3]

1. ``extmem train`` under ``prlimit --data`` at each budget (GiB), on a dataset whose dense
   float32 size is at least 8 times the smallest budget, with no other option: extmem reads the
   limit, plans batch and page sizes and the cache kind, and must complete. A ``--memory-budget``
   below what one minimal batch needs must be refused with a clear message. (A data limit that
   low fails earlier, as a MemoryError naming the shard whose footer could not be read.)
2. Rows/s from parquet into the DMatrix cache (every pass of the build) with and without the
   prefetch thread, beside pyarrow's raw decode of the same columns in the same run; the
   ratios to raw decode, medians of ``--repeats``. ``--before REV`` adds the same build by the
   code at git revision REV (checked out in a temporary worktree), e.g. the commit before this work.

Every case runs in its own subprocess. Writes bench/results/budget.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .harness import add_common_flags, ensure_dataset, exit_cleanly_on_sigterm, median_of, mib, run_method, write_json

GiB = 2**30
TOO_SMALL = 200 * 2**20
"""A --memory-budget below what the process itself needs before any data (about 300 MiB): the plan must refuse it."""
THROUGHPUT_CASES = {
    "raw decode": {"mode": "raw"},
    "prefetch 0": {"mode": "dmatrix", "prefetch": 0},
    "prefetch 1": {"mode": "dmatrix", "prefetch": 1},
}


BUILD_SCRIPT = """
import json, sys, tempfile, time
sys.path[:0] = [sys.argv[2]]
sys.path.append(sys.argv[3])
import extmem
assert extmem.__file__.startswith(sys.argv[2]), extmem.__file__
with tempfile.TemporaryDirectory() as cache:
    started = time.perf_counter()
    matrix = extmem.dmatrix(sys.argv[1], preset="splice-sites", cache_dir=cache)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": matrix.num_row(), "rows_per_second": matrix.num_row() / seconds}))
    del matrix
"""


def _build_at_revision(tree: Path, data: Path) -> dict:
    """The default DMatrix build (disk cache, as extmem then had only) by the code in ``tree``, in its own process.

    ``python -S`` skips the site hooks, among them the editable install's finder that would load this checkout.
    """
    site_packages = sysconfig.get_paths()["purelib"]
    command = [sys.executable, "-S", "-c", BUILD_SCRIPT, str(data), str(tree), site_packages]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"failed": True, "stderr": completed.stderr[-2000:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=64, help="shards of the budget dataset (default 64: 640k rows)")
    parser.add_argument("--throughput-shards", type=int, default=4, help="shards of the throughput dataset (default 4)")
    parser.add_argument("--budgets", default="1,2,4", help="GiB, comma-separated")
    parser.add_argument("--before", metavar="REV", help="also measure the DMatrix build of the code at this git revision")
    add_common_flags(parser, "budget.json")
    args = parser.parse_args(argv)

    big = ensure_dataset(
        args.data_dir / f"scaling-k{args.k}-{args.rows_per_shard}x{args.shards}", args.rows_per_shard * args.shards, args.shards, args.k
    )
    small = ensure_dataset(
        args.data_dir / f"scaling-k{args.k}-{args.rows_per_shard}x{args.throughput_shards}",
        args.rows_per_shard * args.throughput_shards,
        args.throughput_shards,
        args.k,
    )
    budgets = [float(text) for text in args.budgets.split(",")]
    runs = {f"{budget:g} GiB": run_method("extmem", big, args.rounds, data_limit=int(budget * GiB)) for budget in budgets}
    refused = run_method("extmem", big, args.rounds, {"memory_budget": TOO_SMALL})
    throughput: dict[str, list[dict]] = {case: [] for case in THROUGHPUT_CASES}
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "before"
        if args.before:
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], check=True, capture_output=True)
            throughput[f"before ({args.before})"] = []
        try:
            for _ in range(args.repeats):
                for case, options in THROUGHPUT_CASES.items():
                    throughput[case].append(run_method("data-path", small, 0, options))
                if args.before:
                    throughput[f"before ({args.before})"].append(_build_at_revision(tree, small))
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True, capture_output=True)
    failed = [run for runs_ in throughput.values() for run in runs_ if run.get("failed")]
    if failed:
        raise SystemExit(f"a throughput run failed: {failed[0]}")
    rates = {case: median_of(case_runs, "rows_per_second") for case, case_runs in throughput.items()}
    features = runs[next(iter(runs))].get("features", 0)
    rows = args.rows_per_shard * args.shards
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "dense_float32_bytes": rows * features * 4,
        "budgets": runs,
        "too_small": {
            "memory_budget": TOO_SMALL,
            "failed": refused.get("failed", False),
            "message": refused.get("stderr", "").strip().splitlines()[-1:],
        },
        "throughput_rows_per_second": rates,
        "ratio_to_raw_decode": {case: rate / rates["raw decode"] for case, rate in rates.items() if case != "raw decode"},
        "throughput_runs": throughput,
    }
    write_json(args.out, payload)
    print(f"budget dataset: {rows:,} rows x {features:,} features, dense float32 {mib(payload['dense_float32_bytes'])}")
    for case, run in runs.items():
        if run.get("failed"):
            print(f"  {case:>8}: FAILED (exit {run['returncode']}): {run['stderr'].strip().splitlines()[-1:]}")
            continue
        plan = run["plan"]
        print(
            f"  {case:>8}: completed in {run['seconds']:.0f} s, {plan['cache']} cache, batches {plan['batch_rows']:,}, pages {plan['page_rows']:,};"
            f" planned {mib(plan['expected_peak_bytes'])}, peak RSS {mib(run['peak_rss_bytes'])}, anon {mib(run['peak_anon_bytes'])},"
            f" data {mib(run['peak_data_bytes'])}; mlogloss {run['mlogloss']:.4f}"
        )
    print(f"  --memory-budget {mib(TOO_SMALL)}: {'refused' if refused.get('failed') else 'NOT refused'}: {payload['too_small']['message']}")
    print(f"throughput, {args.rows_per_shard * args.throughput_shards:,} rows (medians of {args.repeats}):")
    for case, rate in rates.items():
        ratio = f"  ({rate / rates['raw decode']:.2f} of raw decode)" if case != "raw decode" else ""
        print(f"  {case:<11} {rate:>9,.0f} rows/s{ratio}")
    return payload


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    main()
