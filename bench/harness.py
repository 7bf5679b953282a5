"""Shared pieces of the bench scripts: datasets, subprocess runs, medians, tables."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import extmem

RESULTS = Path(__file__).resolve().parent / "results"


def add_common_flags(parser: argparse.ArgumentParser, out_name: str) -> None:
    """Flags every bench script takes: data shape, training length, repeats, where files go."""
    parser.add_argument("--k", type=int, default=6, help="k-mer length of the synthetic data (default 6: 4,096 k-mer columns)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians are reported")
    parser.add_argument("--data-dir", type=Path, default=RESULTS / "data")
    parser.add_argument("--out", type=Path, default=RESULTS / out_name)


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so that running workers are killed and scratch folders removed."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def ensure_dataset(folder: Path, rows: int, shards: int, k: int, seed: int = 0) -> Path:
    """Generate a synth dataset once; reuse it when the folder already holds it."""
    if not list(folder.glob("*.parquet")):
        extmem.synth(folder, extmem.SynthOptions(rows=rows, shards=shards, k=k, seed=seed))
    return folder


def run_method(
    method: str,
    data: Path,
    rounds: int,
    options: dict[str, Any] | None = None,
    timeout: float = 3600,
    data_limit: int | None = None,
    samples: bool = False,
) -> dict[str, Any]:
    """Run one method in a fresh subprocess and return its measurements.

    With ``data_limit`` (bytes) the kernel caps the process's data size (``prlimit --data``);
    a run that dies of it, or runs past ``timeout`` seconds, comes back with ``failed`` and the
    end of its stderr. ``samples``: also return RSS over time. The run's temporary files (XGBoost
    caches included) go to a folder of its own, deleted afterwards even if the run was killed.
    """
    command = [sys.executable, "-m", "bench.worker", method, str(data), str(rounds), json.dumps(options or {})]
    if samples:
        command.append("--samples")
    if data_limit is not None:
        command = ["prlimit", f"--data={data_limit}", *command]
    with tempfile.TemporaryDirectory(prefix="extmem-bench-") as scratch:
        environment = {**os.environ, "TMPDIR": scratch}
        try:
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
                cwd=Path(__file__).resolve().parent.parent,
                env=environment,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            return {
                "method": method,
                "failed": True,
                "returncode": None,
                "stderr": f"timed out after {timeout:.0f} s\n{stderr[-2000:]}",
                "data_limit": data_limit,
            }
    if completed.returncode != 0:
        return {
            "method": method,
            "failed": True,
            "returncode": completed.returncode,
            "stderr": completed.stderr[-2000:],
            "data_limit": data_limit,
        }
    return json.loads(completed.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
