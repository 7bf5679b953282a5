"""Run one benchmark method in this process and print its measurements as JSON on the last line.

python -m bench.worker METHOD DATA ROUNDS [OPTIONS_JSON] [--samples]

With ``--samples`` the output also holds RSS and anonymous RSS over time, ``[seconds, rss, anon]``.
"""

from __future__ import annotations

import json
import sys
import time

from extmem.diagnostics import MemoryMonitor

from .methods import METHODS


def main() -> None:
    method, data, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    keep_samples = "--samples" in sys.argv[5:]
    started = time.perf_counter()
    with MemoryMonitor(interval=0.02, keep_samples=keep_samples) as monitor:
        result = METHODS[method](data, rounds, options)
    result.update(
        method=method,
        seconds=round(time.perf_counter() - started, 3),
        peak_rss_bytes=monitor.peak_rss_bytes,
        peak_anon_bytes=monitor.peak_anon_bytes,
        peak_data_bytes=monitor.peak_data_bytes,
    )
    if keep_samples:
        result["samples"] = [[round(s.seconds, 3), s.rss_bytes, s.anon_bytes] for s in monitor.samples]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
