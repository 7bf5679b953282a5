"""The memory plan's cost model: what each part of a run holds, with measured constants.

The plan is a model of the process's data size, which is what ``prlimit --data`` (RLIMIT_DATA)
caps: heap and private writable mappings, resident or not. It adds

* a fixed part: what the process holds now, plus the stacks of the threads XGBoost and pyarrow
  start and the runtime's reservations (BLAS buffers, allocator arenas);
* the footer of the shard being read, parsed (the largest one: many row groups of many columns
  make footers of tens of MiB, several times that once parsed);
* decoding one batch: a multiple of the Arrow bytes per row measured on the first row group;
* building one page: the CSR bytes of a page, held by extmem, by the prefetch queue and by
  XGBoost while it quantizes the page;
* training state: gradients, predictions and row partitions, per row and class;
* the quantile sketch, while XGBoost builds its cuts before the pages: per feature, a summary
  that grows with the feature's values (see :func:`sketch_bytes`); when the sketch of all rows
  does not fit, the cuts come from the largest uniform sample of rows that does;
* the feature space: XGBoost keeps state per histogram bin for every external-memory page
  (so many small pages cost more than a few large ones) and a gradient histogram per tree
  node it caches while it grows a tree (the cost of very wide, hashed feature spaces);
* the quantized matrix itself when it is kept in memory, or the pages XGBoost keeps in flight
  when it reads them from the disk cache.

Passes that write a table (predictions, explanations, rewritten shards) also hold one row group
of it (see :func:`sink_bytes`).

The constants were measured on a 2-core Linux machine (XGBoost 3.2, pyarrow 26) on wide 6-mer
shards (``python -m bench.budget``); they err high for resident memory, which stays well under
the data size that the kernel's limit counts.
"""

from __future__ import annotations

from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_ROW_GROUP_ROWS, output_row_group_bytes
from extmem._units import KiB, MiB

DECODE_BYTES_PER_ARROW_BYTE = 4
"""Peak bytes while pyarrow decodes a batch, per byte of the decoded Arrow columns (measured ~3.6)."""
LARGE_GROUP_BATCHES = 4
"""A row group of more rows than this many batches, read in row batches, is a large one (see ``decode_bytes``)."""
LARGE_GROUP_DECODE_BYTES_PER_ARROW_BYTE = 7
LARGE_GROUP_BYTES_PER_COLUMN = 40 * KiB
"""Decoding row batches of a large row group takes more, per batch and per column read: pyarrow keeps a reader per column
for the whole row group and glibc's heap fragments around them. One shard of 120,000 rows in one row group of 4,099
columns (as ``DataFrame.to_parquet`` writes one) peaked at 660 MiB of data size in batches of 2,048 rows and 412 in
batches of 1,024 (decoding and encoding), against 306 and 200 in row groups of 4,096 rows."""
READER_BYTES_PER_COLUMN = 10 * KiB
"""Row batches of every column hold a reader per column, whatever the rows: 16 rows of 65,536 columns took 666 MiB of
data size with the system allocator (10 KiB a column), 4,096 columns 32 MiB; column parts of a whole row group do not."""
PAGE_BYTES_PER_VALUE = 28
"""Bytes per stored value while a page is built: blocks and their concatenation (2 x 8) and XGBoost's copy (12)."""
QUEUED_PAGE_BYTES_PER_VALUE = 8
"""Bytes per stored value of a page waiting in the prefetch queue (float32 value + int32 column)."""
MATRIX_BYTES_PER_VALUE = 10
"""Peak bytes per stored value while XGBoost builds its in-memory quantized matrix: 32-bit bin indices
for sparse data, grown batch by batch (measured 9.8 on 640k wide rows)."""
PAGE_MATRIX_BYTES_PER_VALUE = 4
"""Bytes per stored value of one quantized page read back from the disk cache."""
MATRIX_BYTES_PER_ROW = 16
PAGES_IN_FLIGHT = 3
"""Quantized pages XGBoost holds while it trains from the disk cache."""
TRAINING_BYTES_PER_ROW = 8
TRAINING_BYTES_PER_ROW_AND_OUTPUT = 24
"""Gradient pairs (8), the per-class gradient copy, prediction cache and metric buffers (16), per row and model output:
measured 65 bytes per row for 3 classes training alone, 77 with the training metrics (1M rows, XGBoost 3.2)."""
RUNTIME_RESERVE = 320 * MiB
"""Writable mappings beyond the heap and thread stacks: BLAS thread buffers (181 MiB measured) and allocator
segments. Three 640k-row runs under a 1 GiB data limit with 2,048-row batches peaked at 866, 998 and 1,009 MiB
of data where the plan, with 64 MiB less reserve, said 963-972 MiB."""
LIMITED_RUNTIME_RESERVE = 64 * MiB
"""The same with two glibc arenas and pyarrow on the system allocator (as the command line sets up): 925k rows of
1,050 columns peaked at 600 MiB of data in 29 pages (plan: 652 MiB) and 924 MiB in 452 (plan: 825 MiB)."""
PAGE_STATE_BYTES_PER_BIN = 90
"""Bytes XGBoost keeps per histogram bin (as the probe estimates them) for each external-memory page: 925k rows of
1,050 columns (8.9k bins estimated, 10.2k actual) peaked 324 MiB higher in 452 pages of 2,048 rows than in 29 of 32,768."""
HISTOGRAM_BYTES_PER_BIN = 16
"""One gradient histogram: a pair of doubles per bin."""
HISTOGRAM_NODES = 34
"""Histograms XGBoost holds at its peak while it grows a tree (default depth 6): 20k rows hashed to 4,096 ... 2M
features (15k to 4.0M bins) peaked at data sizes 5-10 % under the plan with this figure (table in docs/memory.md)."""
UNBUDGETED_PAGE_BYTES = 256 * MiB
"""Unbudgeted runs keep the bytes of building one page under this."""
UNBUDGETED_PASS_BYTES = 256 * MiB
"""Unbudgeted passes without a matrix keep what they hold per batch row (explain's contributions) under this."""
UNBUDGETED_SKETCH_BYTES = 256 * MiB
"""Unbudgeted runs keep XGBoost's quantile sketch under this: its own cuts from all rows for narrow data (1M rows
of 28 dense features: 64 MiB), a sample for wide data (all 640k rows of 4,122 k-mer columns would take about 1.5 GiB)."""
FOOTER_BYTES_PER_SERIALIZED_BYTE = 13
"""Data size a parsed parquet footer takes per byte of its serialized form (measured: 300 MiB for a 23.6 MiB footer of 50 row groups x 4,129 columns, of which 204 MiB resident)."""

