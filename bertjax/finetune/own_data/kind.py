"""Your own data as tasks of the fine-tuning core: `custom` (CSV / TSV / JSON Lines files named
by the config) and `IMDB` (the aclImdb layout, or TFDS imdb_reviews). Both are sequence
classification (or, for custom, regression) run by the GLUE kind's machinery (glue/kind.py:
the same encoding, batches, head and loss); what differs is here: the files, the label set
read from the training file, the metrics (accuracy and macro-F1; Pearson/Spearman), long-text
truncation (head | tail | head_tail), and labelled test sets scored into results.json `test`.

custom: `train_file`, `dev_file`, `test_file` (optional; scored when it has the label column)
are paths relative to --data_dir (or absolute); `text_columns='a'` or `'a,b'` (a pair),
`label_column`, `regression`, `label_names` (optional: the class order). The label set is
the training file's labels in first-seen order, recorded in results.json (`labels`).
IMDB: <data_dir>/IMDB/aclImdb/{train,test}/{pos,neg}/*.txt, dev/ when present, else a fixed
10% of train held out for model selection (the note says so); `source='tfds'` reads TFDS
imdb_reviews from --data_dir. Reviews are long: `truncation` decides which tokens stay.
"""
from __future__ import annotations

import pathlib

import numpy as np

from bertjax.finetune.glue import data, kind as glue_kind, tasks
from bertjax.finetune.own_data import files, imdb, metrics, truncation
from bertjax.models import bert

CUSTOM, IMDB = "custom", "IMDB"


def config_fields(task: str) -> dict:
    """The fields a custom / IMDB config adds to the fine-tuning config (GLUE's head fields
    among them: the same classifier)."""
    fields = dict(glue_kind.config_fields(),
                  truncation="head")   # head | tail | head_tail (single texts; Sun et al. 2019)
    if task == CUSTOM:
        fields.update(train_file="", dev_file="", test_file="", text_columns="text",
                      label_column="label", regression=False, label_names="")
    return fields


def _spec(name: str, labels, text_b=None) -> tasks.TaskSpec:
    regression = labels is None
    return tasks.TaskSpec(
        name, text_a="text", text_b=text_b, label="label", labels=labels,
        metric=tasks.CORRELATION if regression else tasks.ACCURACY,
        primary=metrics.REGRESSION_PRIMARY if regression else metrics.CLASSIFICATION_PRIMARY,
        dev={"": "dev"}, test={name: "test"}, large=name == IMDB)


