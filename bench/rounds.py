"""Build cost against per-round cost: extmem and the skilled batched-CSR baseline over a sweep of rounds.

    python -m bench.rounds [--rows 40000] [--shards 4] [--k 6] [--rounds 1,20,200] [--repeats 1] [--packed]
                           [--cache disk|auto|memory] [--memory-budget 512MiB]

Each (method, rounds) pair runs in its own subprocess on the same generated dataset, methods
alternating. A line through each method's wall times gives its fixed cost (reading and building)
and its cost per boosting round; the table shows both and the ratio extmem / baseline at every
rounds count. ``--packed`` also runs extmem on a packed copy of the data (``extmem pack``), where
the baseline for the work left is XGBoost's own compute: its QuantileDMatrix build plus the rounds,
from a CSR already in RAM, and also XGBoost's own external memory fed that CSR in pages with its cache
on disk (``xgboost-extmem``: the engine's own cost of ``--cache disk``); ``--reused`` also runs extmem replaying the rows that a first, untimed
run kept with ``encoded_cache``. Writes bench/results/rounds.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

import extmem

from .harness import RESULTS, ensure_dataset, median_of, mib, run_method, write_json

BASELINE = "batched-csr"
ENGINE = "xgboost-extmem"


def _line(rounds: list[int], seconds: list[float]) -> tuple[float, float]:
    """Fixed seconds and seconds per round of a least-squares line through (rounds, seconds)."""
    per_round, fixed = np.polyfit(rounds, seconds, 1) if len(set(rounds)) > 1 else (0.0, seconds[0])
    return float(fixed), float(per_round)


def _completed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that did not fail (each failed run keeps its stderr in the results)."""
    return [run for run in runs if not run.get("failed")]


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the runs that completed (None if none did)."""
    completed = _completed(runs)
    return median_of(completed, key) if completed else None


def _compute_seconds(runs: list[dict[str, Any]]) -> float | None:
    """The median of XGBoost's own build plus rounds over the runs that completed (the reading left out)."""
    return _median([{"s": run["stage_seconds"]["build"] + run["stage_seconds"]["train"]} for run in _completed(runs)], "s")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator is not None else None


def _shown(value: float | None, form: str) -> str:
    return form.format(value) if value is not None else "failed"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.rounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--rounds", default="1,20,200", help="comma-separated rounds counts")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--packed", action="store_true", help="also extmem on a packed copy of the data")
    parser.add_argument(
        "--reused", action="store_true", help="also extmem replaying the rows a first (untimed) run kept with --encoded-cache"
    )
    parser.add_argument("--cache", choices=("disk", "auto", "memory"), default="disk", help="extmem's --cache")
    parser.add_argument("--memory-budget", help="extmem's --memory-budget (e.g. 512MiB)")
    parser.add_argument("--data-dir", type=Path, default=RESULTS / "data")
    parser.add_argument("--out", type=Path, default=RESULTS / "rounds.json")
    args = parser.parse_args(argv)
    sweep = [int(value) for value in args.rounds.split(",")]
    data = ensure_dataset(args.data_dir / f"rounds-k{args.k}-{args.rows}x{args.shards}", args.rows, args.shards, args.k)
    extmem_options = {"cache": args.cache, **({"memory_budget": args.memory_budget} if args.memory_budget else {})}
    methods = {f"extmem-{args.cache}": ("extmem", extmem_options), BASELINE: (BASELINE, {})}
    folders = {name: data for name in methods}
    if args.packed:
        packed = args.data_dir / f"rounds-k{args.k}-{args.rows}x{args.shards}-packed"
        if not packed.exists():
            extmem.pack(data, packed)
        methods["extmem-packed"] = ("extmem", extmem_options)
        folders["extmem-packed"] = packed
        methods[ENGINE] = (ENGINE, {})
        folders[ENGINE] = data
    if args.reused:
        kept = {**extmem_options, "encoded_cache": str(args.data_dir / f"encoded-{data.name}")}
        run_method("extmem", data, 1, kept)  # the first read, untimed: it keeps the rows
        methods["extmem-reused"] = ("extmem", kept)
        folders["extmem-reused"] = data
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {rounds: [] for rounds in sweep} for name in methods}
    for _ in range(args.repeats):
        for rounds in sweep:
            for name, (method, options) in methods.items():
                run = run_method(method, folders[name], rounds, options)
                runs[name][rounds].append(run)
                outcome = f"failed: {(run['stderr'].strip().splitlines() or ['?'])[-1]}" if run.get("failed") else f"{run['seconds']:.1f} s"
                print(f"{name:>14} {rounds:>5} rounds: {outcome}", flush=True)
    seconds = {name: {rounds: _median(done, "seconds") for rounds, done in by_rounds.items()} for name, by_rounds in runs.items()}
    peaks = {name: {rounds: _median(done, "peak_rss_bytes") for rounds, done in by_rounds.items()} for name, by_rounds in runs.items()}
    lines = {
        name: _line(list(by_rounds), list(by_rounds.values())) for name, by_rounds in seconds.items() if None not in by_rounds.values()
    }
    compute = {rounds: _compute_seconds(done) for rounds, done in runs[BASELINE].items()}
    engine = {rounds: _compute_seconds(done) for rounds, done in runs[ENGINE].items()} if args.packed else None
    payload = {
        "rows": args.rows,
        "sweep": sweep,
        "seconds": seconds,
        "peak_rss_bytes": peaks,
        "xgboost_compute_seconds": compute,
        "fixed_and_per_round": {name: {"fixed": fixed, "per_round": per_round} for name, (fixed, per_round) in lines.items()},
        "ratio_to_batched_csr": {
            name: {rounds: _ratio(by_rounds[rounds], seconds[BASELINE][rounds]) for rounds in sweep} for name, by_rounds in seconds.items()
        },
        "ratio_packed_to_xgboost_compute": {rounds: _ratio(seconds["extmem-packed"][rounds], compute[rounds]) for rounds in sweep}
        if args.packed
        else None,
        "xgboost_extmem_compute_seconds": engine,
        "ratio_packed_to_xgboost_extmem": {rounds: _ratio(seconds["extmem-packed"][rounds], engine[rounds]) for rounds in sweep}
        if engine
        else None,
        "runs": runs,
    }
    write_json(args.out, payload)
    print(f"{'method':>14} {'fixed s':>8} {'s/round':>8}  " + "  ".join(f"{r:>6} rounds" for r in sweep))
    for name, by_rounds in payload["ratio_to_batched_csr"].items():
        if name in lines:
            fixed, per_round = f"{lines[name][0]:.1f}", f"{lines[name][1]:.3f}"
        else:
            fixed = per_round = "failed"
        print(f"{name:>14} {fixed:>8} {per_round:>8}  " + "  ".join(_shown(by_rounds[r], "{:>11.2f}x") for r in sweep))
    for name, by_rounds in peaks.items():
        print(f"{name:>14} peak RSS: " + ", ".join(f"{r} rounds {mib(peak) if peak else 'failed'}" for r, peak in by_rounds.items()))
    print("XGBoost's own compute (build + rounds, CSR in RAM): " + ", ".join(f"{r} rounds {_shown(compute[r], '{:.1f} s')}" for r in sweep))
    if engine:
        print(
            "XGBoost's own external memory (the same CSR in pages, cache on disk): "
            + ", ".join(f"{r} rounds {_shown(engine[r], '{:.1f} s')}" for r in sweep)
        )
    return payload


if __name__ == "__main__":
    main()
