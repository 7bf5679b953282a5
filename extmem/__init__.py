"""extmem: train XGBoost on parquet datasets larger than RAM, with bounded, measured memory.

The public API is the names below; every module under ``extmem`` whose name starts with an
underscore is private. Names are imported on first use, so ``import extmem`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from extmem._allocators import check_room_for_libraries, prepare_for_data_limit
from extmem._version import __version__

prepare_for_data_limit()

_EXPORTS: dict[str, str] = {
    "CacheError": "extmem.errors",
    "ExtmemError": "extmem.errors",
    "FeatureValueError": "extmem.errors",
    "FilterError": "extmem.errors",
    "InputPathError": "extmem.errors",
    "LabelError": "extmem.errors",
    "NoRowsError": "extmem.errors",
    "OptionError": "extmem.errors",
    "SchemaError": "extmem.errors",
    "ShardReadError": "extmem.errors",
    "Preset": "extmem._presets",
    "SPLICE_SITES": "extmem._presets",
    "Dataset": "extmem.read._dataset",
    "Holdout": "extmem.read._dataset",
    "KmerEncoding": "extmem._layout",
    "FeatureLayout": "extmem._layout",
    "dmatrix": "extmem.xgb._matrix",
    "DMatrix": "extmem.xgb._matrix",
    "ExtMemQuantileDMatrix": "extmem.xgb._matrix",
    "QuantileDMatrix": "extmem.xgb._matrix",
    "matrix_info": "extmem.xgb._matrix",
    "TrainResult": "extmem.run._xgboost",
    "train": "extmem.run._xgboost",
    "resume": "extmem.run._xgboost",
    "cross_validate": "extmem.run._cv",
    "IncrementalClassifier": "extmem.run._incremental_estimator",
    "IncrementalModel": "extmem.score._incremental_model",
    "train_incremental": "extmem.run._incremental",
    "ClusterError": "extmem.run._distributed",
    "train_distributed": "extmem.run._distributed",
    "XGBClassifier": "extmem.run._estimators",
    "XGBRegressor": "extmem.run._estimators",
    "XGBRanker": "extmem.run._estimators",
    "XGBRFClassifier": "extmem.run._estimators",
    "XGBRFRegressor": "extmem.run._estimators",
    "Model": "extmem.score._model",
    "predict": "extmem.score._predict",
    "evaluate": "extmem.score._evaluate",
    "explain": "extmem.score._explain",
    "StreamingMetrics": "extmem.score._metrics",
    "pack": "extmem.tools._pack",
    "PruneOptions": "extmem.tools._prune",
    "prune": "extmem.tools._prune",
    "SynthOptions": "extmem.tools._synth",
    "synth": "extmem.tools._synth",
}

__all__ = [
    "SPLICE_SITES",
    "CacheError",
    "ClusterError",
    "DMatrix",
    "Dataset",
    "ExtMemQuantileDMatrix",
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
    "Preset",
    "PruneOptions",
    "QuantileDMatrix",
    "SchemaError",
    "ShardReadError",
    "StreamingMetrics",
    "SynthOptions",
    "TrainResult",
    "XGBClassifier",
    "XGBRFClassifier",
    "XGBRFRegressor",
    "XGBRanker",
    "XGBRegressor",
    "__version__",
    "cross_validate",
    "dmatrix",
    "evaluate",
    "explain",
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'extmem' has no attribute {name!r}"
        raise AttributeError(msg)
    check_room_for_libraries()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from extmem._layout import FeatureLayout, KmerEncoding
    from extmem._presets import SPLICE_SITES, Preset
    from extmem.errors import (
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
    from extmem.read._dataset import Dataset, Holdout
    from extmem.run._cv import cross_validate
    from extmem.run._distributed import ClusterError, train_distributed
    from extmem.run._estimators import XGBClassifier, XGBRanker, XGBRegressor, XGBRFClassifier, XGBRFRegressor
    from extmem.run._incremental import train_incremental
    from extmem.run._incremental_estimator import IncrementalClassifier
    from extmem.run._xgboost import TrainResult, resume, train
    from extmem.score._evaluate import evaluate
    from extmem.score._explain import explain
    from extmem.score._incremental_model import IncrementalModel
    from extmem.score._metrics import StreamingMetrics
    from extmem.score._model import Model
    from extmem.score._predict import predict
    from extmem.tools._pack import pack
    from extmem.tools._prune import PruneOptions, prune
    from extmem.tools._synth import SynthOptions, synth
    from extmem.xgb._matrix import DMatrix, ExtMemQuantileDMatrix, QuantileDMatrix, dmatrix, matrix_info
