"""GLUE as a task kind of the fine-tuning core: sequence classification and regression.

Everything task-specific the core (trainer, grid) needs comes from a kind object with this
interface (squad/kind.py and the kinds to come follow it):

  tasks                      the task names it serves; get_spec(name) -> its spec
  model_inputs               batch keys that go to the devices
  files_missing / load       find and read a task's files under --data_dir (errors name the file)
  prepare                    tokenised, length-bucketed inputs (train / dev / test features)
  build_model                the model for the transfer mode (full / partial / feature)
  loss_fn(spec)              (outputs, batch, total_weight) -> the batch's loss
  evaluate                   dev outputs -> (metrics, what to keep of the best evaluation)
  write_artifacts            that kept object -> files in a run's directory
  test_predictions / write_submission   unlabelled test sets (GLUE: the submission)
  test_metrics (optional)    labelled test sets scored with the best-on-dev parameters (CoNLL)
  summary                    example counts and notes for results.json
"""
from __future__ import annotations

import csv
import pathlib
from typing import Sequence

import numpy as np

from bertjax import losses
from bertjax.finetune import transfer
from bertjax.finetune.glue import data, metrics, tasks

MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "labels", "weights")


def config_fields() -> dict:
    """The fields a GLUE (and own-data) config adds to the fine-tuning config: the head, as
    every kind has it (transfer.HEAD_FIELDS). `head='bilstm'`: the encoder's every token ->
    a randomly initialised two-layer BiLSTM (`lstm_hidden` units per direction, 0 = the hidden
    size) -> its forward state at the last real token and backward state at the first ->
    the classifier or regressor (models/heads.py:BertForSequenceBiLSTM; full and partial
    modes, the feature mode keeps its own head)."""
    return dict(transfer.HEAD_FIELDS)


def _classification(out, batch, total_weight):
    return losses.classification_loss(out, batch["labels"], batch["weights"], total_weight)


def _regression(out, batch, total_weight):
    return losses.regression_loss(out, batch["labels"], batch["weights"], total_weight)


def write_submission(spec: tasks.TaskSpec, name: str, ids: Sequence[str],
                     predictions: np.ndarray, out_dir: pathlib.Path) -> pathlib.Path:
    """<out_dir>/<name>.tsv with GLUE's `index` and `prediction` columns, labels as GLUE
    expects them (0/1, entailment/..., or a similarity score). Derived from the runs' stored
    predictions, so rewriting it is safe."""
    if len(ids) != len(predictions):
        raise ValueError(f"{name}: {len(ids)} test rows but {len(predictions)} predictions")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.tsv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "prediction"])
        for i, p in zip(ids, predictions):
            w.writerow([i, f"{float(p):.3f}" if spec.is_regression else spec.labels[int(p)]])
    return path


class GlueKind:
    name = "classification"
    tasks = tasks.TASK_NAMES
    family = "GLUE "  # prefixes its task names in messages
    model_inputs = MODEL_INPUTS
    metric_scale = 1.0  # metrics in [0, 1]; tables show them x100

    def get_spec(self, name: str) -> tasks.TaskSpec:
        return tasks.get_task(name)

    def validate_config(self, config) -> None:
        """Checks of the fields only this kind has (GLUE: the head's)."""
        transfer.check_head_fields(config)
        transfer.check_sequence_head(config.mode, config.head, key_prefix="config.")

    def files_missing(self, spec, data_dir, config) -> list[str]:
        return [] if config.source == "tfds" else tasks.task_files_missing(spec, data_dir)

    def load(self, spec, data_dir, config) -> tasks.TaskData:
        if config.source == "tfds":
            return tasks.load_task_tfds(spec, data_dir or None)
        return tasks.load_task(spec, data_dir)

    def prepare(self, config, spec, task_data, tok) -> data.TaskInputs:
        return data.prepare_inputs(config, spec, task_data, tok)

    def build_model(self, config, model_config, spec):
        return transfer.build_model(config.mode, model_config, spec.num_labels,
                                    feature_hidden=config.feature_hidden,
                                    feature_dropout=config.model.hidden_dropout_rate,
                                    head=config.head, lstm_hidden=config.lstm_hidden)

    def loss_fn(self, spec):
        return _regression if spec.is_regression else _classification

    def decide(self, spec, outputs: np.ndarray) -> np.ndarray:
        """Model outputs -> predicted class indices (or regression scores)."""
        return outputs if spec.is_regression else outputs.argmax(-1)

    def evaluate(self, spec, inputs, outputs: dict) -> tuple[dict, None]:
        labels = {k: inputs.dev[k].labels for k in outputs}
        preds = {k: self.decide(spec, v) for k, v in outputs.items()}
        return metrics.task_metrics(spec, labels, preds), None

    def write_artifacts(self, run_dir, kept) -> list[str]:
        return []

    def test_predictions(self, spec, outputs: dict) -> dict:
        return {name: self.decide(spec, v) for name, v in outputs.items()}

    def write_submission(self, spec, inputs, preds, workdir: pathlib.Path, write: bool
                         ) -> list[str]:
        files = []
        for name, split in inputs.test_splits.items():
            path = workdir / "submission" / f"{name}.tsv"
            if write:  # one host writes; every host knows the names
                write_submission(spec, name, split.ids, preds[name], path.parent)
            files.append(str(path))
        return files

    def summary(self, inputs, task_data) -> dict:
        return {
            "examples": {"train": len(inputs.train),
                         **{f"dev{('_' + k) if k else ''}": len(v) for k, v in inputs.dev.items()},
                         **{f"test_{k}": len(v) for k, v in inputs.test.items()}},
            "subsampled": inputs.subsampled,
            "truncated_train_examples": inputs.train.truncated,
        }


KIND = GlueKind()
