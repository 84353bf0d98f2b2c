"""SQuAD v1.1 and v2.0 as a task kind of the fine-tuning core (interface: glue/kind.py).

Files: <data_dir>/SQuAD/{train-v1.1.json, dev-v1.1.json} and
<data_dir>/SQuAD-v2/{train-v2.0.json, dev-v2.0.json}, the official names and layout. Features
are run_squad.py's windows (features.py); the head gives a start and an end logit per token
(models/heads.py); the loss is the mean of the start and end cross-entropies over the real
tokens of the window (padding masked out, so a window's loss does not depend on its bucket);
every dev evaluation decodes all windows (decode.py) and scores with the official metric
(metric.py, 0-100 as the official scripts print it). Model selection is on dev F1. The best
evaluation's predictions.json, nbest_predictions.json (and null_odds.json for v2) are kept with
each run, and the best run's are copied to <workdir>/<task>/.
"""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.finetune import batching, transfer
from bertjax.finetune.squad import decode, features, metric, reader
from bertjax.models import bert

MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "start_positions",
                "end_positions", "weights")


@dataclasses.dataclass(frozen=True)
class SquadSpec:
    name: str
    v2: bool
    train_file: str
    dev_file: str
    primary: str = "f1"
    large: bool = True           # ~88k (v1.1) / ~130k (v2.0) questions: fewer seeds
    directory: str = ""

    @property
    def folder(self) -> str:
        return self.directory or self.name


SPECS = {s.name: s for s in [
    SquadSpec("SQuAD", v2=False, train_file="train-v1.1.json", dev_file="dev-v1.1.json"),
    SquadSpec("SQuAD-v2", v2=True, train_file="train-v2.0.json", dev_file="dev-v2.0.json"),
]}


@dataclasses.dataclass
class SquadData:
    train: reader.SquadFile
    dev: reader.SquadFile
    notes: dict


class Windows:
    """SQuAD windows as the core batches them (len, lengths, batch)."""

    def __init__(self, f: features.Features):
        self.f = f
        self.lengths = f.input_mask.sum(axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.f)

    def batch(self, rows: np.ndarray, batch_size: int, length: int) -> dict:
        n = len(rows)
        out = {}
        for key in ("input_ids", "segment_ids", "input_mask"):
            a = np.zeros((batch_size, length), np.int32)
            a[:n] = getattr(self.f, key)[rows, :length]
            out[key] = a
        for key in ("start_positions", "end_positions"):
            a = np.zeros(batch_size, np.int32)
            a[:n] = getattr(self.f, key)[rows]
            out[key] = a
        out["weights"] = (np.arange(batch_size) < n).astype(np.float32)
        return out


@dataclasses.dataclass
class SquadInputs:
    spec: SquadSpec
    train: Windows
    dev: dict[str, Windows]
    dev_examples: list[reader.Example]
    buckets: tuple[int, ...]
    train_questions: int
    decode_args: dict             # n_best_size, max_answer_length, null_score_diff_threshold
    subsampled: bool = False
    test: dict = dataclasses.field(default_factory=dict)  # SQuAD's test sets are hidden
    test_splits: dict = dataclasses.field(default_factory=dict)


def config_fields(tiny: bool = False) -> dict:
    """run_squad.py's flags with its defaults (Devlin et al. 2019, sec. 4.2-4.3), the fields a
    SQuAD config adds to the fine-tuning config; `tiny`: the CPU-scale smoke/demo sizes."""
    fields = dict(
        max_seq_length=384,
        buckets=(128, 256, 384),
        doc_stride=128,             # context tokens between the starts of two windows
        max_query_length=64,        # questions are cut to this many tokens
        max_answer_length=30,       # longest answer decoding considers, in tokens
        n_best_size=20,             # start and end candidates per window; n-best list size
        null_score_diff_threshold=0.0,  # v2: predict "" when null - best non-null > this
        **transfer.HEAD_FIELDS,     # head (linear | bilstm), lstm_hidden
        eval_batch_size=64,
        predict_test=False,         # SQuAD's test sets are hidden; dev predictions are kept
    )
    if tiny:
        fields.update(max_seq_length=128, buckets=(64, 128), doc_stride=32, max_query_length=32)
    return fields


def span_loss(out, batch, total_weight):
    """Mean over the real windows of (CE(start) + CE(end)) / 2, over the real tokens only."""
    valid = batch["input_mask"][..., None] > 0
    logits = jnp.where(valid, out, -1e9)                 # [B, L, 2]
    logp = jax.nn.log_softmax(logits, axis=1)
    targets = jnp.stack([batch["start_positions"], batch["end_positions"]], axis=-1)  # [B, 2]
    picked = jnp.take_along_axis(logp, targets[:, None, :], axis=1)[:, 0, :]  # [B, 2]
    per_window = -picked.mean(axis=-1)
    w = batch["weights"]
    return jnp.sum(per_window * w) / jnp.maximum(total_weight, 1.0)


def _subsample(examples: list, n: int) -> list:
    rows = np.sort(np.random.default_rng(0).permutation(len(examples))[:n])
    return [examples[i] for i in rows]


