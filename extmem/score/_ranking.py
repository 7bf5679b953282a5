"""Ranking metrics streamed over query groups: XGBoost's NDCG and MAP (``ndcg@10``, ``map@32-``...), query by query."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from extmem.score._metrics import UPDATE_CHUNK_ROWS

RANKING_METRIC = re.compile(r"(ndcg|map)(?:@(\d+))?(-?)")
"""The metrics :class:`RankingMetrics` computes, named as XGBoost's ``eval_metric``: a trailing ``-`` scores a query
without relevant rows 0 instead of 1."""


DEFAULT_RANKING_METRICS = ("ndcg@10", "ndcg@32", "ndcg", "map@32", "map")
"""What evaluation reports of a ranking model: XGBoost's default metrics (``ndcg@32``, ``map@32``) among them; MAP counts a
row with a label above 0 as relevant."""


def is_ranking(objective: str) -> bool:
    """Whether an XGBoost objective ranks rows within query groups."""
    return objective.startswith("rank:")


class RankingMetrics:
    """Mean per-query NDCG and MAP, as XGBoost computes them, over rows given in batches ordered by query id.

    A query may go on from one batch to the next: the rows of each batch's last query wait for
    the next batch (or :meth:`result`). With weights (one per query, repeated on its rows), the
    means are weighted by them, as XGBoost weighs a ranking dataset's queries. ``exp_gain``: NDCG's gain is ``2**label - 1`` (XGBoost's
    ``ndcg_exp_gain``, its default), else the label. Only the names in ``metrics`` that match
    :data:`RANKING_METRIC` are computed.
    """

    def __init__(self, metrics: Sequence[str], *, exp_gain: bool = True) -> None:
        self.metrics = [name for name in dict.fromkeys(metrics) if RANKING_METRIC.fullmatch(name)]
        self.exp_gain = exp_gain
        self.rows = 0
        self.queries = 0
        self._sums = dict.fromkeys(self.metrics, 0.0)
        self._weight_total = 0.0
        self._pending: tuple[np.ndarray, ...] | None = None

    def update(self, labels: np.ndarray, predictions: np.ndarray, qid: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Add a batch of rows: their relevance labels, predicted scores, (non-decreasing) query ids and query weights.

        Large batches are taken ``UPDATE_CHUNK_ROWS`` rows at a time, so the sorts' temporaries stay small
        whatever the size of the arrays given (a whole training matrix's predictions, say).
        """
        weights = np.ones(len(labels)) if weight is None else np.asarray(weight, dtype=np.float64)
        for start in range(0, len(labels), UPDATE_CHUNK_ROWS):
            stop = start + UPDATE_CHUNK_ROWS
            self._update(labels[start:stop], predictions[start:stop], qid[start:stop], weights[start:stop])

    def _update(self, labels: np.ndarray, predictions: np.ndarray, qid: np.ndarray, weight: np.ndarray) -> None:
        self.rows += len(labels)
        arrays = (np.asarray(labels, dtype=np.float64), np.asarray(predictions, dtype=np.float64).reshape(-1), np.asarray(qid), weight)
        if self._pending is not None:
            arrays = tuple(np.concatenate([waiting, new]) for waiting, new in zip(self._pending, arrays))  # type: ignore[assignment]
        last_start = int(np.searchsorted(arrays[2], arrays[2][-1], side="left"))
        self._pending = tuple(array[last_start:].copy() for array in arrays)  # type: ignore[assignment]
        self._add(*(array[:last_start] for array in arrays))

    def _add(self, labels: np.ndarray, scores: np.ndarray, qid: np.ndarray, weight: np.ndarray) -> None:
        if len(labels) == 0:
            return
        first = np.concatenate([[True], qid[1:] != qid[:-1]])  # where each query's rows begin
        query = np.cumsum(first) - 1
        queries = int(query[-1]) + 1
        starts = np.flatnonzero(first)
        query_weight = weight[starts]
        by_score = np.lexsort((-scores, query))  # each query's rows, best score first (ties in row order)
        rank = np.arange(len(labels)) - starts[query]  # rank of the row at each position of by_score
        for name in self.metrics:
            kind, cutoff, minus = RANKING_METRIC.fullmatch(name).groups()  # type: ignore[union-attr]
            k = int(cutoff) if cutoff else len(labels)
            if kind == "ndcg":
                per_query = self._ndcg(labels, query, queries, by_score, rank, k, bool(minus))
            else:
                per_query = _average_precision(labels[by_score] > 0, query, queries, rank, k, bool(minus))
            self._sums[name] += float(per_query @ query_weight)
        self.queries += queries
        self._weight_total += float(query_weight.sum())

    def _ndcg(
        self, labels: np.ndarray, query: np.ndarray, queries: int, by_score: np.ndarray, rank: np.ndarray, k: int, minus: bool
    ) -> np.ndarray:
        gain = np.exp2(labels) - 1 if self.exp_gain else labels
        discount = np.where(rank < k, 1 / np.log2(rank + 2.0), 0.0)
        dcg = np.bincount(query, weights=gain[by_score] * discount, minlength=queries)
        ideal = np.bincount(query, weights=gain[np.lexsort((-labels, query))] * discount, minlength=queries)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ideal > 0, dcg / ideal, 0.0 if minus else 1.0)

    def result(self) -> dict[str, Any]:
        """The (weighted) mean of each metric over the queries, with the numbers of queries and rows."""
        if self._pending is not None:
            self._add(*self._pending)
            self._pending = None
        means = {name: total / self._weight_total if self._weight_total else None for name, total in self._sums.items()}
        return {"rows": self.rows, "queries": self.queries, **means}


def _average_precision(relevant: np.ndarray, query: np.ndarray, queries: int, rank: np.ndarray, k: int, minus: bool) -> np.ndarray:
    """Per query, the precision at each relevant row of the first ``k`` (in score order), over min(k, relevant rows)."""
    hits = np.cumsum(relevant)
    before = np.concatenate([[0], hits])[np.flatnonzero(rank == 0)]  # relevant rows of the earlier queries
    hits_here = hits - before[query]
    precision = np.where(relevant & (rank < k), hits_here / (rank + 1.0), 0.0)
    total = np.bincount(query, weights=relevant, minlength=queries)
    found = np.bincount(query, weights=precision, minlength=queries)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, found / np.minimum(total, k), 0.0 if minus else 1.0)
