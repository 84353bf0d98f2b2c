"""CoNLL-2003 NER as a task kind of the fine-tuning core (interface: glue/kind.py).

Files: <data_dir>/CoNLL-2003/{eng.train, eng.testa, eng.testb} (or train.txt, valid.txt,
test.txt; the test file is optional), read by reader.py (IOB1 or IOB2; the tag set from the
training file). Features (features.py): each word's label on its first sub-token, the other
sub-tokens weight 0; a sentence longer than max_seq_length is cut into overlapping windows
(counted in results.json as split_sentences), each word predicted in exactly one of them.

Model (models/heads.py): full / partial fine-tuning put a linear tag classifier on every
token (`head='linear'`) or a two-layer BiLSTM and then the classifier (`head='bilstm'`);
feature mode is Table 7's: the frozen encoder's `features` (embeddings, last, second_to_last,
sum_last_four, concat_last_four, weighted_sum_all) -> two-layer BiLSTM (`lstm_hidden` units per
direction, 0 = the hidden size: 768 at base) -> linear. The loss is the cross-entropy averaged
over the labelled positions (each word's first sub-token) of the global batch.

Every dev evaluation decodes word tags and scores them at entity level, overall and per type
(metric.py: seqeval, conlleval's chunking; fractions in [0, 1]); model selection on dev `f1`.
CoNLL's test split is labelled, so the best-on-dev parameters of the submission run also score
it: results.json has `test` beside the dev `metrics`. The best evaluation's
predictions_dev.txt and the test's predictions_test.txt (`word gold pred`, conlleval's input)
are written to <workdir>/CoNLL-2003/.
"""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.finetune import batching, transfer
from bertjax.finetune.ner import features, metric, reader
from bertjax.models import bert, heads
from bertjax.models.layer_features import FEATURE_CHOICES, check_feature_choice

MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "labels", "weights")
_SCORE_KEYS = ("precision", "recall", "f1", "support")


@dataclasses.dataclass(frozen=True)
class NerSpec:
    name: str
    primary: str = "f1"
    large: bool = False
    directory: str = ""
    tags: tuple[str, ...] = ()       # set by prepare, from the training file

    @property
    def folder(self) -> str:
        return self.directory or self.name

    @property
    def num_labels(self) -> int:
        return len(self.tags)


SPECS = {"CoNLL-2003": NerSpec("CoNLL-2003")}


def config_fields(tiny: bool = False) -> dict:
    """The fields a CoNLL-2003 config adds to the fine-tuning config (`tiny`: CPU-scale)."""
    fields = dict(
        max_seq_length=128,
        buckets=(32, 64, 128),
        **transfer.HEAD_FIELDS,     # head (linear | bilstm), lstm_hidden (also feature mode's)
        features="concat_last_four",  # feature mode (Table 7): one of layer_features' choices
        stride=0,                   # pieces between two windows of a long sentence; 0 = half
        predict_test=True,          # CoNLL's test split is labelled: scored and written
    )
    if tiny:
        fields.update(max_seq_length=64, buckets=(32, 64))
    return fields


class Sentences:
    """A split's rows as the core batches them (len, lengths, batch): labels and weights are
    per token, [batch, length]; weight 1 only at the positions that carry a word's label."""

    def __init__(self, f: features.TokenFeatures):
        self.f = f
        self.lengths = f.lengths

    def __len__(self) -> int:
        return len(self.f)

    def batch(self, rows: np.ndarray, batch_size: int, length: int) -> dict:
        f = self.f
        out = {k: np.zeros((batch_size, length), np.int32)
               for k in ("input_ids", "segment_ids", "input_mask")}
        labels = np.full((batch_size, length), features.IGNORE, np.int32)
        for j, r in enumerate(rows):
            a, b = f.offsets[r], f.offsets[r + 1]
            out["input_ids"][j, :b - a] = f.tokens[a:b]
            out["input_mask"][j, :b - a] = 1
            labels[j, :b - a] = f.labels[a:b]
        out["labels"] = labels
        out["weights"] = (labels != features.IGNORE).astype(np.float32)
        return out


