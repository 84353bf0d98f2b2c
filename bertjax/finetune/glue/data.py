"""GLUE examples -> `[CLS] A [SEP] B [SEP]` token ids -> length-bucketed, padded batches.

`prepare_inputs` does it once per task (subsampling, encoding, checks); every run of the task
then draws its batches from the result.

Tokenised examples are stored ragged (one flat token array plus offsets), so memory follows the
real text, not max_seq_length. Each batch is padded only to its bucket's length (e.g. 64, 128):
the step functions then compile once per bucket instead of padding everything to 512, and a
batch of short sentences costs what short sentences should.

Batches are plain numpy dicts:
  input_ids, segment_ids, input_mask  int32 [batch, bucket_length]
  labels                              int32 [batch] (float32 for regression)
  weights                             float32 [batch]; 0 marks a padding row
  example                             int32 [batch]; the example's row in its Split, -1 = padding
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from bertjax.finetune.batching import (assign_buckets, batch_plan, bucket_lengths,  # noqa: F401
                                       steps_per_epoch)
from bertjax.finetune.glue import tasks
from bertjax.models import bert


@dataclasses.dataclass
class Encoded:
    tokens: np.ndarray        # int32 [total tokens]: all examples' ids, [CLS]/[SEP] included
    offsets: np.ndarray       # int64 [n + 1]: example i is tokens[offsets[i]:offsets[i + 1]]
    first_segment: np.ndarray  # int32 [n]: tokens in segment 0 ([CLS] A [SEP])
    labels: np.ndarray | None
    truncated: int            # how many examples lost tokens to truncation

    def __len__(self) -> int:
        return len(self.first_segment)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, rows: np.ndarray, batch_size: int, length: int) -> dict:
        return make_batch(self, rows, batch_size, length)


def truncate_pair(a: list[int], b: list[int] | None, max_tokens: int) -> bool:
    """Longest-first truncation in place, as BERT's `_truncate_seq_pair`: drop the last token
    of the longer sequence (of B on a tie) until both fit. Returns whether anything was cut."""
    if b is None:
        cut = len(a) > max_tokens
        del a[max_tokens:]
        return cut
    cut = False
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
        cut = True
    return cut


def encode_split(split: tasks.Split, tok, max_seq_length: int) -> Encoded:
    """A Split -> `[CLS] A [SEP] B [SEP]` ids, with `tok` from bertjax.data.tokenizer.load."""
    pair = split.text_b is not None
    budget = max_seq_length - (3 if pair else 2)
    if budget < 2:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text")
    chunks, first, lengths, truncated = [], [], [], 0
    cls, sep = [tok.cls_id], [tok.sep_id]
    texts_a = tok.encode_batch(split.text_a)
    texts_b = tok.encode_batch(split.text_b) if pair else None
    for i in range(len(split)):
        a = list(texts_a[i])
        b = list(texts_b[i]) if pair else None
        truncated += truncate_pair(a, b, budget)
        ids = cls + a + sep + (b + sep if pair else [])
        chunks.append(np.asarray(ids, np.int32))
        first.append(len(a) + 2)
        lengths.append(len(ids))
    offsets = np.zeros(len(chunks) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return Encoded(tokens, offsets, np.asarray(first, np.int32), split.labels, truncated)


def make_batch(enc: Encoded, rows: np.ndarray, batch_size: int, length: int) -> dict:
    """Rows of `enc` padded to [batch_size, length]; missing rows get weight 0."""
    ids = np.zeros((batch_size, length), np.int32)
    seg = np.zeros((batch_size, length), np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    regression = enc.labels is not None and enc.labels.dtype.kind == "f"
    labels = np.zeros(batch_size, np.float32 if regression else np.int32)
    weights = np.zeros(batch_size, np.float32)
    example = np.full(batch_size, -1, np.int32)
    for j, r in enumerate(rows):
        start, end = enc.offsets[r], enc.offsets[r + 1]
        n = end - start
        ids[j, :n] = enc.tokens[start:end]
        seg[j, enc.first_segment[r]:n] = 1
        mask[j, :n] = 1
        weights[j] = 1.0
        example[j] = r
        if enc.labels is not None:
            labels[j] = enc.labels[r]
    return {"input_ids": ids, "segment_ids": seg, "input_mask": mask, "labels": labels,
            "weights": weights, "example": example}


@dataclasses.dataclass
class TaskInputs:
    spec: tasks.TaskSpec
    train: Encoded
    dev: dict[str, Encoded]
    test: dict[str, Encoded]
    test_splits: dict[str, tasks.Split]
    buckets: tuple[int, ...]
    subsampled: bool = False          # train or dev cut by max_train/eval_examples


def prepare_inputs(config, spec: tasks.TaskSpec, task_data: tasks.TaskData, tok) -> TaskInputs:
    buckets = bucket_lengths(config.buckets, config.max_seq_length)
    train, dev, cut = task_data.train, dict(task_data.dev), False
    if 0 < config.max_train_examples < len(train):
        train, cut = _subsample(train, config.max_train_examples), True
    for k, v in dev.items():
        if 0 < config.max_eval_examples < len(v):
            dev[k], cut = _subsample(v, config.max_eval_examples), True
    enc = lambda s: encode_split(s, tok, config.max_seq_length)  # noqa: E731
    inputs = TaskInputs(spec, enc(train), {k: enc(v) for k, v in dev.items()},
                        {k: enc(v) for k, v in task_data.test.items()}, task_data.test, buckets,
                        subsampled=cut)
    for where, e in [("train", inputs.train), *inputs.dev.items(), *inputs.test.items()]:
        bert.check_token_ids(e.tokens, tok.vocab_size, where=f"{spec.name} {where or 'dev'} ids")
    for split, e in [(train, inputs.train), *[(dev[k], e) for k, e in inputs.dev.items()]]:
        if len(e) == 0:
            raise ValueError(f"{split.path}: no examples; fine-tuning needs labelled rows")
    return inputs


def _subsample(split: tasks.Split, n: int) -> tasks.Split:
    # A fixed random subset (seed 0), the same for every run, for smoke tests and quick looks.
    rows = np.sort(np.random.default_rng(0).permutation(len(split))[:n])
    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    return tasks.Split(split.path, pick(split.text_a),
                       pick(split.text_b) if split.text_b is not None else None,
                       split.labels[rows] if split.labels is not None else None, pick(split.ids))