class SquadKind:
    name = "span"
    tasks = tuple(SPECS)
    family = ""  # prefixes its task names in messages
    model_inputs = MODEL_INPUTS
    metric_scale = 100.0  # EM and F1 are 0-100, as the official scripts print them

    def get_spec(self, name: str) -> SquadSpec:
        return SPECS[name]

    def validate_config(self, config) -> None:
        features.check_window_config(max_seq_length=config.max_seq_length,
                                     doc_stride=config.doc_stride,
                                     max_query_length=config.max_query_length)
        transfer.check_head_fields(config)
        for key in ("max_answer_length", "n_best_size"):
            if config[key] < 1:
                raise ValueError(f"config.{key}={config[key]}: expected >= 1")

    def _paths(self, spec, data_dir):
        d = pathlib.Path(data_dir) / spec.folder
        return d / spec.train_file, d / spec.dev_file

    def files_missing(self, spec, data_dir, config) -> list[str]:
        return [str(p) for p in self._paths(spec, data_dir) if not p.is_file()]

    def load(self, spec, data_dir, config) -> SquadData:
        train_path, dev_path = self._paths(spec, data_dir)
        train = reader.read(train_path, v2=spec.v2, training=True)
        dev = reader.read(dev_path, v2=spec.v2, training=False)
        notes = {}
        if train.num_skipped:
            notes["skipped_train_questions"] = {
                "count": train.num_skipped, "ids": train.skipped_ids[:20],
                "why": "the answer text is not at its answer_start in the context"}
        return SquadData(train, dev, notes)

    def prepare(self, config, spec, task_data: SquadData, tok) -> SquadInputs:
        train, dev, cut = task_data.train.examples, task_data.dev.examples, False
        if 0 < config.max_train_examples < len(train):
            train, cut = _subsample(train, config.max_train_examples), True
        if 0 < config.max_eval_examples < len(dev):
            dev, cut = _subsample(dev, config.max_eval_examples), True
        if not train or not dev:
            raise ValueError(f"{spec.name}: no {'training' if not train else 'dev'} questions")
        build = lambda ex: features.build_features(  # noqa: E731
            ex, tok, max_seq_length=config.max_seq_length, doc_stride=config.doc_stride,
            max_query_length=config.max_query_length)
        train_f, dev_f = build(train), build(dev)
        for where, f in (("train", train_f), ("dev", dev_f)):
            bert.check_token_ids(f.input_ids, tok.vocab_size, where=f"{spec.name} {where} ids")
        buckets = batching.bucket_lengths(config.buckets, config.max_seq_length)
        decode_args = dict(n_best_size=config.n_best_size,
                           max_answer_length=config.max_answer_length,
                           null_score_diff_threshold=config.null_score_diff_threshold)
        return SquadInputs(spec, Windows(train_f), {"": Windows(dev_f)}, dev, buckets,
                           train_questions=len(train), decode_args=decode_args,
                           subsampled=cut)

    def build_model(self, config, model_config, spec):
        return transfer.build_span_model(config.mode, model_config,
                                         feature_hidden=config.feature_hidden,
                                         feature_dropout=config.model.hidden_dropout_rate,
                                         head=config.head, lstm_hidden=config.lstm_hidden)

    def loss_fn(self, spec):
        return span_loss

    def evaluate(self, spec, inputs: SquadInputs, outputs: dict):
        """Dev outputs [windows, L, 2] -> (official scores, (decoded answers, v2))."""
        windows = inputs.dev[""].f
        out = outputs[""]
        full = np.full(windows.input_ids.shape + (2,), -1e9, np.float32)
        full[:, :out.shape[1]] = out  # positions past the longest bucket are padding
        decoded = decode.decode(inputs.dev_examples, windows, full[..., 0], full[..., 1],
                                v2=spec.v2, **inputs.decode_args)
        if spec.v2:
            scores = metric.evaluate_v2(inputs.dev_examples, decoded.predictions,
                                        decoded.null_odds)
            scores["exact_match"] = scores["exact"]
        else:
            scores = metric.evaluate_v1(inputs.dev_examples, decoded.predictions)
        return {k: float(v) for k, v in scores.items()}, (decoded, spec.v2)

    def write_artifacts(self, run_dir, kept) -> list[str]:
        decoded, v2 = kept
        return [p.name for p in decode.write_predictions(run_dir, decoded, v2).values()]

    def test_predictions(self, spec, outputs: dict) -> dict:
        return {}

    def write_submission(self, spec, inputs, preds, workdir, write: bool) -> list[str]:
        return []

    def summary(self, inputs: SquadInputs, task_data: SquadData) -> dict:
        return {
            "examples": {"train_questions": inputs.train_questions,
                         "train_windows": len(inputs.train),
                         "dev_questions": len(inputs.dev_examples),
                         "dev_windows": len(inputs.dev[""]),
                         "skipped_train_questions": task_data.train.num_skipped},
            "subsampled": inputs.subsampled,
            "metric_scale": self.metric_scale,
        }


KIND = SquadKind()
