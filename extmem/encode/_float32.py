"""float64 feature values -> float32, the type XGBoost trains on, refusing what float32 cannot hold."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from extmem.errors import FeatureValueError


def as_float32(values: np.ndarray, column_of: Callable[[int], str], where: str) -> np.ndarray:
    """``values`` as float32; a finite value beyond float32's range is an error naming its column (``column_of(i)`` for value ``i``)."""
    if values.dtype == np.float32:
        return values
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = values.astype(np.float32)
        overflow = np.isinf(narrow) & np.isfinite(values)
    if overflow.any():
        first = int(np.flatnonzero(overflow.ravel())[0])
        msg = (
            f"The feature column {column_of(first)!r} holds {values.ravel()[first]:g} in {where}, beyond float32's range (about ±3.4e38); "
            "XGBoost trains on float32 values."
        )
        raise FeatureValueError(msg)
    return narrow
