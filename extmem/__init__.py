"""extmem: train XGBoost on parquet datasets larger than RAM, with bounded, measured memory."""

from ._version import __version__
from .cluster import ClusterError, train_distributed
from .dataset import SPLICE_LABELS, Dataset, Holdout
from .errors import (
    CacheError,
    ExtmemError,
    FeatureValueError,
    FilterError,
    InputPathError,
    LabelError,
    NoRowsError,
    OptionError,
    SchemaError,
    ShardReadError,
)
from .estimators import XGBClassifier, XGBRegressor
from .incremental import IncrementalClassifier, IncrementalModel, train_incremental
from .kmers import KmerEncoding
from .layout import FeatureLayout
from .matrix import dmatrix, matrix_info
from .metrics import StreamingMetrics
from .pack import pack
from .predict import Model, evaluate, predict
from .prune import PruneOptions, prune
from .synth import SynthOptions, synth
from .train import TrainResult, resume, train

__all__ = [
    "SPLICE_LABELS",
    "CacheError",
    "ClusterError",
    "Dataset",
    "ExtmemError",
    "FeatureLayout",
    "FeatureValueError",
    "FilterError",
    "Holdout",
    "IncrementalClassifier",
    "IncrementalModel",
    "InputPathError",
    "KmerEncoding",
    "LabelError",
    "Model",
    "NoRowsError",
    "OptionError",
    "PruneOptions",
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
    "pack",
    "predict",
    "prune",
    "resume",
    "synth",
    "train",
    "train_distributed",
    "train_incremental",
]
