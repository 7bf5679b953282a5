"""scikit-learn-style estimators: XGBoost's own `XGBClassifier`/`XGBRegressor`, fitted on parquet datasets.

They subclass XGBoost's wrappers, so every hyper-parameter, ``get_params``/``set_params``,
``clone``, callbacks, early stopping, ``best_iteration``, ``feature_importances_`` and
``save_model`` behave as XGBoost documents them. Only the data arguments change: ``fit``,
``predict``, ``predict_proba`` and ``score`` also take a dataset (a path or an
:class:`extmem.Dataset`), which is streamed into matrices held in memory or on disk as
``cache`` and ``memory_budget`` decide (see :func:`extmem.dmatrix`); ``fit`` frees them,
cache files included, before it returns. In-memory arrays work as with XGBoost; for a model
fitted on a dataset they are first converted to the representation it was trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._folders import PrivateFolder
from extmem._layout import LAYOUT_ATTRIBUTE, FeatureLayout
from extmem.encode._blocks import encode
from extmem.errors import OptionError
from extmem.read._dataset import Dataset, as_dataset, is_dataset
from extmem.read._plan import CacheKind
from extmem.run._array_fit import (
    CLASSES_ATTRIBUTE,
    check_array_evals,
    check_weights,
    class_ids,
    class_ids_of,
    classes_from_json,
    classes_to_json,
    label_classes,
)
from extmem.run._params import class_count, label_range
from extmem.score._evaluate import evaluate
from extmem.score._model import Model
from extmem.xgb._build import MatrixOptions
from extmem.xgb._matrix import free_matrix, matrix_info, open_matrix


class _DatasetFitting:
    """The external-memory matrices of one ``fit`` call: the training matrix first, then eval sets."""

    def __init__(self, estimator: _DatasetMixin, dataset: Dataset) -> None:
        self.estimator = estimator
        self.dataset = dataset
        self.matrices: list[xgb.DMatrix] = []
        self.train_matrix = self._open(dataset, None)

    def _open(self, dataset: Dataset, ref: xgb.DMatrix | None) -> xgb.DMatrix:
        est = self.estimator
        seed = est.random_state if isinstance(est.random_state, int) else 0
        options = MatrixOptions(
            page_rows=est.page_rows,
            max_bin=est.max_bin,
            sketch_rows=est.sketch_rows,
            seed=seed,
            cache=est.cache,
            memory_budget=est.memory_budget,
        )
        matrix, _ = open_matrix(dataset, PrivateFolder(est.cache_dir), options, ref=ref)
        self.matrices.append(matrix)
        return matrix

    def matrix(self, data: Any, ref: xgb.DMatrix | None) -> xgb.DMatrix:
        """The training matrix for the training dataset; a new one (same columns and cuts) for an eval set."""
        if data is self.dataset:
            return self.train_matrix
        shared = {name: getattr(self.dataset, name) for name in ("label", "label_map", "zero_is_missing", "qid")}
        dataset = data if isinstance(data, Dataset) else as_dataset(data, shared)
        return self._open(dataset, ref if ref is not None else self.train_matrix)

    def in_memory(self, keywords: dict[str, Any]) -> dict[str, Any]:
        """XGBoost's matrix keywords for an in-memory eval set, its features in the training representation and
        text labels through the training label map (numbers are class ids, as for XGBoost)."""
        layout = matrix_info(self.train_matrix).layout
        label = keywords.get("label")
        if label is not None and layout.label_map is not None and np.asarray(label).dtype.kind in "OSU":
            label = class_ids_of(label, layout.label_map, "the eval set's labels")
        return keywords | {
            "data": encode(keywords["data"], layout),
            "label": label,
            "feature_names": layout.xgboost_names,
            "feature_types": layout.feature_types,
            "enable_categorical": bool(layout.categories),
        }

    def close(self) -> None:
        for matrix in reversed(self.matrices):
            free_matrix(matrix)
        self.matrices.clear()


class _DatasetMixin:
    """Dataset support shared by the estimators. Listed before XGBoost's class: it defines no
    ``get_params``, so XGBoost's ``get_params`` walks on to its own class for the hyper-parameters."""

    max_bin: int | None
    random_state: Any

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        page_rows: int | None = None,
        sketch_rows: int | None = None,
        cache: CacheKind = "auto",
        memory_budget: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self.cache_dir = cache_dir
        self.page_rows = page_rows
        self.sketch_rows = sketch_rows
        self.cache = cache
        self.memory_budget = memory_budget

    def _wrapper_params(self) -> set[str]:
        return super()._wrapper_params() | {"cache_dir", "page_rows", "sketch_rows", "cache", "memory_budget"}  # type: ignore[misc]

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        sample_weight: Any = None,
        base_margin: Any = None,
        eval_set: Sequence[Any] | None = None,
        verbose: bool | int | None = True,
        xgb_model: Any = None,
        sample_weight_eval_set: Sequence[Any] | None = None,
        base_margin_eval_set: Sequence[Any] | None = None,
        feature_weights: Any = None,
    ) -> Any:
        """XGBoost's ``fit``, with its signature; ``X`` (and each ``eval_set`` entry) may also be a dataset.

        A dataset's label column gives ``y`` and its weight column the sample weights, so with a
        dataset ``y``, ``sample_weight`` and the ``base_margin`` options must be None.
        """
        options = {"xgb_model": xgb_model, "verbose": verbose, "feature_weights": feature_weights}
        if is_dataset(X):
            given = {"y": y, "sample_weight": sample_weight, "base_margin": base_margin}
            given |= {"sample_weight_eval_set": sample_weight_eval_set, "base_margin_eval_set": base_margin_eval_set}
            self._fit_dataset(X, given, eval_set, options)
        else:
            check_array_evals(eval_set)
            check_weights(sample_weight, "sample_weight")
            for i, weights in enumerate(sample_weight_eval_set or []):
                check_weights(weights, f"sample_weight_eval_set[{i}]")
            arrays = {"sample_weight": sample_weight, "base_margin": base_margin, "sample_weight_eval_set": sample_weight_eval_set}
            self._fit_arrays(X, y, eval_set=eval_set, base_margin_eval_set=base_margin_eval_set, **arrays, **options)
        return self

    def _fit_arrays(self, X: Any, y: Any, **options: Any) -> None:
        super().fit(X, y, **options)  # type: ignore[misc]

    def _fit_dataset(self, X: Any, given: dict[str, Any], eval_set: Sequence[Any] | None, options: dict[str, Any]) -> None:
        passed = [name for name, value in given.items() if value is not None]
        if passed:
            msg = (
                f"With a dataset as X, labels and weights come from its columns: pass {', '.join(passed)} as None, "
                "and Dataset(..., weight='column') for weights."
            )
            raise OptionError(msg)
        dataset = as_dataset(X, {})
        if dataset.label is None:
            msg = "A dataset to fit on needs a label column: pass extmem.Dataset(path, label=...) (or preset='splice-sites')."
            raise OptionError(msg, options=("label", "preset"))
        evals = None if eval_set is None else [(item, None) if is_dataset(item) else tuple(item) for item in eval_set]
        fitting = _DatasetFitting(self, dataset)
        self._extmem_fitting = fitting
        try:
            layout = matrix_info(fitting.train_matrix).layout
            super().fit(fitting.dataset, self._fit_labels(fitting.train_matrix, layout), eval_set=evals, **options)  # type: ignore[misc]
        finally:
            del self._extmem_fitting
            fitting.close()
        self.get_booster().set_attr(**{LAYOUT_ATTRIBUTE: layout.to_json()})  # type: ignore[attr-defined]

    def _fit_labels(self, matrix: xgb.DMatrix, layout: FeatureLayout) -> np.ndarray:
        """What XGBoost's ``fit`` reads as ``y`` (the matrix itself holds the labels)."""
        return matrix.get_label()

    def _create_dmatrix(self, ref: xgb.DMatrix | None, **kwargs: Any) -> xgb.DMatrix:
        fitting: _DatasetFitting | None = self.__dict__.get("_extmem_fitting")
        if fitting is None:
            return super()._create_dmatrix(ref, **kwargs)  # type: ignore[misc]
        if is_dataset(kwargs["data"]):
            return fitting.matrix(kwargs["data"], ref)
        return super()._create_dmatrix(ref, **fitting.in_memory(kwargs))  # type: ignore[misc]

    @property
    def layout(self) -> FeatureLayout | None:
        """The feature layout of a model fitted on a dataset (None when fitted on arrays); saved with the model."""
        text = self.get_booster().attr(LAYOUT_ATTRIBUTE)  # type: ignore[attr-defined]
        return FeatureLayout.from_json(text) if text is not None else None

    def _model(self, iteration_range: tuple[int, int] | None) -> Model:
        if self.layout is None:
            msg = "This estimator was fitted on arrays, not on a dataset; it cannot read one to score."
            raise OptionError(msg)
        booster = self.get_booster()  # type: ignore[attr-defined]
        return Model(booster, self.layout, self._get_iteration_range(iteration_range))  # type: ignore[attr-defined]

    def _dataset_model(self, X: Any, base_margin: Any, iteration_range: tuple[int, int] | None) -> Model | None:
        """The model that streams ``X`` when it is a dataset (None: arrays, for XGBoost)."""
        if not is_dataset(X):
            return None
        if base_margin is not None:
            msg = "With a dataset as X, base_margin must be None: extmem reads no per-row margins (add them to the margins it predicts)."
            raise OptionError(msg, options=("base_margin",))
        return self._model(iteration_range)

    def _encoded(self, X: Any) -> Any:
        return X if self.layout is None else encode(X, self.layout)

    def predict(
        self,
        X: Any,
        output_margin: bool = False,
        validate_features: bool = True,
        base_margin: Any = None,
        iteration_range: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """XGBoost's ``predict``; a dataset ``X`` is streamed batch by batch."""
        model = self._dataset_model(X, base_margin, iteration_range)
        if model is not None:
            return model.margins(X) if output_margin else model.predict(X)
        predictions = super().predict(  # type: ignore[misc]
            self._encoded(X),
            output_margin=output_margin,
            validate_features=validate_features,
            base_margin=base_margin,
            iteration_range=iteration_range,
        )
        return predictions if output_margin else self._as_labels(predictions)

    def _as_labels(self, predictions: np.ndarray) -> np.ndarray:
        """XGBoost's predictions of arrays as the labels fitted on (the classifier's class labels)."""
        return predictions

    def apply(self, X: Any, iteration_range: tuple[int, int] | None = None) -> np.ndarray:
        """XGBoost's ``apply`` (each row's leaf in every tree); a dataset ``X`` is streamed batch by batch."""
        if self.layout is None and not is_dataset(X):
            return super().apply(X, iteration_range)  # type: ignore[misc]
        return self._model(iteration_range).leaves(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (classifier) or R² (regressor), as scikit-learn's; a dataset ``X`` is scored streaming with its own labels
        (a ranker's score: NDCG@32 over its queries)."""
        if not is_dataset(X):
            weights = () if sample_weight is None else (sample_weight,)  # XGBoost's ranker's score takes none
            return super().score(self._encoded(X), y, *weights)  # type: ignore[misc]
        metrics = evaluate(self._model(None), X)
        return float(next(metrics[name] for name in ("accuracy", "r2", "ndcg@32") if name in metrics))


class XGBClassifier(_DatasetMixin, xgb.XGBClassifier):
    """``xgboost.XGBClassifier`` that also fits and scores parquet datasets through external memory.

    ``cache_dir``, ``page_rows`` and ``sketch_rows`` set up the external-memory matrices (see
    :func:`extmem.dmatrix`); every other argument is XGBoost's. Fitted on a dataset, its classes
    follow the rule of :func:`extmem.train`: the label map's, else 0..max label, all of them even
    when a filter leaves some without rows. Fitted on arrays, any class labels work, as in
    scikit-learn (strings, or numbers other than 0..K-1): ``classes_`` holds them, sorted,
    ``predict`` returns them, and ``save_model`` keeps them; labels 0..K-1 train as XGBoost's.
    """

    def _fit_arrays(self, X: Any, y: Any, **options: Any) -> None:
        classes = label_classes(y)
        if classes is not None:
            y = class_ids(y, classes, "y")
            if options["eval_set"] is not None:
                options["eval_set"] = [(Xe, class_ids(ye, classes, f"eval_set[{i}]")) for i, (Xe, ye) in enumerate(options["eval_set"])]
        self._label_classes = None  # XGBoost's fit checks the ids of y against classes_
        super()._fit_arrays(X, y, **options)
        self.get_booster().set_attr(**{CLASSES_ATTRIBUTE: None if classes is None else classes_to_json(classes)})
        self._label_classes = classes

    def _load_model_attributes(self, config: dict) -> None:
        super()._load_model_attributes(config)
        text = self.get_booster().attr(CLASSES_ATTRIBUTE)
        self._label_classes = None if text is None else classes_from_json(text)

    @property
    def classes_(self) -> np.ndarray:
        """The class labels: those of ``y`` when fitted on arrays of other labels than 0..K-1, else 0..K-1."""
        classes = self.__dict__.get("_label_classes")
        return classes if classes is not None else np.arange(self.n_classes_)

    def _as_labels(self, predictions: np.ndarray) -> np.ndarray:
        classes = self.__dict__.get("_label_classes")
        return predictions if classes is None else classes[np.asarray(predictions, dtype=np.intp)]

    def _fit_labels(self, matrix: xgb.DMatrix, layout: FeatureLayout) -> np.ndarray:
        self._label_classes = None  # a dataset's classes are its label map's ids
        labels = matrix.get_label()
        classes = class_count(layout, *label_range(labels))
        if classes == 0:
            return labels  # XGBoost explains what class labels it expects
        return np.arange(classes, dtype=np.float32)  # XGBoost derives classes_ from y; the matrix holds the labels

    def predict_proba(
        self, X: Any, validate_features: bool = True, base_margin: Any = None, iteration_range: tuple[int, int] | None = None
    ) -> np.ndarray:
        """XGBoost's ``predict_proba``; a dataset ``X`` is streamed batch by batch."""
        model = self._dataset_model(X, base_margin, iteration_range)
        if model is not None:
            return model.predict_proba(X)
        return super().predict_proba(
            self._encoded(X), validate_features=validate_features, base_margin=base_margin, iteration_range=iteration_range
        )


class XGBRegressor(_DatasetMixin, xgb.XGBRegressor):
    """``xgboost.XGBRegressor`` that also fits and scores parquet datasets through external memory.

    ``cache_dir``, ``page_rows`` and ``sketch_rows`` set up the external-memory matrices (see
    :func:`extmem.dmatrix`); every other argument is XGBoost's.
    """


class XGBRFClassifier(XGBClassifier, xgb.XGBRFClassifier):
    """``xgboost.XGBRFClassifier`` (a random forest: one round of ``n_estimators`` parallel trees) that also
    fits and scores parquet datasets, with the class labels of :class:`XGBClassifier`."""


class XGBRFRegressor(XGBRegressor, xgb.XGBRFRegressor):
    """``xgboost.XGBRFRegressor`` (a random forest: one round of ``n_estimators`` parallel trees) that also
    fits and scores parquet datasets."""


class XGBRanker(_DatasetMixin, xgb.XGBRanker):
    """``xgboost.XGBRanker`` that also fits and scores parquet datasets with a query-id column through external memory.

    A dataset to fit on names its query column: ``extmem.Dataset(path, label=..., qid=...)``
    (each query's rows together, ids in non-decreasing order); eval-set datasets read the same
    columns. Arrays and DataFrames go to XGBoost's ``fit`` with ``group``/``qid`` unchanged.
    """

    def fit(  # type: ignore[override]
        self,
        X: Any,
        y: Any = None,
        *,
        group: Any = None,
        qid: Any = None,
        sample_weight: Any = None,
        base_margin: Any = None,
        eval_set: Sequence[Any] | None = None,
        eval_group: Sequence[Any] | None = None,
        eval_qid: Sequence[Any] | None = None,
        verbose: bool | int | None = False,
        xgb_model: Any = None,
        sample_weight_eval_set: Sequence[Any] | None = None,
        base_margin_eval_set: Sequence[Any] | None = None,
        feature_weights: Any = None,
    ) -> XGBRanker:
        """XGBoost's ``fit``, with its signature; ``X`` (and each ``eval_set`` entry) may also be a dataset with a ``qid`` column."""
        options = {"sample_weight": sample_weight, "base_margin": base_margin, "eval_set": eval_set, "verbose": verbose}
        options |= {"xgb_model": xgb_model, "sample_weight_eval_set": sample_weight_eval_set}
        options |= {"base_margin_eval_set": base_margin_eval_set, "feature_weights": feature_weights}
        if not is_dataset(X):
            check_array_evals(eval_set)
            return super(_DatasetMixin, self).fit(X, y, group=group, qid=qid, eval_group=eval_group, eval_qid=eval_qid, **options)
        given = [
            name
            for name, value in {"group": group, "qid": qid, "eval_group": eval_group, "eval_qid": eval_qid}.items()
            if value is not None
        ]
        if given:
            msg = f"With a dataset as X, query groups come from its 'qid' column: pass {', '.join(given)} as None."
            raise OptionError(msg, options=("qid",))
        if as_dataset(X, {}).qid is None:
            msg = "A dataset to rank needs its query-id column: pass extmem.Dataset(path, label=..., qid='column')."
            raise OptionError(msg, options=("qid",))
        return _DatasetMixin.fit(self, X, y, **options)  # type: ignore[return-value]

    def _create_ltr_dmatrix(self, ref: xgb.DMatrix | None, data: Any, qid: Any, **kwargs: Any) -> xgb.DMatrix:
        fitting: _DatasetFitting | None = self.__dict__.get("_extmem_fitting")
        if fitting is None:
            return super()._create_ltr_dmatrix(ref, data, qid, **kwargs)
        if is_dataset(data):
            return fitting.matrix(data, ref)
        # an in-memory eval set of a dataset fit: its query ids in the dataset's query column (or XGBoost's 'qid')
        column = next((name for name in (fitting.dataset.qid, "qid") if name in getattr(data, "columns", ())), None)
        if column is None:
            msg = f"An in-memory eval set of a ranker fitted on a dataset needs its query ids: a column {fitting.dataset.qid!r} (or 'qid')."
            raise OptionError(msg, options=("eval_set",))
        return self._create_dmatrix(ref, data=data.drop(columns=column), qid=data[column], **kwargs)
