"""Training from object storage against training from local disk: the same shards, a real S3-compatible server on 127.0.0.1.

    python -m bench.remote [--rows 160000] [--shards 16] [--k 6] [--rounds 20] [--prefetch 0,2] [--repeats 1]

Starts moto's S3 server on 127.0.0.1 behind a counting TCP proxy, uploads the generated shards,
then runs ``extmem train --cache disk`` on the local folder and on the ``s3://`` prefix, each in its
own subprocess (methods alternating), with each ``--prefetch`` value. Reports wall time and peak
RSS side by side, whether the models are identical, and the bytes the store sent per run against
the bytes of the column chunks the run needs (its projected feature, label and filter columns in
every row group, plus the footers) and the bytes of the whole shards. Writes bench/results/remote.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .harness import RESULTS, ensure_dataset, median_of, mib, write_json

BUCKET = "extmem-bench"


class CountingProxy:
    """A TCP proxy to ``target`` that counts the bytes the target sends back (what a store serves)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.received = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
                if counted:
                    with self._lock:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> int:
        """Bytes received since the last call."""
        with self._lock:
            received, self.received = self.received, 0
        return received


def _needed_bytes(data: Path) -> dict[str, int]:
    """Bytes of the column chunks a splice-sites training run reads (features, label), of the footers, and of the shards."""
    import pyarrow.parquet as pq

    import extmem
    from extmem.read._selection import select_dataset

    selection = select_dataset(extmem.Dataset(data, **extmem.SPLICE_SITES.options()))
    wanted = set(selection.layout.names) | set(selection.extras)
    needed = footers = total = 0
    for shard in selection.schema.shards:
        metadata = pq.ParquetFile(shard).metadata
        footers += metadata.serialized_size
        total += os.path.getsize(shard)
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for column in range(row_group.num_columns):
                chunk = row_group.column(column)
                if chunk.path_in_schema.split(".")[0] in wanted:
                    needed += chunk.total_compressed_size
    return {"projected_column_bytes": needed, "footer_bytes": footers, "shard_bytes": total}


def _train(source: str, out: Path, rounds: int, prefetch: int, environment: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "extmem", "train", source, "--out", str(out), "--rounds", str(rounds), "--cache", "disk"]
    command += ["--prefetch", str(prefetch), "--no-progress", "--overwrite"]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        return {"failed": True, "stderr": run.stderr[-2000:]}
    report = json.loads((out / "report.json").read_text())
    model = hashlib.sha256((out / "model.ubj").read_bytes()).hexdigest()
    return {"seconds": seconds, "peak_rss_bytes": report["peak_rss_bytes"], "peak_anon_bytes": report["peak_anon_bytes"], "model": model}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=160_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--prefetch", default="0,2", help="comma-separated --prefetch values")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=RESULTS / "data")
    parser.add_argument("--out", type=Path, default=RESULTS / "remote.json")
    args = parser.parse_args(argv)
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    data = ensure_dataset(args.data_dir / f"rounds-k{args.k}-{args.rows}x{args.shards}", args.rows, args.shards, args.k)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        proxy = CountingProxy(server.get_host_and_port())
        endpoint = f"http://127.0.0.1:{proxy.port}"
        secrets = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        store = pafs.S3FileSystem(
            endpoint_override=endpoint, allow_bucket_creation=True, access_key="bench", secret_key="bench", region="us-east-1"
        )
        store.create_dir(BUCKET)
        for shard in sorted(data.glob("*.parquet")):
            with open(shard, "rb") as source, store.open_output_stream(f"{BUCKET}/data/{shard.name}") as target:
                target.write(source.read())
        proxy.take()
        environment = {**os.environ, **secrets, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
        sources = {"local": str(data), "s3": f"s3://{BUCKET}/data/"}
        prefetches = [int(value) for value in args.prefetch.split(",")]
        runs: dict[str, list[dict[str, Any]]] = {f"{name} prefetch {p}": [] for p in prefetches for name in sources}
        with tempfile.TemporaryDirectory(prefix="extmem-bench-remote-") as scratch:
            for _ in range(args.repeats):
                for prefetch in prefetches:
                    for name, source in sources.items():
                        run = _train(source, Path(scratch) / "model", args.rounds, prefetch, {**environment, "TMPDIR": scratch})
                        run["store_bytes"] = proxy.take()
                        runs[f"{name} prefetch {prefetch}"].append(run)
                        shown = "failed" if run.get("failed") else f"{run['seconds']:.1f} s, {mib(run['peak_rss_bytes'])}"
                        print(f"{name:>6} prefetch {prefetch}: {shown}, store sent {run['store_bytes'] / 2**20:,.1f} MiB", flush=True)
    finally:
        server.stop()
    needed = _needed_bytes(data)
    summary = {
        name: {key: median_of(done, key) for key in ("seconds", "peak_rss_bytes", "store_bytes")}
        if not any(r.get("failed") for r in done)
        else None
        for name, done in runs.items()
    }
    models = {run["model"] for done in runs.values() for run in done if not run.get("failed")}
    payload = {
        "rows": args.rows,
        "rounds": args.rounds,
        **needed,
        "summary": summary,
        "same_model_everywhere": len(models) == 1,
        "ratios": {
            prefetch: {
                "seconds": summary[f"s3 prefetch {prefetch}"]["seconds"] / summary[f"local prefetch {prefetch}"]["seconds"],
                "peak_rss": summary[f"s3 prefetch {prefetch}"]["peak_rss_bytes"] / summary[f"local prefetch {prefetch}"]["peak_rss_bytes"],
                "store_bytes_to_projected": summary[f"s3 prefetch {prefetch}"]["store_bytes"] / needed["projected_column_bytes"],
            }
            for prefetch in prefetches
            if summary[f"s3 prefetch {prefetch}"] and summary[f"local prefetch {prefetch}"]
        },
        "runs": runs,
    }
    write_json(args.out, payload)
    print(
        f"projected columns {needed['projected_column_bytes'] / 2**20:,.1f} MiB, footers {needed['footer_bytes'] / 2**20:,.1f} MiB, "
        f"shards {needed['shard_bytes'] / 2**20:,.1f} MiB; same model everywhere: {payload['same_model_everywhere']}"
    )
    for prefetch, ratio in payload["ratios"].items():
        print(
            f"prefetch {prefetch}: s3/local wall {ratio['seconds']:.2f}x, peak RSS {ratio['peak_rss']:.3f}x, "
            f"store bytes / projected bytes {ratio['store_bytes_to_projected']:.2f}"
        )
    return payload


if __name__ == "__main__":
    main()
