import numpy as np
import pytest
from sklearn import metrics as skm

from extmem.score._metrics import StreamingMetrics, task_of


def _multiclass_data(rows: int, seed: int, tied: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=rows, p=[0.9, 0.05, 0.05])
    logits = rng.normal(size=(rows, 3)) + 2.0 * np.eye(3)[labels]
    if tied:
        logits = np.round(logits, 1)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities.astype(np.float32), rng.uniform(0.5, 2.0, size=rows)


def _streamed(task: str, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None, **kwargs: object) -> dict:
    metrics = StreamingMetrics(task, ["neither", "donor", "acceptor"] if task == "multiclass" else None, **kwargs)
    for start in range(0, labels.size, 777):
        stop = start + 777
        metrics.update(labels[start:stop], predictions[start:stop], None if weights is None else weights[start:stop])
    return metrics.result()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_multiclass_metrics_equal_sklearn_on_concatenated_predictions(weighted: bool, tied: bool) -> None:
    labels, probabilities, weights = _multiclass_data(20_000, seed=1, tied=tied)
    w = weights if weighted else None
    result = _streamed("multiclass", labels, probabilities, w)
    predicted = probabilities.argmax(axis=1)
    assert result["rows"] == labels.size
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted, sample_weight=w), rel=1e-12)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro", sample_weight=w), rel=1e-12)
    assert result["mlogloss"] == pytest.approx(skm.log_loss(labels, y_proba=probabilities, sample_weight=w), rel=1e-6)
    np.testing.assert_allclose(result["confusion_matrix"]["counts"], skm.confusion_matrix(labels, predicted, sample_weight=w), rtol=1e-12)
    for k, name in enumerate(["neither", "donor", "acceptor"]):
        positive = labels == k
        assert result["per_class"][name]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(positive, probabilities[:, k], sample_weight=w), rel=1e-9
        )
        expected_ap = skm.average_precision_score(positive, probabilities[:, k], sample_weight=w)
        assert result["per_class"][name]["pr_auc"] == pytest.approx(expected_ap, rel=1e-9)
        assert result["per_class"][name]["recall"] == pytest.approx(skm.recall_score(positive, predicted == k, sample_weight=w))
    expected_macro = skm.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", sample_weight=w)
    assert result["macro_roc_auc"] == pytest.approx(expected_macro, rel=1e-9)


def test_binary_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=5000)
    probability = (1 / (1 + np.exp(-(rng.normal(size=5000) + 1.5 * labels - 0.7)))).astype(np.float32)
    probability[:10] = 1.0  # clipped in the log-loss like sklearn does
    result = _streamed("binary", labels, probability, None)
    assert result["auc"] == pytest.approx(skm.roc_auc_score(labels, probability), rel=1e-9)
    assert result["pr_auc"] == pytest.approx(skm.average_precision_score(labels, probability), rel=1e-9)
    assert result["logloss"] == pytest.approx(skm.log_loss(labels, y_proba=probability), rel=1e-6)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(labels, probability > 0.5, average="macro"))


def test_regression_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=3000)
    predicted = truth + rng.normal(scale=0.3, size=3000)
    result = _streamed("regression", truth, predicted, None)
    assert result["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(truth, predicted)))
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted))
    assert result["r2"] == pytest.approx(skm.r2_score(truth, predicted))


def test_many_distinct_scores_are_binned_in_log_odds_with_bounded_size() -> None:
    labels, probabilities, _ = _multiclass_data(200_000, seed=4)
    streamed = StreamingMetrics("multiclass", ["neither", "donor", "acceptor"], max_distinct=10_000)
    for start in range(0, labels.size, 4096):
        streamed.update(labels[start : start + 4096], probabilities[start : start + 4096])
    result = streamed.result()
    for k, name in enumerate(["neither", "donor", "acceptor"]):
        assert streamed._scores[k].binned
        assert streamed._scores[k].keys.size < 40_000
        assert result["per_class"][name]["roc_auc"] == pytest.approx(skm.roc_auc_score(labels == k, probabilities[:, k]), abs=1e-4)
        assert result["per_class"][name]["pr_auc"] == pytest.approx(skm.average_precision_score(labels == k, probabilities[:, k]), abs=1e-3)


def test_a_class_without_positives_has_no_auc() -> None:
    labels = np.zeros(100, dtype=int)
    probabilities = np.tile(np.array([[0.8, 0.1, 0.1]], dtype=np.float32), (100, 1))
    result = _streamed("multiclass", labels, probabilities, None)
    assert result["per_class"]["donor"]["roc_auc"] is None
    assert result["macro_roc_auc"] is None
    assert result["accuracy"] == 1.0


def test_task_of_objectives() -> None:
    assert [task_of(o) for o in ("multi:softprob", "binary:logistic", "multi:softmax", "reg:squarederror")] == [
        "multiclass",
        "binary",
        "hard",
        "regression",
    ]
