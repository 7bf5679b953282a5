"""extmem: train XGBoost on parquet datasets larger than RAM, with bounded, measured memory."""

from ._version import __version__
from .dataset import SPLICE_LABELS, Dataset
from .errors import ExtmemError, FilterError, InputPathError, LabelError, NoRowsError, OptionError, SchemaError, ShardReadError
from .layout import FeatureLayout
from .matrix import dmatrix, matrix_info
from .synth import SynthOptions, synth
from .train import TrainResult, train

__all__ = [
    "SPLICE_LABELS",
    "Dataset",
    "ExtmemError",
    "FeatureLayout",
    "FilterError",
    "InputPathError",
    "LabelError",
    "NoRowsError",
    "OptionError",
    "SchemaError",
    "ShardReadError",
    "SynthOptions",
    "TrainResult",
    "__version__",
    "dmatrix",
    "matrix_info",
    "synth",
    "train",
]
