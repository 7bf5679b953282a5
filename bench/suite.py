"""Peak RSS and time of the ways people train on this data, side by side: ``python -m bench run``.

    python -m bench run --out DIR [--preset quick|full] [--sizes 20000,80000] [--methods extmem,batched-csr]
                        [--rounds 10] [--repeats 1] [--budget 1GiB] [--timeout 3600]

Every method runs in its own subprocess on the same generated dataset (one per size), RSS and
anonymous RSS sampled every 20 ms. Writes ``DIR/results.json``, ``DIR/results.md`` and PNG plots:
RSS over time per method (largest size) and peak RSS and wall time against rows. With ``--budget``
each method runs under ``prlimit --data=BUDGET`` and the table records which completed. Methods
whose library is not installed (lightgbm, polars) are skipped with a note. Each run's temporary
files go to a folder of its own that is removed afterwards, so no cache file outlives the bench.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extmem.diagnostics import parse_size

from .harness import RESULTS, ensure_dataset, median_of, mib, run_method, write_json


@dataclass(frozen=True)
class Shape:
    """A generated dataset: rows, shards and k-mer length (k=6: 4,096 k-mer columns; k=5: 1,024)."""

    rows: int
    shards: int
    k: int

    @property
    def name(self) -> str:
        return f"suite-k{self.k}-{self.rows}x{self.shards}"


PRESETS: dict[str, list[Shape]] = {
    "quick": [Shape(10_000, 4, 6), Shape(40_000, 4, 6)],
    "full": [Shape(817_000, 4, 6), Shape(3_700_000, 16, 5)],
}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "inmemory": ("inmemory", {}),
    "inmemory-csr": ("inmemory-csr", {}),
    "batched-csr": ("batched-csr", {}),
    "lightgbm": ("lightgbm", {}),
    "polars": ("polars", {}),
    "naive-iter": ("naive-iter", {}),
    "extmem": ("extmem", {}),
    "extmem-disk": ("extmem", {"cache": "disk"}),
    "extmem-hashed": ("extmem", {"hash_kmers": 1024}),
}
OPTIONAL_LIBRARY = {"lightgbm": "lightgbm", "polars": "polars"}
KEYS = ("rows", "features", "peak_rss_bytes", "peak_anon_bytes", "seconds", "mlogloss")


def _available(method: str) -> bool:
    library = OPTIONAL_LIBRARY.get(method)
    return library is None or importlib.util.find_spec(library) is not None


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the completed runs, or the failure of the first run when none completed."""
    completed = [run for run in runs if not run.get("failed")]
    if not completed:
        failure = runs[0]
        return {"failed": True, "returncode": failure.get("returncode"), "error": (failure.get("stderr") or "").strip().splitlines()[-1:]}
    return {key: median_of(completed, key) for key in KEYS}


def _ratios(results: dict[str, dict[int, dict[str, Any]]], numerator: str, denominator: str) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for rows, top in results.get(numerator, {}).items():
        bottom = results.get(denominator, {}).get(rows)
        if bottom and not top.get("failed") and not bottom.get("failed"):
            out[rows] = {key: top[key] / bottom[key] for key in ("peak_rss_bytes", "peak_anon_bytes", "seconds")}
    return out


def _crossover(results: dict[str, dict[int, dict[str, Any]]], method: str, baseline: str) -> dict[str, int | None]:
    """The largest measured row count where ``method`` peaks above ``baseline``, and the smallest where it peaks below."""
    above, below = None, None
    for rows in sorted(results.get(method, {})):
        ours, theirs = results[method][rows], results.get(baseline, {}).get(rows)
        if ours.get("failed") or not theirs:
            continue
        if theirs.get("failed") or ours["peak_rss_bytes"] < theirs["peak_rss_bytes"]:
            below = rows if below is None else below
        else:
            above, below = rows, None
    return {"last_rows_above": above, "first_rows_below": below}


