"""Run one benchmark method in this process and print its measurements as JSON on the last line.

python -m bench.worker METHOD DATA ROUNDS [OPTIONS_JSON]
"""

from __future__ import annotations

import json
import sys
import time

from extmem.memory import MemoryMonitor

from .methods import METHODS


def main() -> None:
    method, data, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    started = time.perf_counter()
    with MemoryMonitor(interval=0.02) as monitor:
        result = METHODS[method](data, rounds, options)
    result.update(
        method=method,
        seconds=round(time.perf_counter() - started, 3),
        peak_rss_bytes=monitor.peak_rss_bytes,
        peak_anon_bytes=monitor.peak_anon_bytes,
        peak_data_bytes=monitor.peak_data_bytes,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
