"""Run one benchmark method in this process and print its measurements as JSON on the last line.

python -m bench.worker METHOD DATA ROUNDS [OPTIONS_JSON] [--samples]

With ``--samples`` the output also holds RSS and anonymous RSS over time, ``[seconds, rss, anon]``.
The clock starts once the libraries every method uses are imported (XGBoost imports scikit-learn
and pandas: about 1.3 s on the 2-core machine), so a method's seconds are its own work, as the
baseline's stage timings (XGBoost's own compute) are. extmem is imported first, as its docs ask
of a program run under a data limit: it then sets up the allocators before the others load
(numpy first would start OpenBLAS threads that hold about 90 MiB of the limit for the whole run).
"""

from __future__ import annotations

import json
import sys
import time

# isort: off
import extmem  # noqa: F401 - first (see above)
import numpy  # noqa: F401 - imported before the clock starts (see above)
import pyarrow.parquet  # noqa: F401
import scipy.sparse  # noqa: F401
import xgboost  # noqa: F401
# isort: on

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