@dataclasses.dataclass
class NerInputs:
    spec: NerSpec
    train: Sentences
    dev: dict[str, Sentences]
    test: dict[str, Sentences]
    words: dict[str, list]           # split ('dev', 'test') -> its sentences' words
    gold: dict[str, list]            # split -> gold tag strings per sentence
    buckets: tuple[int, ...]
    train_sentences: int
    subsampled: bool = False
    test_splits: dict = dataclasses.field(default_factory=dict)


def token_loss(out, batch, total_weight):
    """Cross-entropy at the labelled positions, summed and divided by the global batch's count
    of them (`total_weight`: the sum of the per-token weights over every device)."""
    logp = jax.nn.log_softmax(out.astype(jnp.float32), axis=-1)
    labels = jnp.maximum(batch["labels"], 0)
    picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return -jnp.sum(picked * batch["weights"]) / jnp.maximum(total_weight, 1.0)


def _subsample(sentences: list, n: int) -> list:
    rows = np.sort(np.random.default_rng(0).permutation(len(sentences))[:n])
    return [sentences[i] for i in rows]


def _scores(gold, pred, types) -> dict:
    """entity_scores with a fixed key set: per type for every training type (0 when absent),
    so runs and seeds have the same keys."""
    s = metric.entity_scores(gold, pred)
    out = {k: float(s[k]) for k in ("precision", "recall", "f1")}
    out.update({k: int(s[k]) for k in ("gold_entities", "predicted_entities",
                                       "correct_entities")})
    for t in types:
        for k in _SCORE_KEYS:
            out[f"{t}_{k}"] = s.get(f"{t}_{k}", 0)
    return out


