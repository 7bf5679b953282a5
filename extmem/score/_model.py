"""`Model`: a booster with the feature layout it was trained on, loaded only once its checksum holds.

A model folder's ``report.json`` records the SHA-256 of the model file it was written with, and
loading checks it before XGBoost parses a byte: a damaged file is one clear error, not a crash
inside XGBoost's parser.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._defaults import BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE, REPORT_FILE
from extmem._folders import PrivateFolder
from extmem._layout import LAYOUT_ATTRIBUTE, FeatureLayout
from extmem._sink import sha256
from extmem._stores import child, download_file, is_remote, local_path, remote_exists, remote_names
from extmem.errors import OptionError
from extmem.score._metrics import task_of
from extmem.score._ranking import DEFAULT_RANKING_METRICS, RankingMetrics
from extmem.score._scorer import Scorer


def verified_model_bytes(file: Path) -> bytes:
    """The bytes of a model file, refused when the ``report.json`` beside it records another checksum for it."""
    try:
        content = file.read_bytes()
    except OSError as exc:
        msg = f"Cannot read the model {str(file)!r}: {exc.strerror or exc}."
        raise OptionError(msg) from None
    try:
        recorded = json.loads((file.parent / REPORT_FILE).read_text()).get("checksums", {}).get(file.name)
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != sha256(content):
        msg = f"The model {str(file)!r} is corrupt: its checksum does not match the one {REPORT_FILE} recorded when it was written."
        raise OptionError(msg)
    return content


@dataclass(frozen=True)
class Model(Scorer):
    """A booster with the feature layout it was trained on; scores parquet datasets or in-memory arrays.

    ``iteration_range`` selects trees as in ``Booster.predict`` (default: all).
    """

    booster: xgb.Booster
    layout: FeatureLayout
    iteration_range: tuple[int, int] = (0, 0)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        """Load ``model.ubj`` from a model folder written by ``extmem train`` (or a model file), local or in object storage."""
        if is_remote(os.fspath(path)):
            with _downloaded(os.fspath(path)) as local:
                return cls.load(local)
        file = Path(local_path(os.fspath(path)))
        if file.is_dir():
            file = file / BOOSTER_MODEL_FILE
        if not file.is_file():
            msg = f"No model at {os.fspath(path)!r}: expected a folder holding {BOOSTER_MODEL_FILE} (written by 'extmem train') or a model file."
            raise OptionError(msg)
        content = verified_model_bytes(file)
        try:
            booster = xgb.Booster(model_file=bytearray(content))
        except xgb.core.XGBoostError as exc:
            msg = f"Cannot load the model {str(file)!r}: {str(exc).splitlines()[0]}"
            raise OptionError(msg) from None
        return cls.from_booster(booster, str(file))

    @classmethod
    def from_booster(cls, booster: xgb.Booster, where: str = "the booster") -> Model:
        """Wrap a booster trained by extmem (it carries the ``extmem_layout`` attribute)."""
        text = booster.attr(LAYOUT_ATTRIBUTE)
        if text is None:
            msg = f"{where} has no {LAYOUT_ATTRIBUTE!r} attribute: it was not trained by extmem, so its feature encoding is unknown."
            raise OptionError(msg)
        return cls(booster, FeatureLayout.from_json(text, where))

    @cached_property
    def objective(self) -> str:
        return str(json.loads(self.booster.save_config())["learner"]["objective"]["name"])

    def ranking_metrics(self, metrics: Sequence[str] = DEFAULT_RANKING_METRICS) -> RankingMetrics:
        """An accumulator of ranking ``metrics`` with this model's NDCG gain (XGBoost's ``ndcg_exp_gain``)."""
        objective = json.loads(self.booster.save_config())["learner"]["objective"]
        exp_gain = objective.get("lambdarank_param", {}).get("ndcg_exp_gain", "1") not in ("0", "false")
        return RankingMetrics(metrics, exp_gain=exp_gain)

    @property
    def task(self) -> str:
        """``multiclass``, ``binary``, ``hard`` or ``regression`` (see :func:`extmem.metrics.task_of`)."""
        return task_of(self.objective)

    @cached_property
    def classes(self) -> list[str] | None:
        """Class names in class-id order (ids as text for numeric labels); None for regression."""
        if self.task == "regression":
            return None
        config = json.loads(self.booster.save_config())["learner"]["learner_model_param"]
        return self.layout.class_names(int(config["num_class"]))

    def raw_predict(self, X: Any) -> np.ndarray:
        """``booster.inplace_predict`` on features already in the model's representation."""
        return self.booster.inplace_predict(X, missing=np.nan, iteration_range=self.iteration_range)

    @cached_property
    def explained_outputs(self) -> list[str]:
        classes = self.classes
        if classes is None:
            return ["value"]
        config = json.loads(self.booster.save_config())["learner"]["learner_model_param"]
        return list(classes) if int(config["num_class"]) > 1 else [classes[-1]]

    def _matrix(self, X: Any) -> xgb.DMatrix:
        return xgb.DMatrix(
            X,
            missing=np.nan,
            feature_names=self.layout.xgboost_names,
            feature_types=self.layout.feature_types,
            enable_categorical=bool(self.layout.categories),
        )

    def contributions(self, X: Any) -> np.ndarray:
        """XGBoost's exact TreeSHAP values (``pred_contribs``), (rows, outputs, features + 1)."""
        values = self.booster.predict(self._matrix(X), pred_contribs=True, iteration_range=self.iteration_range)
        return values.reshape(values.shape[0], len(self.explained_outputs), values.shape[-1])

    def leaves(self, X: Any) -> np.ndarray:
        """XGBoost's ``pred_leaf``: each row's leaf in every tree, (rows, trees); ``X`` a dataset (streamed) or in-memory features."""
        return self._each_row_of(
            X, lambda features: self.booster.predict(self._matrix(features), pred_leaf=True, iteration_range=self.iteration_range)
        )

    def margins(self, X: Any) -> np.ndarray:
        """XGBoost's ``output_margin``: untransformed predictions, (rows,) or (rows, outputs); ``X`` as for :meth:`leaves`."""
        return self._each_row_of(
            X,
            lambda features: self.booster.inplace_predict(
                features, missing=np.nan, predict_type="margin", iteration_range=self.iteration_range
            ),
        )

    def _each_row_of(self, X: Any, predict: Callable[[Any], np.ndarray]) -> np.ndarray:
        """:meth:`each_row` of ``predict``, whose output per row has the shape it gives an all-missing row."""
        shape = predict(np.full((1, len(self.layout.names)), np.nan, dtype=np.float32)).shape[1:]
        return self.each_row(X, predict, shape)

    has_interactions = True

    def interactions(self, X: Any) -> np.ndarray:
        """XGBoost's exact SHAP interaction values (``pred_interactions``), (rows, outputs, features + 1, features + 1)."""
        values = self.booster.predict(self._matrix(X), pred_interactions=True, iteration_range=self.iteration_range)
        return values.reshape(values.shape[0], len(self.explained_outputs), values.shape[-2], values.shape[-1])

    def own_importance(self) -> dict[str, np.ndarray]:
        """XGBoost's ``get_score`` per feature: ``xgb_weight``, ``xgb_gain``, ``xgb_cover``, ``xgb_total_gain``, ``xgb_total_cover`` (0: unused)."""
        position = {name: index for index, name in enumerate(self.layout.xgboost_names)}
        measures = {}
        for kind in ("weight", "gain", "cover", "total_gain", "total_cover"):
            values = np.zeros(len(self.layout.names))
            for name, value in self.booster.get_score(importance_type=kind).items():
                values[position[name]] = value
            measures[f"xgb_{kind}"] = values
        return measures


