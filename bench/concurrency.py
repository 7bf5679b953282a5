"""Concurrent runs into one output and one cache root: every published output complete, no live cache deleted.

    python -m bench.concurrency [--repeats 20] [--runs 2 4] [--rows 3000]

Each repeat starts N copies of ``extmem predict``, ``extmem train`` and ``extmem prune`` at once,
all writing the same output and sharing one ``--cache-dir``, and checks afterwards that each
command's output is one complete, readable result, that every run exited 0, and that the cache
root is empty. Writes bench/results/concurrency.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import extmem

from .harness import RESULTS, write_json


def _commands(data: Path, model: Path, work: Path, cache: Path) -> dict[str, list[str]]:
    extmem_cli = [sys.executable, "-m", "extmem"]
    return {
        "predict": [*extmem_cli, "predict", str(model), str(data), "--out", str(work / "preds.parquet"), "--overwrite", "--no-progress"],
        "train": [
            *extmem_cli,
            "train",
            str(data),
            "--out",
            str(work / "model"),
            "--rounds",
            "3",
            "--cache-dir",
            str(cache),
            "--overwrite",
            "--no-progress",
        ],
        "prune": [*extmem_cli, "prune", str(data), str(work / "pruned"), "--overwrite", "--no-progress"],
    }


def _complete(command: str, work: Path, rows: int) -> bool:
    """Whether the command's published output is whole and readable."""
    if command == "predict":
        return pq.read_table(work / "preds.parquet").num_rows == rows
    if command == "train":
        report = json.loads((work / "model" / "report.json").read_text())
        return report["rows"] == rows and extmem.Model.load(work / "model").predict_proba(work.parent / "data").shape[0] == rows
    manifest = json.loads((work / "pruned" / "_manifest.json").read_text())
    shards = sorted((work / "pruned").glob("*.parquet"))
    return manifest["rows_out"] == rows and sum(pq.ParquetFile(shard).metadata.num_rows for shard in shards) == rows


def run(repeats: int, counts: list[int], rows: int) -> dict[str, object]:
    outcomes: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="extmem-concurrency-") as scratch:
        root = Path(scratch)
        data, model, cache = root / "data", root / "reference-model", root / "cache"
        extmem.synth(data, extmem.SynthOptions(rows=rows, shards=3, k=4, seq_len=40, row_group_rows=500))
        extmem.train(data, preset="splice-sites", out=model, rounds=3)
        cache.mkdir()
        for count in counts:
            for repeat in range(repeats):
                work = root / f"work-{count}-{repeat}"
                work.mkdir()
                started = time.perf_counter()
                runs = [
                    (command, subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
                    for command, arguments in _commands(data, model, work, cache).items()
                    for _ in range(count)
                ]
                statuses = {command: [] for command, _ in runs}
                for command, process in runs:
                    _, stderr = process.communicate(timeout=1800)
                    statuses[command].append(process.returncode if process.returncode == 0 else stderr.strip().splitlines()[-1])
                outcome = {
                    "runs": count,
                    "repeat": repeat,
                    "seconds": round(time.perf_counter() - started, 1),
                    "exit": statuses,
                    "complete": {command: _complete(command, work, rows) for command in statuses},
                    "cache_root_empty": not any(cache.iterdir()),
                    "stray_files": sorted(str(p.relative_to(work)) for p in work.rglob(".*")),
                }
                outcomes.append(outcome)
                print(json.dumps(outcome), flush=True)
    failures = [
        outcome
        for outcome in outcomes
        if not all(outcome["complete"].values())  # type: ignore[union-attr]
        or not outcome["cache_root_empty"]
        or outcome["stray_files"]
        or any(status != 0 for statuses in outcome["exit"].values() for status in statuses)  # type: ignore[union-attr]
    ]
    return {"repeats": repeats, "counts": counts, "rows": rows, "cases": len(outcomes), "failures": failures, "outcomes": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--runs", type=int, nargs="+", default=[2, 4], help="concurrent copies of each command")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS / "concurrency.json")
    args = parser.parse_args()
    result = run(args.repeats, args.runs, args.rows)
    write_json(args.out, result)
    print(f"{result['cases']} cases, {len(result['failures'])} failures")  # type: ignore[arg-type]
    if result["failures"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
