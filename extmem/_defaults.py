"""Default values, limits and file names shared by the library and the command line.

Plain constants only, so the command line can show them in ``--help`` without importing
XGBoost, pyarrow or scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Reading and pages
DEFAULT_BATCH_ROWS = 2048
MAX_BATCH_ROWS = 1 << 20
DEFAULT_PAGE_ROWS = 8192
DEFAULT_SKETCH_ROWS = 32768
DEFAULT_PREFETCH = 1
DEFAULT_MAX_BIN = 256
"""XGBoost's default ``max_bin``."""
CACHE_KINDS: tuple[str, ...] = ("auto", "memory", "disk")
DEFAULT_MAX_CATEGORIES = 1024
MAX_K = 12
"""Longest k-mer counted from sequences."""
MAX_EXACT_K = 8
"""Longest k-mer with one feature per k-mer (4**8 = 65,536 features); longer ones must be hashed."""

# Training
DEFAULT_ROUNDS = 100
DEFAULT_EXPLAIN_TOP = 10
DEFAULT_XGBOOST_PARAMS: Mapping[str, Any] = {"tree_method": "hist", "eta": 0.1, "max_depth": 6, "seed": 0}
DEFAULT_EPOCHS = 5
INCREMENTAL_MODELS: tuple[str, ...] = ("sgd_logistic", "sgd_hinge", "passive_aggressive", "naive_bayes")
"""The ``model`` choices of the incremental trainer (``xgboost`` is the tree trainer)."""

# Writing
DEFAULT_ROW_GROUP_ROWS = 65536
OUTPUT_ROW_GROUP_BYTES = 32 * 2**20
"""Most bytes an output row group holds: wide output rows (every contribution of thousands of features, long kept
sequences) make row groups of fewer rows, so an output sink's memory stays bounded whatever its rows hold..."""
OUTPUT_CHUNK_BYTES = 8 * 2**10
"""...but never under this per column: the writer keeps about 1 KiB of metadata per column chunk until the file closes."""


def output_row_group_bytes(columns: int) -> int:
    """Most bytes an output row group of ``columns`` columns holds."""
    return max(OUTPUT_ROW_GROUP_BYTES, columns * OUTPUT_CHUNK_BYTES)


BOOSTER_MODEL_FILE = "model.ubj"
"""An XGBoost model in a model folder."""
INCREMENTAL_MODEL_FILE = "model.npz"
"""An incremental (scikit-learn) model in a model folder."""
REPORT_FILE = "report.json"
"""The run report written beside a trained model."""
CHECKPOINT_FILE = "checkpoint.extmem"
"""A resumable checkpoint in a model folder."""
MODEL_FOLDER_FILES: tuple[str, ...] = (BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE, REPORT_FILE, CHECKPOINT_FILE)
"""Every file name extmem writes in a model folder."""

# Pruning
DEFAULT_CORR_THRESHOLD = 0.99
DEFAULT_SAMPLE_ROWS_PER_SHARD = 25_000
DEFAULT_MAX_SAMPLE_ROWS = 50_000

# Synthetic data
DEFAULT_SYNTH_SHARDS = 4
DEFAULT_SYNTH_K = 6
DEFAULT_SYNTH_SEQ_LEN = 101
DEFAULT_SYNTH_ROW_GROUP_ROWS = 4096
