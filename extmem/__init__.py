"""extmem: train XGBoost on parquet datasets larger than RAM, with bounded, measured memory."""

from ._version import __version__
from .dataset import SPLICE_LABELS, Dataset, Holdout
from .errors import ExtmemError, FilterError, InputPathError, LabelError, NoRowsError, OptionError, SchemaError, ShardReadError
from .estimators import XGBClassifier, XGBRegressor
from .layout import FeatureLayout
from .matrix import dmatrix, matrix_info
from .metrics import StreamingMetrics
from .predict import Model, evaluate, predict
from .synth import SynthOptions, synth
from .train import TrainResult, resume, train

__all__ = [
    "SPLICE_LABELS",
    "Dataset",
    "ExtmemError",
    "FeatureLayout",
    "FilterError",
    "Holdout",
    "InputPathError",
    "LabelError",
    "Model",
    "NoRowsError",
    "OptionError",
    "SchemaError",
    "ShardReadError",
    "StreamingMetrics",
    "SynthOptions",
    "TrainResult",
    "XGBClassifier",
    "XGBRegressor",
    "__version__",
    "dmatrix",
    "evaluate",
    "matrix_info",
    "predict",
    "resume",
    "synth",
    "train",
]