def encode_truncated(split: tasks.Split, tok, max_seq_length: int, mode: str) -> data.Encoded:
    """`[CLS] text [SEP]` with `mode`'s tokens of a long single text (glue.data.encode_split
    for 'head', which is BERT's truncation)."""
    if mode == "head":
        return data.encode_split(split, tok, max_seq_length)
    chunks, cut = [], 0
    for ids in tok.encode_batch(split.text_a):
        kept = truncation.truncate(ids, max_seq_length - 2, mode)
        cut += len(kept) < len(ids)
        chunks.append(np.asarray([tok.cls_id, *kept, tok.sep_id], np.int32))
    offsets = np.zeros(len(chunks) + 1, np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return data.Encoded(tokens, offsets, np.diff(offsets).astype(np.int32), split.labels, cut)


class OwnDataKind(glue_kind.GlueKind):
    """The GLUE kind with its own files, label set, metrics, truncation and test scores;
    write_submission (GLUE's) writes <workdir>/submission/custom.tsv or IMDB.tsv."""
    tasks = (CUSTOM, IMDB)
    family = ""

    def get_spec(self, name: str) -> tasks.TaskSpec:
        # The label set (hence classification or regression) is known once the files are read;
        # prepare() puts it in. Until then, classification with an unknown label set.
        return _spec(name, ())

    def validate_config(self, config) -> None:
        super().validate_config(config)  # the head
        pair = False
        if config.task == CUSTOM:
            for key in ("train_file", "dev_file", "label_column"):
                if not config[key]:
                    raise ValueError(f"config.{key} is empty; the custom task needs "
                                     "train_file, dev_file, text_columns and label_column")
            pair = len(files.parse_text_columns(config.text_columns)) == 2
            if config.get("source", "tsv") != "tsv":
                raise ValueError(f"config.source={config.source!r}: the custom task reads "
                                 "train_file/dev_file/test_file (source='tsv'); TFDS is for "
                                 "IMDB and the GLUE tasks")
        truncation.check_truncation(config.truncation, config.max_seq_length, pair=pair)

    def _paths(self, data_dir, config) -> dict:
        keys = ("train_file", "dev_file") + (("test_file",) if config.test_file else ())
        return {k: pathlib.Path(data_dir or ".") / config[k] for k in keys}

    def files_missing(self, spec, data_dir, config) -> list[str]:
        if spec.name == CUSTOM:
            return [str(p) for p in self._paths(data_dir, config).values() if not p.is_file()]
        if config.get("source", "tsv") == "tfds":
            return []
        try:
            imdb.find_root(pathlib.Path(data_dir) / spec.folder)
        except FileNotFoundError:
            return [str(pathlib.Path(data_dir) / spec.folder / "aclImdb" / "train")]
        return []

    def load(self, spec, data_dir, config) -> tasks.TaskData:
        if spec.name == CUSTOM:
            p = self._paths(data_dir, config)
            own = files.load(p["train_file"], p["dev_file"], p.get("test_file"),
                             text_columns=config.text_columns,
                             label_column=config.label_column, regression=config.regression,
                             label_names=[n.strip() for n in config.label_names.split(",")]
                             if config.label_names else None)
        elif config.get("source", "tsv") == "tfds":
            own = imdb.load_tfds(data_dir or None)
        else:
            own = imdb.load(pathlib.Path(data_dir) / spec.folder)
        spec = _spec(spec.name, own.label_names, "text_b" if own.train.text_b else None)
        test = {spec.name: own.test} if own.test is not None else {}
        return tasks.TaskData(spec, own.train, {"": own.dev}, test, own.notes)

    def prepare(self, config, spec, task_data: tasks.TaskData, tok) -> data.TaskInputs:
        spec = task_data.spec
        if config.truncation == "head":
            return data.prepare_inputs(config, spec, task_data, tok)
        train, dev, cut = task_data.train, task_data.dev[""], False
        if 0 < config.max_train_examples < len(train):
            train, cut = data._subsample(train, config.max_train_examples), True
        if 0 < config.max_eval_examples < len(dev):
            dev, cut = data._subsample(dev, config.max_eval_examples), True
        enc = lambda s: encode_truncated(s, tok, config.max_seq_length,  # noqa: E731
                                         config.truncation)
        inputs = data.TaskInputs(spec, enc(train), {"": enc(dev)},
                                 {k: enc(v) for k, v in task_data.test.items()}, task_data.test,
                                 data.bucket_lengths(config.buckets, config.max_seq_length),
                                 subsampled=cut)
        for where, e in [("train", inputs.train), ("dev", inputs.dev[""]),
                         *inputs.test.items()]:
            bert.check_token_ids(e.tokens, tok.vocab_size, where=f"{spec.name} {where} ids")
        return inputs

    def evaluate(self, spec, inputs, outputs: dict) -> tuple[dict, None]:
        return metrics.compute(spec.is_regression, inputs.dev[""].labels,
                               self.decide(spec, outputs[""])), None

    def write_submission(self, spec, inputs, preds, workdir, write: bool) -> list[str]:
        # The prepared spec holds the label set the file names its predictions by.
        return super().write_submission(inputs.spec, inputs, preds, workdir, write)

    def test_metrics(self, inputs, preds) -> dict | None:
        """Scores on the test split when it is labelled (IMDB's; a custom test file with the
        label column)."""
        spec = inputs.spec
        split = inputs.test_splits.get(spec.name)
        if split is None or split.labels is None:
            return None
        return metrics.compute(spec.is_regression, split.labels, np.asarray(preds[spec.name]))

    def summary(self, inputs, task_data) -> dict:
        out = super().summary(inputs, task_data)
        spec = inputs.spec
        out.update(labels=list(spec.labels) if spec.labels else None,
                   task_type="regression" if spec.is_regression else "classification")
        return out


KIND = OwnDataKind()

