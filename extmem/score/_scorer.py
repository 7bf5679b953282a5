"""`Scorer`: what every trained model shares to score parquet datasets and in-memory arrays, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from extmem._contracts import RawBatch
from extmem._layout import FeatureLayout
from extmem.encode._blocks import Encoder, encode
from extmem.encode._probe import plan_pass
from extmem.errors import OptionError
from extmem.read._dataset import Dataset, as_dataset, is_dataset
from extmem.read._reader import read_batches
from extmem.read._selection import Carry, Selection, select_dataset
from extmem.score._ranking import DEFAULT_RANKING_METRICS, RankingMetrics, is_ranking


class Scorer:
    """A trained model with the feature layout it was trained on.

    Subclasses give ``layout``, ``objective``, ``task`` (see :func:`extmem.metrics.task_of`),
    ``classes`` and :meth:`raw_predict`; scoring datasets and arrays is the same for all of them.
    Raw predictions are (rows, classes) probabilities for multi-class models, the positive
    class's probability for binary ones, class ids for ``hard`` ones and values for regression.
    """

    layout: FeatureLayout

    @property
    def objective(self) -> str:
        raise NotImplementedError

    @property
    def task(self) -> str:
        raise NotImplementedError

    @property
    def ranking(self) -> bool:
        """Whether the model ranks rows within query groups (a ``rank:`` objective)."""
        return is_ranking(self.objective)

    def ranking_metrics(self, metrics: Sequence[str] = DEFAULT_RANKING_METRICS) -> RankingMetrics:
        """An accumulator of a ranking model's ``metrics`` over query groups."""
        return RankingMetrics(metrics)

    @property
    def classes(self) -> list[str] | None:
        """Class names in class-id order (ids as text for numeric labels); None for regression."""
        raise NotImplementedError

    def raw_predict(self, X: Any) -> np.ndarray:
        """Raw predictions for features already in the model's representation (CSR or dense)."""
        raise NotImplementedError

    @property
    def explained_outputs(self) -> list[str]:
        """What :meth:`contributions` explains, one name per margin: each class, a binary classifier's positive class, or ``value``."""
        raise NotImplementedError

    def contributions(self, X: Any) -> np.ndarray:
        """Each feature's contribution to each output's margin for features in the model's representation.

        Shape (rows, outputs, features + 1), float32, the bias last; a row's contributions sum to its margin.
        """
        raise NotImplementedError

    has_interactions = False
    """Whether :meth:`interactions` gives SHAP interaction values (tree models)."""

    def interactions(self, X: Any) -> np.ndarray:
        """SHAP interaction values, (rows, outputs, features + 1, features + 1): a tree model's (XGBoost's ``pred_interactions``)."""
        raise NotImplementedError

    def own_importance(self) -> dict[str, np.ndarray]:
        """The model's own importance measures by name, each per feature (features,) or per output and feature."""
        raise NotImplementedError

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (rows, classes); ``X`` is a dataset path/:class:`Dataset` (streamed) or in-memory features."""
        if self.task not in ("multiclass", "binary"):
            msg = f"predict_proba needs a probabilistic classifier; this model's objective is {self.objective!r}. Use predict()."
            raise OptionError(msg)
        return as_class_columns(self._predict_any(X), self.task)

    def predict(self, X: Any) -> np.ndarray:
        """Class ids (classifiers) or values (regression) for a dataset or in-memory features."""
        raw = self._predict_any(X)
        if self.task == "multiclass":
            return raw.argmax(axis=1)
        if self.task == "binary":
            return (raw > 0.5).astype(np.int64)
        return raw

    def _predict_any(self, X: Any) -> np.ndarray:
        shape = (len(self.classes or []),) if self.task == "multiclass" else ()
        return self.each_row(X, self.raw_predict, shape)

    def each_row(self, X: Any, predict: Callable[[Any], np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """``predict`` of features in the model's representation, over a dataset (batch by batch) or in-memory ``X``;
        each row's output has ``shape``."""
        if is_dataset(X):
            selection = self.select(as_dataset(X, {}))
            plan = plan_pass(selection, None)  # under a data limit, planned to fit it
            parts = [output for _, output in self.score(selection, plan.batch_rows, predict, whole_rows=plan.page_rows)]
            return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype=np.float32)
        output = predict(encode(X, self.layout))
        return output if output.size else output.reshape((0, *shape))

    def select(self, dataset: Dataset, carry: Carry = ()) -> Selection:
        """``dataset`` selected with this model's feature columns (and ``carry`` columns passed through)."""
        return select_dataset(dataset, layout=self.layout, carry=carry)

    def score(
        self,
        selection: Selection,
        batch_rows: int,
        predict: Callable[[Any], np.ndarray] | None = None,
        *,
        whole_rows: int | None = None,
    ) -> Iterator[tuple[RawBatch, np.ndarray]]:
        """Each batch of ``selection`` with ``predict`` of its features (default: the raw predictions), in dataset order.

        Row groups of up to ``whole_rows`` rows (default: ``batch_rows``) come whole, in column parts (see :func:`read_batches`).
        """
        encoder = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)
        for batch in read_batches(selection, batch_rows, whole_rows=whole_rows or batch_rows):
            yield batch, (predict or self.raw_predict)(encoder(batch).X)


def as_class_columns(raw: np.ndarray, task: str) -> np.ndarray:
    """Raw output as (rows, classes) probabilities: binary output gains the negative class."""
    if task == "binary":
        return np.column_stack([1 - raw, raw])
    return raw
