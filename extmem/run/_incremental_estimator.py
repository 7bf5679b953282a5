"""``IncrementalClassifier``: the scikit-learn front end of the incremental trainer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from extmem.errors import OptionError
from extmem.read._dataset import DatasetLike
from extmem.run._incremental import train_incremental
from extmem.score._incremental_model import IncrementalModel


class IncrementalClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn-style front end of :func:`train_incremental`: ``fit`` a dataset path, then score.

    ``IncrementalClassifier("sgd_logistic", epochs=5).fit("shards/").predict_proba(X)``, where
    ``X`` is a dataset path or in-memory features with the training columns. ``params`` go to
    the scikit-learn estimator(s). After ``fit``, ``model_`` is the :class:`IncrementalModel` and
    ``report_`` the training report.
    """

    def __init__(
        self,
        model: str = "sgd_logistic",
        *,
        epochs: int | None = None,
        class_weight: str = "balanced",
        seed: int = 0,
        label: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.epochs = epochs
        self.class_weight = class_weight
        self.seed = seed
        self.label = label
        self.params = params

    def fit(self, data: DatasetLike, y: None = None, **options: Any) -> IncrementalClassifier:
        """Train on the dataset ``data`` (labels from its ``label`` column); ``options`` as in :func:`train_incremental`."""
        if y is not None:
            msg = "IncrementalClassifier.fit reads labels from the dataset's label column; do not pass y."
            raise OptionError(msg)
        result = train_incremental(
            data,
            self.label,
            algorithm=self.model,
            epochs=self.epochs,
            class_weight=self.class_weight,
            seed=self.seed,
            params=self.params,
            **options,
        )
        self.model_, self.report_ = result.model, result.report
        self.classes_ = np.arange(result.model.n_classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(X)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model (see :meth:`IncrementalModel.save`)."""
        self.model_.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IncrementalClassifier:
        """A fitted classifier from a saved model (see :meth:`IncrementalModel.load`)."""
        model = IncrementalModel.load(path)
        classifier = cls(model.kind, label=model.layout.label)
        classifier.model_, classifier.report_ = model, {}
        classifier.classes_ = np.arange(model.n_classes)
        return classifier
