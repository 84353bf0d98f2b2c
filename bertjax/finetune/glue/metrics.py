"""GLUE's official metrics, and the GLUE average as the BERT paper reports it.

Values are fractions in [0, 1] (correlations in [-1, 1]); tables multiply by 100.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import scipy.stats
from sklearn import metrics as skm

from bertjax.finetune.glue import tasks


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> float:
    # A constant prediction (common early in training) has no defined correlation; scipy returns
    # nan with a warning. Count it as 0 (no linear/rank relation), as scikit-learn does for the
    # Matthews correlation of a constant prediction, so model selection never compares nan.
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(fn(x, y)[0])


def compute(metric: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """labels/predictions: class indices (classification) or scores (regression)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ")
    if metric == tasks.ACCURACY:
        return {"accuracy": float(skm.accuracy_score(labels, predictions))}
    if metric == tasks.F1_ACCURACY:
        # F1 of the positive class (1 = paraphrase / duplicate), as GLUE scores MRPC and QQP.
        return {"f1": float(skm.f1_score(labels, predictions, pos_label=1, zero_division=0.0)),
                "accuracy": float(skm.accuracy_score(labels, predictions))}
    if metric == tasks.MATTHEWS:
        return {"mcc": float(skm.matthews_corrcoef(labels, predictions))}
    if metric == tasks.CORRELATION:
        x, y = predictions.astype(np.float64), labels.astype(np.float64)
        return {"pearson": _correlation(scipy.stats.pearsonr, x, y),
                "spearman": _correlation(scipy.stats.spearmanr, x, y)}
    raise ValueError(f"unknown GLUE metric kind {metric!r}")


def task_metrics(spec: tasks.TaskSpec, labels: Mapping[str, np.ndarray],
                 predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
    """All metrics of a task over its dev sets; MNLI's get suffixes: accuracy_m, accuracy_mm."""
    out = {}
    for suffix in spec.dev:
        for k, v in compute(spec.metric, labels[suffix], predictions[suffix]).items():
            out[f"{k}_{suffix}" if suffix else k] = v
    return out


# The BERT paper's GLUE average (Devlin et al. 2019, Table 1): the mean of nine numbers, MNLI
# matched and mismatched counted separately, F1 for QQP and MRPC, Spearman for STS-B, and WNLI
# left out ("we exclude the problematic WNLI set"). This reproduces the paper's averages
# (BERT-base 79.6, BERT-large 82.1) from its per-task numbers.
BERT_PAPER_AVERAGE = (("MNLI", "accuracy_m"), ("MNLI", "accuracy_mm"), ("QQP", "f1"),
                      ("QNLI", "accuracy"), ("SST-2", "accuracy"), ("CoLA", "mcc"),
                      ("STS-B", "spearman"), ("MRPC", "f1"), ("RTE", "accuracy"))


def bert_paper_average(results: Mapping[str, Mapping[str, float]]
                       ) -> tuple[float | None, list[str]]:
    """results: task -> metrics. -> (average in [0, 1] or None if incomplete, missing scores)."""
    values, missing = [], []
    for task, key in BERT_PAPER_AVERAGE:
        v = results.get(task, {}).get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing.append(f"{task} {key}")
        else:
            values.append(float(v))
    return (float(np.mean(values)) if not missing else None), missing
