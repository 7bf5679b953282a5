"""Exceptions raised by extmem. Every message names the file, column or option at fault."""

from __future__ import annotations

import numbers
import re

_ENDED_TWICE = re.compile(r"(?:(?<=[?!])|(?<=[^.]\.))\.$")
"""A final period after a sentence that had ended ("...: File too large.." or "...column?."), not an ellipsis's."""


class ExtmemError(ValueError):
    """Base class for errors caused by user input (data, paths, options).

    ``options`` lists the library options the message names as ``'name'``; the command line
    shows each as its flag instead (``'valid_fraction'`` becomes ``--valid-fraction``).
    """

    def __init__(self, message: str, *, options: tuple[str, ...] = ()) -> None:
        super().__init__(_ENDED_TWICE.sub("", message))  # a quoted reason that ends a sentence itself ends it once
        self.options = (options,) if isinstance(options, str) else tuple(options)


class OptionError(ExtmemError):
    """An option or flag has an invalid value."""


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer, Python's or numpy's (``np.int64`` from a grid of options), and not a boolean."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy's booleans are no Integral


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number, Python's or numpy's (``np.float32``), and not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_seed(value: object, option: str = "seed") -> None:
    """Raise OptionError naming ``option`` unless ``value`` is a non-negative integer (what numpy's generators take)."""
    if not is_integer(value) or value < 0:  # type: ignore[operator]
        msg = f"The '{option}' option must be a non-negative integer. Got {value!r} instead."
        raise OptionError(msg, options=(option,))


def check_positive_int(value: object, option: str, *, allow_none: bool = False) -> None:
    """Raise OptionError naming ``option`` unless ``value`` is a positive integer (or None when allowed)."""
    if value is None and allow_none:
        return
    if not is_integer(value) or value <= 0:  # type: ignore[operator]
        msg = f"The '{option}' option must be a positive integer. Got {value!r} instead."
        raise OptionError(msg, options=(option,))


_XGBOOST_LOCATION = re.compile(r"^\[[\d:]+\] (?:WARNING: )?\S+:\d+: ")
"""The time and source line XGBoost puts before a message: ``[20:49:34] /__w/xgboost/src/objective/regression_obj.cu:114: ``."""
_FAILED_CHECK = re.compile(r"^Check failed: (?P<condition>.*?)\s?: (?P<reason>\S.*)$")


def xgboost_reason(error: BaseException | Warning | str) -> str:
    """The first line of an XGBoost error (or warning), without its time, source line and the condition of a check that says why."""
    line = next((line for line in str(error).splitlines() if line.strip()), "unknown error")
    line = _XGBOOST_LOCATION.sub("", line.strip())
    failed = _FAILED_CHECK.match(line)
    return failed["reason"] if failed else line.removesuffix(":").strip()


class InputPathError(ExtmemError):
    """A dataset path does not exist or holds no parquet files."""


class ShardReadError(ExtmemError):
    """A parquet shard cannot be read (corrupt, truncated, not parquet)."""


_OUT_OF_MEMORY = ("bad_alloc", "malloc of size", "out of memory", "Cannot allocate memory")


def read_failure(shard: str, exc: BaseException, where: str = "") -> Exception:
    """The error to raise when reading ``shard`` failed: MemoryError when memory ran out, else ShardReadError."""
    if isinstance(exc, MemoryError) or any(marker in str(exc) for marker in _OUT_OF_MEMORY):
        return MemoryError(f"reading {where}{shard!r}: {exc}")
    return ShardReadError(f"Cannot read {where}the parquet shard {shard!r}: {exc}")


class SchemaError(ExtmemError):
    """Columns are missing, of an unusable type, or conflict between shards."""


class LabelError(ExtmemError):
    """The label column is missing, null, or holds values outside the label map."""


class FilterError(ExtmemError):
    """A row-filter expression cannot be parsed or names an unknown column."""


class NoRowsError(ExtmemError):
    """The dataset, after filtering, holds no rows."""


class FeatureValueError(ExtmemError):
    """A feature holds a value XGBoost cannot train on (infinity)."""


class CacheError(ExtmemError):
    """The external-memory cache cannot be written (no room, file-size limit, I/O error)."""
