"""The custom task's metrics (hand-worked and against scikit-learn/scipy) and long-text
truncation."""
import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from bertjax.finetune.own_data import metrics, truncation


def test_classification_hand_worked():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    m = metrics.classification_metrics(labels, preds)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # F1 per class: 0: P 1/2 R 1/2 -> 1/2; 1: P 2/3 R 1 -> 4/5; 2: never predicted -> 0.
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_macro_f1_against_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert metrics.compute(False, labels, preds)["macro_f1"] == pytest.approx(
        skm.f1_score(labels, preds, average="macro"))


def test_regression_against_scipy_and_constant_prediction():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    p = y + rng.normal(size=50)
    m = metrics.compute(True, y, p)
    assert m["pearson"] == pytest.approx(scipy.stats.pearsonr(p, y)[0])
    assert m["spearman"] == pytest.approx(scipy.stats.spearmanr(p, y)[0])
    assert metrics.regression_metrics(y, np.zeros(50)) == {"pearson": 0.0, "spearman": 0.0}


TOKENS = list(range(1000, 1010))   # 10 tokens


@pytest.mark.parametrize("mode,head,expected", [
    ("head", 128, [1000, 1001, 1002, 1003]),
    ("tail", 128, [1006, 1007, 1008, 1009]),
    ("head_tail", 1, [1000, 1007, 1008, 1009]),
    ("head_tail", 3, [1000, 1001, 1002, 1009]),
])
def test_truncate_modes(mode, head, expected):
    assert truncation.truncate(TOKENS, 4, mode, head_tokens=head) == expected
    assert truncation.truncate(TOKENS, 10, mode, head_tokens=head) == TOKENS  # fits: all


def test_head_tail_at_sun_et_al_lengths():
    ids = list(range(2000))
    kept = truncation.truncate(ids, 512 - 2, "head_tail")
    assert kept == ids[:128] + ids[2000 - 382:]       # first 128, last 512 - 130 = 382
    assert len(kept) == 510


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="middle", max_seq_length=512), r"truncation='middle': expected one of"),
    (dict(mode="tail", max_seq_length=512, pair=True), "is for single texts"),
    (dict(mode="head_tail", max_seq_length=128), r"raise max_seq_length above 130"),
])
def test_check_truncation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        truncation.check_truncation(**kwargs)


def test_check_truncation_accepts():
    truncation.check_truncation("head", 64, pair=True)
    truncation.check_truncation("head_tail", 131)
    truncation.check_truncation("head_tail", 64, head_tokens=16)
    with pytest.raises(ValueError, match="head_tokens=8"):
        truncation.truncate(TOKENS, 8, "head_tail", head_tokens=8)
