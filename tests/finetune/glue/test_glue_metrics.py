import math

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from bertjax.finetune.glue import metrics, tasks


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_classification_metrics_match_scikit_learn(rng):
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.7, y, 1 - y)
    assert metrics.compute(tasks.MATTHEWS, y, p) == {"mcc": pytest.approx(
        skm.matthews_corrcoef(y, p), abs=1e-12)}
    f = metrics.compute(tasks.F1_ACCURACY, y, p)
    assert f["f1"] == pytest.approx(skm.f1_score(y, p), abs=1e-12)
    assert f["accuracy"] == pytest.approx(np.mean(y == p), abs=1e-12)
    y3, p3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert metrics.compute(tasks.ACCURACY, y3, p3)["accuracy"] == pytest.approx(
        np.mean(y3 == p3), abs=1e-12)


def test_matthews_and_f1_closed_forms():
    # Confusion matrix tp=3, tn=2, fp=1, fn=2.
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    p = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    tp, tn, fp, fn = 3, 2, 1, 2
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.compute(tasks.MATTHEWS, y, p)["mcc"] == pytest.approx(mcc)
    assert metrics.compute(tasks.F1_ACCURACY, y, p)["f1"] == pytest.approx(2 * tp / (2 * tp + fp
                                                                                    + fn))
    # A constant prediction: MCC 0 (scikit-learn's convention), F1 of the positive class 0.
    assert metrics.compute(tasks.MATTHEWS, y, np.zeros(8, int))["mcc"] == 0.0
    assert metrics.compute(tasks.F1_ACCURACY, y, np.zeros(8, int))["f1"] == 0.0


def test_correlations_match_scipy_and_constant_predictions_score_zero(rng):
    y = rng.uniform(0, 5, 200)
    p = y + rng.normal(0, 1.5, 200)
    m = metrics.compute(tasks.CORRELATION, y.astype(np.float32), p.astype(np.float32))
    assert m["pearson"] == pytest.approx(scipy.stats.pearsonr(p, y)[0], abs=1e-6)
    assert m["spearman"] == pytest.approx(scipy.stats.spearmanr(p, y)[0], abs=1e-6)
    assert metrics.compute(tasks.CORRELATION, y, np.full(200, 2.5)) == {"pearson": 0.0,
                                                                        "spearman": 0.0}


def test_task_metrics_names_mnli_matched_and_mismatched():
    spec = tasks.get_task("MNLI")
    labels = {"m": np.array([0, 1, 2, 2]), "mm": np.array([0, 0, 1])}
    preds = {"m": np.array([0, 1, 2, 0]), "mm": np.array([1, 0, 1])}
    assert metrics.task_metrics(spec, labels, preds) == {"accuracy_m": 0.75,
                                                         "accuracy_mm": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="differ"):
        metrics.compute(tasks.ACCURACY, np.zeros(3), np.zeros(4))


def test_bert_paper_average_reproduces_the_paper():
    # Devlin et al. 2019, Table 1 (test set): per-task numbers and the reported average.
    def table(mnli_m, mnli_mm, qqp, qnli, sst2, cola, stsb, mrpc, rte):
        v = lambda x: x / 100  # noqa: E731
        return {"MNLI": {"accuracy_m": v(mnli_m), "accuracy_mm": v(mnli_mm)},
                "QQP": {"f1": v(qqp)}, "QNLI": {"accuracy": v(qnli)},
                "SST-2": {"accuracy": v(sst2)}, "CoLA": {"mcc": v(cola)},
                "STS-B": {"spearman": v(stsb)}, "MRPC": {"f1": v(mrpc)},
                "RTE": {"accuracy": v(rte)}, "WNLI": {"accuracy": 0.0}}  # WNLI must not count

    base, _ = metrics.bert_paper_average(table(84.6, 83.4, 71.2, 90.5, 93.5, 52.1, 85.8, 88.9,
                                               66.4))
    large, _ = metrics.bert_paper_average(table(86.7, 85.9, 72.1, 92.7, 94.9, 60.5, 86.5, 89.3,
                                                70.1))
    assert round(100 * base, 1) == 79.6
    assert round(100 * large, 1) == 82.1
    partial = table(84.6, 83.4, 71.2, 90.5, 93.5, 52.1, 85.8, 88.9, 66.4)
    del partial["QQP"]
    assert metrics.bert_paper_average(partial) == (None, ["QQP f1"])