def _markdown(payload: dict[str, Any]) -> str:
    lines = [
        f"Machine: {payload['machine']}. {payload['rounds']} rounds; medians of {payload['repeats']}"
        + (f"; under `prlimit --data={payload['budget_bytes']}`" if payload["budget_bytes"] else "")
        + ".",
        "",
        "| method | rows | features | peak RSS | peak anonymous | wall time | train mlogloss |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, sizes in payload["results"].items():
        for rows, s in sorted(sizes.items()):
            if s.get("failed"):
                why = " ".join(s.get("error") or []) or f"exit {s.get('returncode')}"
                lines.append(f"| {method} | {rows:,} | | failed: {why[:90]} | | | |")
            else:
                lines.append(
                    f"| {method} | {s['rows']:,.0f} | {s['features']:,.0f} | {mib(s['peak_rss_bytes'])} | {mib(s['peak_anon_bytes'])} "
                    f"| {s['seconds']:.1f} s | {s['mlogloss']:.4f} |"
                )
    measured = [(name, rows, r) for name, ratios in payload["ratios"].items() for rows, r in sorted(ratios.items())]
    if measured:
        lines += ["", "| ratio | rows | peak RSS | peak anonymous | wall time |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [
            f"| {name} | {rows:,} | {r['peak_rss_bytes']:.2f} | {r['peak_anon_bytes']:.2f} | {r['seconds']:.2f} |"
            for name, rows, r in measured
        ]
    lines.append("")
    for name, cross in payload["crossover"].items():
        above = f"above it up to {cross['last_rows_above']:,} rows" if cross["last_rows_above"] is not None else "never above it"
        below = (
            f"below it (or the baseline failed) from {cross['first_rows_below']:,} rows"
            if cross["first_rows_below"] is not None
            else "never below it"
        )
        lines.append(f"- {name}: peak RSS {above}, {below} (of the sizes measured)")
    lines += [f"- {note}" for note in payload["skipped"]]
    return "\n".join(lines) + "\n"


def _plots(payload: dict[str, Any], runs: dict[str, dict[int, list[dict[str, Any]]]], out: Path) -> list[str]:
    """RSS over time per method at the largest size; peak RSS and wall time against rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    largest = max(payload["sizes"])
    figure, axes = plt.subplots(figsize=(8, 5))
    for method, sizes in runs.items():
        run = next((r for r in sizes.get(largest, []) if r.get("samples")), None)
        if run is not None:
            seconds, rss = zip(*[(t, total / 2**20) for t, total, _ in run["samples"]], strict=True)
            axes.plot(seconds, rss, label=method)
    axes.set(xlabel="seconds", ylabel="RSS (MiB)", title=f"RSS over time, {largest:,} rows")
    if axes.lines:
        axes.legend()
    figure.savefig(out / "rss_over_time.png", dpi=110)
    plt.close(figure)
    written.append("rss_over_time.png")
    figure, (peak_axes, time_axes) = plt.subplots(1, 2, figsize=(12, 5))
    for method, sizes in payload["results"].items():
        done = sorted((rows, s) for rows, s in sizes.items() if not s.get("failed"))
        if done:
            rows = [r for r, _ in done]
            peak_axes.plot(rows, [s["peak_rss_bytes"] / 2**20 for _, s in done], marker="o", label=method)
            time_axes.plot(rows, [s["seconds"] for _, s in done], marker="o", label=method)
    peak_axes.set(xlabel="rows", ylabel="peak RSS (MiB)", title="Peak RSS", xscale="log", yscale="log")
    time_axes.set(xlabel="rows", ylabel="wall time (s)", title="Wall time", xscale="log", yscale="log")
    if peak_axes.lines:
        peak_axes.legend()
    figure.savefig(out / "peaks.png", dpi=110)
    plt.close(figure)
    written.append("peaks.png")
    return written


def _machine() -> str:
    import os
    import platform

    import psutil
    import pyarrow
    import xgboost

    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()}; Python {platform.python_version()}, "
        f"XGBoost {xgboost.__version__}, pyarrow {pyarrow.__version__}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the plots")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--sizes", help="rows per dataset, comma-separated (shards and k from the preset's first shape)")
    parser.add_argument("--shards", type=int, help="with --sizes: shards per dataset")
    parser.add_argument("--k", type=int, help="with --sizes: k-mer length (6: 4,096 k-mer columns)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--budget", type=parse_size, help="run every method under prlimit --data=BUDGET (e.g. 1GiB)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed and recorded as failed")
    parser.add_argument("--data-dir", type=Path, default=RESULTS / "data")
    args = parser.parse_args(argv)

    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    skipped = [f"{name}: skipped, {OPTIONAL_LIBRARY[name]} is not installed" for name in methods if not _available(name)]
    methods = [name for name in methods if _available(name)]
    shapes = PRESETS[args.preset]
    if args.sizes:
        first = shapes[0]
        shapes = [Shape(int(rows), args.shards or first.shards, args.k or first.k) for rows in args.sizes.split(",")]
    datasets = {shape.rows: ensure_dataset(args.data_dir / shape.name, shape.rows, shape.shards, shape.k) for shape in shapes}

    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {rows: [] for rows in datasets} for name in methods}
    for rows, folder in datasets.items():
        for _ in range(args.repeats):
            for name in methods:  # methods alternate, so machine noise falls on all of them alike
                method, options = METHODS[name]
                run = run_method(method, folder, args.rounds, options, timeout=args.timeout, data_limit=args.budget, samples=True)
                runs[name][rows].append(run)
                status = "failed" if run.get("failed") else f"{mib(run['peak_rss_bytes'])}, {run['seconds']:.1f} s"
                print(f"{name:>14} {rows:>10,} rows: {status}", flush=True)
    results = {name: {rows: _summary(size_runs) for rows, size_runs in sizes.items()} for name, sizes in runs.items()}
    payload: dict[str, Any] = {
        "machine": _machine(),
        "preset": args.preset,
        "sizes": sorted(datasets),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "budget_bytes": args.budget,
        "results": results,
        "ratios": {
            f"{ours}/{theirs}": _ratios(results, ours, theirs)
            for ours in ("extmem", "extmem-disk")
            for theirs in ("inmemory", "inmemory-csr", "batched-csr")
            if ours in results and theirs in results
        },
        "crossover": {
            f"{ours} vs {theirs}": _crossover(results, ours, theirs)
            for ours in ("extmem", "extmem-disk")
            for theirs in ("inmemory-csr", "batched-csr")
            if ours in results and theirs in results
        },
        "skipped": skipped,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    payload["plots"] = _plots(payload, runs, args.out)
    write_json(args.out / "results.json", {**payload, "runs": runs})
    (args.out / "results.md").write_text(_markdown(payload))
    print(_markdown(payload))
    return payload