class NerKind:
    name = "token"
    tasks = tuple(SPECS)
    family = ""
    model_inputs = MODEL_INPUTS
    metric_scale = 1.0

    def get_spec(self, name: str) -> NerSpec:
        return SPECS[name]

    def validate_config(self, config) -> None:
        transfer.check_head_fields(config)
        if config.features not in FEATURE_CHOICES:
            raise ValueError(f"config.features={config.features!r}: expected one of "
                             f"{FEATURE_CHOICES}")
        try:
            features.check_window_config(max_seq_length=config.max_seq_length,
                                         stride=config.stride or None)
        except ValueError as e:
            raise ValueError(f"config.{e}") from None

    def files_missing(self, spec, data_dir, config) -> list[str]:
        d = pathlib.Path(data_dir) / spec.folder
        return [str(d / " or ".join(names)) for split, names in reader.FILE_NAMES.items()
                if split != "test" and not any((d / n).is_file() for n in names)]

    def load(self, spec, data_dir, config) -> reader.CoNLLData:
        return reader.load(pathlib.Path(data_dir) / spec.folder)

    def prepare(self, config, spec, data: reader.CoNLLData, tok) -> NerInputs:
        spec = dataclasses.replace(spec, tags=data.tags)
        index = {t: i for i, t in enumerate(data.tags)}
        train, dev, cut = data.train.sentences, data.dev.sentences, False
        if 0 < config.max_train_examples < len(train):
            train, cut = _subsample(train, config.max_train_examples), True
        if 0 < config.max_eval_examples < len(dev):
            dev, cut = _subsample(dev, config.max_eval_examples), True
        splits = {"train": train, "dev": dev}
        if data.test is not None:
            splits["test"] = data.test.sentences
        built = {}
        for name, sents in splits.items():
            f = features.build_features(
                [s.words for s in sents], [[index[t] for t in s.tags] for s in sents], tok,
                max_seq_length=config.max_seq_length, stride=config.stride or None)
            bert.check_token_ids(f.tokens, tok.vocab_size, where=f"{spec.name} {name} ids")
            built[name] = Sentences(f)
        buckets = batching.bucket_lengths(config.buckets, config.max_seq_length)
        return NerInputs(
            spec, built["train"], {"": built["dev"]},
            {"test": built["test"]} if "test" in built else {},
            words={k: [list(s.words) for s in v] for k, v in splits.items() if k != "train"},
            gold={k: [list(s.tags) for s in v] for k, v in splits.items() if k != "train"},
            buckets=buckets, train_sentences=len(train), subsampled=cut)

    def build_model(self, config, model_config, spec):
        if config.mode == "feature":
            check_feature_choice(config.features, model_config.num_layers)
            return heads.FeatureTokenTagger(model_config, spec.num_labels, config.features,
                                            config.lstm_hidden, config.model.hidden_dropout_rate)
        if config.mode not in transfer.MODES:
            raise ValueError(f"mode={config.mode!r}: expected one of {transfer.MODES}")
        return heads.BertForTokenClassification(model_config, spec.num_labels, config.head,
                                                config.lstm_hidden)

    def loss_fn(self, spec):
        return token_loss

    def _tags(self, spec, f: features.TokenFeatures, token_ids: np.ndarray) -> list[list[str]]:
        """Per-token tag ids [rows, L] -> each sentence's word tag strings."""
        words = features.word_logits(f, token_ids[..., None])[:, 0].astype(np.int64)
        parts = np.split(words, np.cumsum(f.num_words)[:-1]) if len(f.num_words) else []
        return [[spec.tags[i] for i in p] for p in parts]

    def evaluate(self, spec, inputs: NerInputs, outputs: dict):
        """Dev logits [rows, L, tags] -> (entity scores, the words and tags to write)."""
        pred = self._tags(spec, inputs.dev[""].f, outputs[""].argmax(-1))
        gold = inputs.gold["dev"]
        kept = {"words": inputs.words["dev"], "gold": gold, "pred": pred}
        return _scores(gold, pred, reader.entity_types([spec.tags])), kept

    def write_artifacts(self, run_dir, kept) -> list[str]:
        path = metric.write_predictions(pathlib.Path(run_dir) / "predictions_dev.txt",
                                        kept["words"], kept["gold"], kept["pred"])
        return [path.name]

    def test_predictions(self, spec, outputs: dict) -> dict:
        # Per-token argmax (int8 would do; int32 is what the npz round trip keeps simply).
        return {name: v.argmax(-1).astype(np.int32) for name, v in outputs.items()}

    def test_metrics(self, inputs: NerInputs, preds) -> dict | None:
        """The labelled test split's entity scores from the stored test predictions."""
        if "test" not in inputs.test:
            return None
        spec = inputs.spec
        pred = self._tags(spec, inputs.test["test"].f, np.asarray(preds["test"]))
        return _scores(inputs.gold["test"], pred, reader.entity_types([spec.tags]))

    def write_submission(self, spec, inputs: NerInputs, preds, workdir, write: bool
                         ) -> list[str]:
        if "test" not in inputs.test:
            return []
        path = pathlib.Path(workdir) / spec.name / "predictions_test.txt"
        if write:
            pred = self._tags(inputs.spec, inputs.test["test"].f, np.asarray(preds["test"]))
            metric.write_predictions(path, inputs.words["test"], inputs.gold["test"], pred)
        return [str(path)]

    def summary(self, inputs: NerInputs, data: reader.CoNLLData) -> dict:
        split = {"train": inputs.train.f.split_sentences,
                 "dev": inputs.dev[""].f.split_sentences,
                 **{k: v.f.split_sentences for k, v in inputs.test.items()}}
        return {
            "examples": {"train_sentences": inputs.train_sentences,
                         "train_rows": len(inputs.train),
                         "dev_sentences": len(inputs.gold["dev"]),
                         "dev_rows": len(inputs.dev[""]),
                         **{f"{k}_sentences": len(inputs.gold[k]) for k in inputs.test},
                         **{f"{k}_rows": len(v) for k, v in inputs.test.items()}},
            "split_sentences": split,
            "split_note": "sentences longer than max_seq_length - 2 pieces, cut into "
                          "overlapping windows (each word predicted in one of them)",
            "tags": list(inputs.spec.tags), "scheme": data.scheme,
            "subsampled": inputs.subsampled, "metric_scale": self.metric_scale,
        }


KIND = NerKind()
