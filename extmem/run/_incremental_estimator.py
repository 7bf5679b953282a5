"""``IncrementalClassifier``: a scikit-learn meta-estimator training a ``partial_fit`` classifier over datasets or arrays."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import Tags, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from extmem._defaults import DEFAULT_EPOCHS, DEFAULT_PAGE_ROWS, INCREMENTAL_MODELS
from extmem.errors import OptionError
from extmem.read._dataset import is_dataset
from extmem.run._array_fit import sorted_classes
from extmem.run._incremental import train_incremental
from extmem.score._evaluate import evaluate
from extmem.score._incremental_model import IncrementalModel, _estimators, check_estimator_kind


def _fitted_has(method: str) -> Callable[[IncrementalClassifier], bool]:
    """Whether the classifier offers ``method``: the fitted model's (or, before fit, the estimator's) answer."""

    def check(classifier: IncrementalClassifier) -> bool:
        model = getattr(classifier, "model_", None)
        if model is not None:
            return method != "decision_function" and not (method == "predict_proba" and model.learner.hard)
        fitted = getattr(classifier, "estimator_", None)
        return hasattr(fitted if fitted is not None else classifier._base_estimator(), method)

    return check


class IncrementalClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier with ``partial_fit``, trained in passes of pages over a dataset or arrays.

    ``estimator`` is an unfitted classifier (``IncrementalClassifier(SGDClassifier(loss="log_loss"))``)
    or a name of the command line's (``sgd_logistic``, ``sgd_hinge``, ``passive_aggressive``,
    ``naive_bayes``). ``fit`` takes a dataset (a path or :class:`extmem.Dataset`, labels from its
    label column, streamed through :func:`extmem.train_incremental` with its feature
    standardisation) or arrays ``X, y`` (``partial_fit`` over shuffled chunks of ``page_rows``
    rows). ``max_iter`` is the number of passes (epochs; default 5, 1 for naive Bayes). ``class_weight="balanced"`` weights classes as scikit-learn does;
    ``params`` are set on the estimator. After a dataset fit, ``model_`` is the
    :class:`extmem.IncrementalModel` and ``report_`` its training report; after an array fit,
    ``estimator_`` is the fitted copy of the estimator.
    """

    def __init__(
        self,
        estimator: Any = "sgd_logistic",
        *,
        max_iter: int | None = None,
        class_weight: str | Mapping[Any, float] | None = "balanced",
        random_state: int | None = 0,
        page_rows: int = DEFAULT_PAGE_ROWS,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.estimator = estimator
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.random_state = random_state
        self.page_rows = page_rows
        self.params = params

    def _seed(self) -> int:
        return self.random_state if isinstance(self.random_state, int) else 0

    def _base_estimator(self) -> Any:
        """An unfitted copy of the estimator the arrays are fitted with (its unset ``random_state`` from ours)."""
        if isinstance(self.estimator, str):
            parts = _estimators(self.estimator, dict(self.params or {}), None, self._seed())
            return parts.get("linear", parts.get("values"))
        check_estimator_kind(self.estimator)
        base = clone(self.estimator).set_params(**dict(self.params or {}))
        if base.get_params().get("random_state", 0) is None:
            base.set_params(random_state=self._seed())
        return base

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        try:
            tags.input_tags.sparse = get_tags(self._base_estimator()).input_tags.sparse
        except OptionError:
            pass
        return tags

    def _epochs(self, base: Any) -> int:
        if self.max_iter is not None:
            return self.max_iter
        return 1 if self.estimator == "naive_bayes" or type(base).__name__.endswith("NB") else DEFAULT_EPOCHS

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, **dataset_options: Any) -> IncrementalClassifier:
        """Fit on a dataset (``y`` None; ``dataset_options`` as :class:`extmem.Dataset`'s) or on arrays ``X, y``."""
        for name in ("model_", "report_", "estimator_", "n_iter_"):
            self.__dict__.pop(name, None)
        if is_dataset(X):
            return self._fit_dataset(X, y, sample_weight, dataset_options)
        if dataset_options:
            msg = f"Dataset options ({', '.join(sorted(dataset_options))}) apply only when X is a dataset."
            raise OptionError(msg)
        X, y = validate_data(self, X, y, accept_sparse="csr")
        self.classes_, ids = sorted_classes(y)
        weights = _check_sample_weight(sample_weight, X) * self._class_weights(ids, _check_sample_weight(sample_weight, X))[ids]
        base = self._base_estimator()
        order_rng = np.random.default_rng(self._seed())
        classes = np.arange(self.classes_.size)
        self.n_iter_ = self._epochs(base)
        for _ in range(self.n_iter_):
            order = order_rng.permutation(ids.size)
            for start in range(0, ids.size, self.page_rows):
                chunk = np.sort(order[start : start + self.page_rows])
                if weights[chunk].any():  # a chunk of weight 0 teaches nothing, and scikit-learn refuses it
                    base.partial_fit(X[chunk], ids[chunk], classes=classes, sample_weight=weights[chunk])
        self.estimator_ = base
        return self

    def _class_weights(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The weight of each class: balanced (scikit-learn's formula, on weighted counts), given per class, or 1."""
        n_classes = self.classes_.size
        if self.class_weight == "balanced":
            totals = np.bincount(ids, weights=weights, minlength=n_classes)
            return np.divide(weights.sum(), n_classes * totals, out=np.ones(n_classes), where=totals > 0)
        if self.class_weight in (None, "none"):
            return np.ones(n_classes)
        if isinstance(self.class_weight, Mapping):
            return np.array([float(self.class_weight.get(label, 1.0)) for label in self.classes_])
        msg = f"The 'class_weight' option must be 'balanced', 'none', None or a dict of class weights. Got {self.class_weight!r} instead."
        raise OptionError(msg, options=("class_weight",))

    def _fit_dataset(self, data: Any, y: Any, sample_weight: Any, options: dict[str, Any]) -> IncrementalClassifier:
        if y is not None or sample_weight is not None:
            msg = "With a dataset as X, labels and weights come from its columns: pass y and sample_weight as None."
            raise OptionError(msg)
        result = train_incremental(
            data,
            algorithm=self.estimator,
            epochs=self.max_iter,
            class_weight=self.class_weight,
            seed=self._seed(),
            params=self.params,
            page_rows=self.page_rows,
            **options,
        )
        self.model_, self.report_ = result.model, result.report
        self.n_iter_ = int(result.report["details"]["epochs"])
        self.classes_ = np.arange(result.model.n_classes)
        self.n_features_in_ = len(result.model.layout.names)
        return self

    def _arrays(self, X: Any) -> Any:
        return validate_data(self, X, accept_sparse="csr", reset=False)

    @available_if(_fitted_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of a dataset (streamed) or of in-memory rows."""
        check_is_fitted(self)
        if "model_" in self.__dict__:
            return self.model_.predict_proba(X)
        return self.estimator_.predict_proba(self._arrays(X))

    @available_if(_fitted_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """The fitted estimator's decision function of in-memory rows."""
        check_is_fitted(self)
        return self.estimator_.decision_function(self._arrays(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted classes of a dataset (streamed; class ids) or of in-memory rows."""
        check_is_fitted(self)
        if "model_" in self.__dict__:
            return np.asarray(self.model_.predict(X))
        return self.classes_[self.estimator_.predict(self._arrays(X))]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy: of a dataset against its own labels (streamed), or scikit-learn's on arrays."""
        if is_dataset(X):
            check_is_fitted(self)
            if "model_" not in self.__dict__:
                msg = "This classifier was fitted on arrays; score arrays with it, not a dataset."
                raise OptionError(msg)
            return float(evaluate(self.model_, X)["accuracy"])
        return float(super().score(X, y, sample_weight))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a model fitted on a dataset (see :meth:`IncrementalModel.save`)."""
        check_is_fitted(self)
        if "model_" not in self.__dict__:
            msg = "Only a classifier fitted on a dataset saves in extmem's format; pickle or joblib an array-fitted one."
            raise OptionError(msg)
        self.model_.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IncrementalClassifier:
        """A fitted classifier from a saved model (see :meth:`IncrementalModel.load`)."""
        model = IncrementalModel.load(path)
        classifier = cls(model.kind if model.kind in INCREMENTAL_MODELS else clone(model.learner.estimators["linear"]))
        classifier.model_, classifier.report_ = model, {}
        classifier.classes_ = np.arange(model.n_classes)
        classifier.n_features_in_ = len(model.layout.names)
        return classifier
