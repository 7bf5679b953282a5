"""Incremental models as trained: scikit-learn estimator(s), their feature preparation, and their safe file format.

Features are prepared per kind of column. Count columns (``layout.zero_is_missing``, the
k-mers) stay sparse: linear models see them divided by their standard deviation, naive Bayes
sees the raw counts (multinomial). Value columns (scores, coordinates) are centred and scaled,
a missing value counting as the mean; naive Bayes models them as Gaussians. Scaling them first
keeps Gaussian naive Bayes' variance smoothing (a share of the largest variance) from being
set by a coordinate column and swamping every other feature.

A model is saved as one ``.npz`` of numeric arrays and JSON text, read back without pickle:
only the estimator classes and fitted attributes in ``_FITTED_ATTRIBUTES`` are restored.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.base import clone, is_classifier
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB, MultinomialNB

from extmem._atomic import json_default, write_atomically
from extmem._defaults import INCREMENTAL_MODEL_FILE, INCREMENTAL_MODELS
from extmem._layout import FeatureLayout
from extmem.errors import OptionError
from extmem.score._scorer import Scorer

FORMAT_VERSION = 1
ESTIMATOR_KIND = "estimator"
"""The kind of a model trained from a scikit-learn estimator instance rather than a named algorithm."""

_SGD_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "sgd_logistic": {"loss": "log_loss"},
    "sgd_hinge": {"loss": "hinge"},
    # scikit-learn 1.8 deprecated PassiveAggressiveClassifier for this SGDClassifier setting.
    "passive_aggressive": {"loss": "hinge", "penalty": None, "learning_rate": "pa1", "eta0": 1.0},
}

_FITTED_ATTRIBUTES: Mapping[str, tuple[type, tuple[str, ...]]] = {
    "SGDClassifier": (SGDClassifier, ("coef_", "intercept_", "classes_", "t_", "n_features_in_")),
    "GaussianNB": (GaussianNB, ("theta_", "var_", "class_prior_", "class_count_", "classes_", "epsilon_", "n_features_in_")),
    "MultinomialNB": (
        MultinomialNB,
        ("feature_count_", "class_count_", "feature_log_prob_", "class_log_prior_", "classes_", "n_features_in_"),
    ),
}
"""The estimator classes a saved model may name, and the fitted arrays restored into them: all that ``load`` trusts."""


@dataclass(frozen=True)
class FeatureParts:
    """A page's features split by kind: value columns dense (NaN = missing), count columns sparse."""

    values: np.ndarray
    counts: sp.csr_matrix
    value_columns: np.ndarray
    count_columns: np.ndarray

    @classmethod
    def split(cls, X: sp.csr_matrix | np.ndarray, layout: FeatureLayout) -> FeatureParts:
        sparse = layout.sparse_mask
        value_columns, count_columns = np.flatnonzero(~sparse), np.flatnonzero(sparse)
        if not sp.issparse(X):
            dense = np.asarray(X, dtype=np.float64)
            return cls(dense[:, value_columns], sp.csr_matrix(np.nan_to_num(dense[:, count_columns])), value_columns, count_columns)
        X = sp.csr_matrix(X)
        stored = X[:, value_columns].tocoo()
        values = np.full((X.shape[0], value_columns.size), np.nan)
        values[stored.row, stored.col] = stored.data
        return cls(values, sp.csr_matrix(X[:, count_columns], dtype=np.float64), value_columns, count_columns)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature means and scales from the first pass, in layout column order."""

    mean: np.ndarray
    scale: np.ndarray

    def values(self, parts: FeatureParts) -> np.ndarray:
        """Value columns centred and scaled; a missing value becomes 0, the mean."""
        return np.nan_to_num((parts.values - self.mean[parts.value_columns]) / self.scale[parts.value_columns])

    def scaled(self, parts: FeatureParts) -> sp.csr_matrix:
        """Linear-model input: the standardised value columns, then the count columns divided by their scale (still sparse)."""
        counts = parts.counts.multiply(1.0 / self.scale[parts.count_columns][None, :])
        return sp.hstack([sp.csr_matrix(self.values(parts)), counts], format="csr")


class _Learner:
    """The scikit-learn estimator(s) of one model kind and how its features are prepared."""

    hard = False

    def __init__(self, estimators: dict[str, Any], standardizer: Standardizer) -> None:
        self.estimators = estimators
        self.standardizer = standardizer

    def partial_fit(self, parts: FeatureParts, labels: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> None:
        raise NotImplementedError

    def raw(self, parts: FeatureParts) -> np.ndarray:
        """(rows, classes) probabilities, or class ids for a ``hard`` learner."""
        raise NotImplementedError

    def linear_terms(self, layout: FeatureLayout) -> tuple[np.ndarray, np.ndarray]:
        """The model's margins as ``bias + weights @ (x - mean)`` on raw features in layout order: (weights, bias).

        ``weights`` is (outputs, features), one row per margin of the linear model (one for a binary one).
        """
        linear = self.estimators.get("linear")
        if not hasattr(linear, "coef_") or not hasattr(linear, "intercept_"):
            msg = f"Contributions need a linear model (coef_ and intercept_); this one is {' and '.join(type(e).__name__ for e in self.estimators.values())}."
            raise OptionError(msg)
        sparse = layout.sparse_mask
        order = np.concatenate([np.flatnonzero(~sparse), np.flatnonzero(sparse)])  # the columns of Standardizer.scaled
        weights = np.empty((linear.coef_.shape[0], order.size))
        weights[:, order] = linear.coef_ / self.standardizer.scale[order]
        return weights, linear.intercept_ + weights[:, sparse] @ self.standardizer.mean[sparse]


class _LinearLearner(_Learner):
    """One classifier (``SGDClassifier``: logistic, hinge or passive-aggressive; or a given one) on standardised features."""

    def __init__(self, estimators: dict[str, Any], standardizer: Standardizer) -> None:
        super().__init__(estimators, standardizer)
        self.hard = not hasattr(estimators["linear"], "predict_proba")

    def partial_fit(self, parts: FeatureParts, labels: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> None:
        self.estimators["linear"].partial_fit(self.standardizer.scaled(parts), labels, classes=classes, sample_weight=weights)

    def raw(self, parts: FeatureParts) -> np.ndarray:
        linear = self.estimators["linear"]
        X = self.standardizer.scaled(parts)
        return linear.predict(X) if self.hard else linear.predict_proba(X)


class _NaiveBayesLearner(_Learner):
    """Multinomial naive Bayes on the count columns and Gaussian naive Bayes on the value columns, combined.

    Naive Bayes assumes features independent given the class, so the joint log-likelihood of
    a row is the sum of both parts' joint log-likelihoods less the class prior counted twice.
    """

    def partial_fit(self, parts: FeatureParts, labels: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> None:
        if "counts" in self.estimators:
            self.estimators["counts"].partial_fit(parts.counts, labels, classes=classes, sample_weight=weights)
        if "values" in self.estimators:
            self.estimators["values"].partial_fit(self.standardizer.values(parts), labels, classes=classes, sample_weight=weights)

    def raw(self, parts: FeatureParts) -> np.ndarray:
        joint = []
        if "counts" in self.estimators:
            joint.append(self.estimators["counts"].predict_joint_log_proba(parts.counts))
        if "values" in self.estimators:
            joint.append(self.estimators["values"].predict_joint_log_proba(self.standardizer.values(parts)))
        total = sum(joint[1:], joint[0])
        if len(joint) == 2:
            total -= self.estimators["counts"].class_log_prior_
        return np.exp(total - logsumexp(total, axis=1, keepdims=True))


def _estimators(kind: str, params: Mapping[str, Any], layout: FeatureLayout | None, seed: int = 0, estimator: Any = None) -> dict[str, Any]:
    """Unfitted estimators for ``kind`` (a copy of ``estimator`` for ``ESTIMATOR_KIND``) with ``params`` set.

    ``params`` are checked against the estimators' own parameters. Naive Bayes gets a part per
    kind of column in ``layout`` (both parts when it is None).
    """
    if kind == ESTIMATOR_KIND:
        parts = {"linear": clone(estimator)}
    elif kind in _SGD_SETTINGS:
        parts = {"linear": SGDClassifier(**{"random_state": seed, **_SGD_SETTINGS[kind]})}
    elif kind == "naive_bayes":
        sparse = layout.sparse_mask if layout is not None else np.array([True, False])
        parts = {}
        if sparse.any():
            parts["counts"] = MultinomialNB()
        if not sparse.all():
            parts["values"] = GaussianNB()
    else:
        msg = f"Unknown 'algorithm' {kind!r}; choose one of {', '.join(INCREMENTAL_MODELS)}, or give a scikit-learn classifier."
        raise OptionError(msg, options=("model",))
    for name, value in params.items():
        owners = [part for part in parts.values() if name in part.get_params()]
        if not owners:
            known = sorted({key for part in parts.values() for key in part.get_params()})
            msg = f"The parameter {name!r} ('params') is not one of the {kind} model's: {', '.join(known)}."
            raise OptionError(msg, options=("params",))
        for part in owners:
            part.set_params(**{name: value})
    return parts


def check_estimator_kind(estimator: Any) -> None:
    """Refuse what cannot be trained incrementally: an estimator must be a scikit-learn classifier with ``partial_fit``."""
    if not (hasattr(estimator, "partial_fit") and hasattr(estimator, "get_params") and is_classifier(estimator)):
        msg = f"The estimator {estimator!r} is not a scikit-learn classifier with partial_fit (such as SGDClassifier or GaussianNB)."
        raise OptionError(msg, options=("model",))


def _learner(kind: str, estimators: dict[str, Any], standardizer: Standardizer) -> _Learner:
    return (_NaiveBayesLearner if kind == "naive_bayes" else _LinearLearner)(estimators, standardizer)


@dataclass(frozen=True)
class IncrementalModel(Scorer):
    """A model trained by :func:`train_incremental`: scikit-learn estimator(s), their feature preparation and layout.

    Scores datasets and arrays like :class:`extmem.Model` (``predict``, ``predict_proba``,
    ``extmem predict``). :meth:`save` writes one ``.npz`` file of numeric arrays and JSON text,
    read back without pickle.
    """

    kind: str
    layout: FeatureLayout
    n_classes: int
    learner: _Learner

    @property
    def objective(self) -> str:
        return self.kind

    @property
    def task(self) -> str:
        if self.learner.hard:
            return "hard"
        return "binary" if self.n_classes == 2 else "multiclass"

    @property
    def classes(self) -> list[str]:
        return self.layout.class_names(self.n_classes)

    def raw_predict(self, X: Any) -> np.ndarray:
        raw = self.learner.raw(FeatureParts.split(X, self.layout))
        return raw[:, 1] if self.task == "binary" else raw

    @property
    def explained_outputs(self) -> list[str]:
        return self.classes if self.n_classes > 2 else [self.classes[-1]]

    def contributions(self, X: Any) -> np.ndarray:
        """Coefficient × (value − mean) per feature in raw units, a missing value counting as the mean (a count's as 0)."""
        weights, bias = self.learner.linear_terms(self.layout)
        dense = X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float64)
        sparse = self.layout.sparse_mask
        dense[:, sparse] = np.nan_to_num(dense[:, sparse])
        centred = np.nan_to_num(dense - self.learner.standardizer.mean)
        values = np.empty((dense.shape[0], weights.shape[0], dense.shape[1] + 1), dtype=np.float32)
        for output, row in enumerate(weights):
            values[:, output, :-1] = centred * row
            values[:, output, -1] = bias[output]
        return values

    def own_importance(self) -> dict[str, np.ndarray]:
        """``coefficient``: each output's weight per raw feature unit, (outputs, features)."""
        return {"coefficient": self.learner.linear_terms(self.layout)[0]}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path``, atomically: a ``.npz`` file, or a folder (made if needed) that gets ``model.npz``."""
        target = Path(path)
        if target.suffix != ".npz":
            target = target / INCREMENTAL_MODEL_FILE
        write_atomically(target, self._write)

    def to_bytes(self) -> bytes:
        """The model as the bytes of one ``.npz`` file (see :meth:`save`)."""
        buffer = io.BytesIO()
        self._write(buffer)
        return buffer.getvalue()

    def _write(self, file: IO[bytes]) -> None:
        """The model as one ``.npz`` of numeric arrays and JSON text, written to ``file``."""
        estimators = self.learner.estimators
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "n_classes": self.n_classes,
            "layout": json.loads(self.layout.to_json()),
            "estimators": {name: {"class": type(est).__name__, "params": est.get_params()} for name, est in estimators.items()},
        }
        arrays = {
            "meta": np.array(json.dumps(meta, default=json_default)),
            "mean": self.learner.standardizer.mean,
            "scale": self.learner.standardizer.scale,
        }
        for name, estimator in estimators.items():
            if type(estimator).__name__ not in _FITTED_ATTRIBUTES:
                msg = (
                    f"extmem saves {', '.join(_FITTED_ATTRIBUTES)} models in its pickle-free format; "
                    f"a {type(estimator).__name__} model cannot be saved (use it in this process)."
                )
                raise OptionError(msg)
            for attribute in _FITTED_ATTRIBUTES[type(estimator).__name__][1]:
                arrays[f"{name}.{attribute}"] = np.asarray(getattr(estimator, attribute))

        np.savez(file, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IncrementalModel:
        """Read a model saved by :meth:`save` (a ``model.npz`` file or its folder).

        Only numeric and text arrays are read (no pickle), and only the estimator classes and
        fitted attributes listed in ``_FITTED_ATTRIBUTES`` are restored; anything else in the
        file is an error naming it.
        """
        file = Path(path)
        if file.is_dir():
            file = file / INCREMENTAL_MODEL_FILE
        where = os.fspath(file)
        try:
            with np.load(file, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            meta = json.loads(str(arrays["meta"]))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            msg = f"Cannot load the incremental model {where!r}: {exc}"
            raise OptionError(msg) from None
        if (
            not isinstance(meta, dict)
            or meta.get("format") != FORMAT_VERSION
            or meta.get("kind") not in (*INCREMENTAL_MODELS, ESTIMATOR_KIND)
        ):
            msg = f"{where!r} is not an extmem incremental model of format {FORMAT_VERSION}."
            raise OptionError(msg)
        try:
            return cls._from_parts(meta, arrays, where)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            msg = f"{where!r} is not a valid extmem incremental model ({type(exc).__name__}: {exc})."
            raise OptionError(msg) from None

    @classmethod
    def _from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> IncrementalModel:
        estimators = {}
        for name, spec in dict(meta["estimators"]).items():
            if spec["class"] not in _FITTED_ATTRIBUTES:
                msg = f"{where!r} names the estimator class {spec['class']!r}, which extmem does not load."
                raise OptionError(msg)
            estimator_class, attributes = _FITTED_ATTRIBUTES[spec["class"]]
            estimator = estimator_class(**dict(spec["params"]))
            for attribute in attributes:
                value = arrays[f"{name}.{attribute}"]
                if value.dtype.kind not in "biuf":
                    msg = f"the fitted attribute {name}.{attribute} is not numeric"
                    raise TypeError(msg)
                setattr(estimator, attribute, value.item() if value.ndim == 0 else value)
            estimators[name] = estimator
        layout = FeatureLayout.from_json(json.dumps(meta["layout"]), where)
        mean, scale = np.asarray(arrays["mean"], dtype=np.float64), np.asarray(arrays["scale"], dtype=np.float64)
        n_classes = meta["n_classes"]
        if type(n_classes) is not int or n_classes < 2 or mean.shape != (len(layout.names),) or scale.shape != mean.shape:
            msg = "the class count or the feature statistics do not fit the layout"
            raise ValueError(msg)
        parts = set(estimators)
        if not (parts == {"linear"} if meta["kind"] != "naive_bayes" else parts and parts <= {"counts", "values"}):
            msg = f"the estimators {sorted(estimators)} are not those of a {meta['kind']} model"
            raise ValueError(msg)
        return cls(meta["kind"], layout, n_classes, _learner(meta["kind"], estimators, Standardizer(mean, scale)))