ModelLike = str | os.PathLike[str] | Scorer | xgb.Booster


@contextlib.contextmanager
def _downloaded(uri: str) -> Iterator[Path]:
    """A model folder or file in object storage, copied into a private local folder for as long as it is loaded."""
    uri = uri.rstrip("/")
    with PrivateFolder(None, prefix="extmem-model-", option="model") as folder:
        try:
            local = _download_model(uri, folder.path)
        except OSError as exc:
            msg = f"Cannot read the model {uri!r}: {str(exc).splitlines()[0]}"
            raise OptionError(msg) from None
        yield local


def _download_model(uri: str, folder: Path) -> Path:
    """Copy the model file ``uri`` (and its folder's report), or the model folder ``uri``'s files, into ``folder``; the local model."""
    path, mark, options = uri.partition("?")
    if path.endswith((".ubj", ".npz", ".json")):
        parent, _, name = path.rpartition("/")
        download_file(uri, folder / name)
        report = child(parent + mark + options, REPORT_FILE)
        if remote_exists(report):
            download_file(report, folder / REPORT_FILE)
        return folder / name
    present = set(remote_names(uri))
    if not present & {BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE}:
        msg = (
            f"No model at {uri!r}: expected a prefix holding {BOOSTER_MODEL_FILE} or {INCREMENTAL_MODEL_FILE} (written by 'extmem train')."
        )
        raise OptionError(msg)
    for name in (BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE, REPORT_FILE):
        if name in present:
            download_file(child(uri, name), folder / name)
    return folder


def as_model(model: ModelLike) -> Scorer:
    """A trained model from a model folder/file, a :class:`Model` or :class:`IncrementalModel`, or an extmem-trained booster.

    A folder holding ``model.npz`` (or a ``.npz`` file) is an incremental model; anything else is loaded as XGBoost's.
    """
    if isinstance(model, Scorer):
        return model
    if isinstance(model, xgb.Booster):
        return Model.from_booster(model)
    if is_remote(os.fspath(model)):
        with _downloaded(os.fspath(model)) as local:
            return as_model(local)
    path = Path(local_path(os.fspath(model)))
    if (path / INCREMENTAL_MODEL_FILE).is_file() or path.suffix == ".npz":
        from extmem.score._incremental_model import IncrementalModel

        file = path / INCREMENTAL_MODEL_FILE if path.is_dir() else path
        verified_model_bytes(file)
        return IncrementalModel.load(file)
    return Model.load(model)