SKETCH_FACTOR = 8
"""XGBoost's sketch keeps ``SKETCH_FACTOR * max_bin`` summary entries per level (its ``WQuantileSketch::kFactor``)."""
SKETCH_ENTRY_BYTES = 16
SKETCH_QUEUE_ENTRY_BYTES = 8
SKETCH_OVERHEAD = 1.25
"""Temporary summaries while XGBoost merges and prunes: 500 dense features peaked 1.5, 0.4 and 2.0 MiB per feature higher
without cuts given than with them at 524k, 131k and 1M rows, where the summaries alone are 1.4, 0.7 and 1.8 MiB."""
MIN_SKETCH_ROWS = 4096


def footer_bytes(profile: DataProfile) -> int:
    return FOOTER_BYTES_PER_SERIALIZED_BYTE * profile.footer_bytes


def decode_bytes(profile: DataProfile, batch_rows: int, whole_rows: int = 0) -> int:
    """Peak bytes of decoding a batch; row groups of up to ``whole_rows`` rows are read whole, in column parts, not in batches."""
    arrow = profile.arrow_bytes_per_row * batch_rows
    if profile.row_group_rows > max(LARGE_GROUP_BATCHES * batch_rows, whole_rows):
        return int(LARGE_GROUP_DECODE_BYTES_PER_ARROW_BYTE * arrow + LARGE_GROUP_BYTES_PER_COLUMN * profile.columns)
    readers = READER_BYTES_PER_COLUMN * profile.columns if profile.row_group_rows > whole_rows else 0  # row batches of every column
    return int(DECODE_BYTES_PER_ARROW_BYTE * arrow + readers)


def page_bytes(profile: DataProfile, page_rows: int, prefetch: int) -> int:
    per_value = PAGE_BYTES_PER_VALUE + prefetch * QUEUED_PAGE_BYTES_PER_VALUE
    return int(per_value * profile.stored_values_per_row * page_rows)


def matrix_bytes(profile: DataProfile, cache: str, page_rows: int) -> int:
    if cache == "memory":
        return int(profile.rows * (MATRIX_BYTES_PER_VALUE * profile.stored_values_per_row + MATRIX_BYTES_PER_ROW))
    return int(PAGES_IN_FLIGHT * page_rows * (PAGE_MATRIX_BYTES_PER_VALUE * profile.stored_values_per_row + MATRIX_BYTES_PER_ROW))


def feature_space_bytes(profile: DataProfile, page_rows: int) -> int:
    """Per-bin state of every page, and the histograms of the tree nodes XGBoost caches."""
    pages = -(-profile.rows // page_rows)
    return profile.bins * (pages * PAGE_STATE_BYTES_PER_BIN + HISTOGRAM_NODES * HISTOGRAM_BYTES_PER_BIN)


def sketch_bytes(profile: DataProfile, rows: int) -> int:
    """XGBoost's quantile sketch of ``rows`` rows: per feature a ``WQuantileSketch`` sized for the feature's values.

    Its ``nlevel`` levels of ``limit_size`` entries each, the smallest with ``2**nlevel * limit_size``
    at least the feature's values, and an input queue of ``2 * limit_size``; all features are
    taken to be as dense as the average one.
    """
    if profile.features == 0 or rows == 0:
        return 0
    values = max(1, round(rows * profile.stored_values_per_row / profile.features))
    per_level = SKETCH_FACTOR * profile.max_bin
    levels = 1
    while True:
        limit = min(values, levels * per_level + 1)
        if (1 << levels) * limit >= values:
            break
        levels += 1
    per_feature = limit * (2 * SKETCH_QUEUE_ENTRY_BYTES + levels * SKETCH_ENTRY_BYTES)
    return int(SKETCH_OVERHEAD * profile.features * per_feature)


SINK_COPIES = 3
"""An output sink's row group in memory: its pending batches, their joined copy and the writer's encoding buffers."""
WRITER_BYTES_PER_CHUNK = 2 * KiB
"""pyarrow's parquet writer keeps every column chunk's metadata until the file closes, then serializes it: 12,372 float
columns in 40 row groups held 455 MiB before closing and peaked at 950 MiB while closing (about 1 and 2 KiB a chunk)."""


def sink_bytes(row_bytes: float, rows: int, columns: int, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS) -> int:
    """What an output sink of ``rows`` rows of ``row_bytes`` bytes in ``columns`` columns holds: one row group (bounded in
    rows and in bytes), and the metadata of every row group, which the writer keeps until the file closes."""
    group_bytes = output_row_group_bytes(columns)
    groups = max(-(-rows // row_group_rows), int(rows * row_bytes // group_bytes) + 1)
    return int(min(row_group_rows * row_bytes, group_bytes) * SINK_COPIES + groups * columns * WRITER_BYTES_PER_CHUNK)
