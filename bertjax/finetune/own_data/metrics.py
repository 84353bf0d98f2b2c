"""Metrics of the `custom` task (and IMDB): accuracy and macro-F1 for classification, Pearson and
Spearman correlation for regression. Fractions in [0, 1] / correlations in [-1, 1], like GLUE's.

Accuracy and the correlations are GLUE's own functions (glue.metrics.compute), so a GLUE task
read as a custom file scores the same; macro-F1 is scikit-learn's: the unweighted mean of the
per-class F1 over the classes present in the labels or the predictions (a class in neither
says nothing about the model), 0 for a class never predicted.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from bertjax.finetune.glue import metrics as glue_metrics
from bertjax.finetune.glue import tasks as glue_tasks

CLASSIFICATION_PRIMARY, REGRESSION_PRIMARY = "accuracy", "spearman"


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Class indices -> {accuracy, macro_f1}."""
    out = glue_metrics.compute(glue_tasks.ACCURACY, labels, predictions)
    out["macro_f1"] = float(skm.f1_score(np.asarray(labels), np.asarray(predictions),
                                         average="macro", zero_division=0.0))
    return out


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Scores -> {pearson, spearman} (0 for a constant prediction, as GLUE's STS-B)."""
    return glue_metrics.compute(glue_tasks.CORRELATION, labels, predictions)


def compute(regression: bool, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return (regression_metrics if regression else classification_metrics)(labels, predictions)
