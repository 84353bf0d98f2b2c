"""Transfer modes: which model fine-tuning runs and which of its parameters train.

  full     the task kind's model (BertForSequenceClassification: pooled [CLS] -> dropout ->
           dense; BertForSpanExtraction: a start and an end logit per token; with
           `head='bilstm'` a randomly initialised two-layer BiLSTM sits between the encoder
           and that classifier, models/heads.py); everything trains.
  partial  the same model; only the top `trainable_layers` encoder layers, the pooler and the
           classifier train (embeddings and lower layers stay as pretrained).
  feature  the encoder is frozen and run without dropout; an ELMo-style scalar mix
           gamma * sum_k softmax(s)_k h_k of all its hidden states (embedding output included)
           feeds a small classifier (spans: a small per-token MLP to start/end logits). Only
           the mix and that head train.

Parameters are split into a trainable and a frozen part (flat dicts keyed by '/'-joined paths).
The optimizer and the gradient see only the trainable part, so a frozen parameter's gradient is
never computed and its value cannot change: it is passed through the step untouched.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from bertjax.models import bert, heads
from bertjax.models.dropout import Dropout
from bertjax.models.layer_features import ScalarMix

MODES = ("full", "partial", "feature")

# The head fields every task kind's config has (GLUE, own data, SQuAD, CoNLL-2003), with one
# meaning: full/partial fine-tuning puts the linear classifier straight on the encoder
# ('linear', the paper's) or a randomly initialised two-layer BiLSTM first ('bilstm', Table
# 5's "+ BiLSTM"; Table 7's feature-based NER head), `lstm_hidden` units per direction.
HEAD_FIELDS = dict(
    head="linear",              # full/partial: 'linear' | 'bilstm' (Table 5's + BiLSTM)
    lstm_hidden=0,              # bilstm: units per direction; 0 = the encoder's hidden size
)


def check_sequence_head(mode: str, head: str, key_prefix: str = "") -> None:
    """A sequence classifier's head for its transfer mode: a known name, and 'linear' in the
    feature mode (which trains its own classifier). `key_prefix` 'config.' names config keys."""
    if head not in heads.HEADS:
        raise ValueError(f"{key_prefix}head={head!r}: expected one of {heads.HEADS}")
    if mode == "feature" and head != "linear":
        raise ValueError(f"{key_prefix}head={head!r} with {key_prefix}mode='feature': the "
                         "feature mode trains its own classifier on the frozen features; "
                         "expected head='linear'")


def check_head_fields(config) -> None:
    """config.head and config.lstm_hidden (HEAD_FIELDS), one line naming the key if bad."""
    if config.head not in heads.HEADS:
        raise ValueError(f"config.head={config.head!r}: expected one of {heads.HEADS}")
    if not isinstance(config.lstm_hidden, int) or config.lstm_hidden < 0:
        raise ValueError(f"config.lstm_hidden={config.lstm_hidden!r}: expected 0 (the "
                         "encoder's hidden size) or a positive number of units per direction")


class FeatureClassifier(nn.Module):
    """Frozen BERT features -> scalar mix -> [CLS] vector and masked mean over tokens ->
    dense(tanh) -> dropout -> dense. The mean pool gives the head the whole pair, not only the
    [CLS] position, whose mixed lower-layer states carry little about the sentence."""
    config: bert.BertConfig
    num_labels: int
    hidden: int = 256
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        c = self.config
        # Belt and braces: the encoder's parameters are frozen by construction (they are not an
        # argument of the gradient), and no gradient flows into its activations either.
        mixed = _frozen_mix(c, input_ids, segment_ids, input_mask)
        m = input_mask.astype(jnp.float32)[..., None]
        mean = jnp.sum(mixed * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        # The token that stands for the sequence: [CLS], or the last real token under a causal
        # mask (an LTR checkpoint), where [CLS] would see only itself.
        at = bert.summary_positions(c, input_mask)
        summary = jnp.take_along_axis(mixed, at[:, None, None], axis=1)[:, 0]
        x = jnp.concatenate([summary, mean], axis=-1)
        init = nn.initializers.truncated_normal(c.initializer_range)
        x = jnp.tanh(nn.Dense(self.hidden, kernel_init=init, name="dense")(x))
        x = Dropout(self.dropout_rate)(x, deterministic=deterministic)
        logits = nn.Dense(self.num_labels, kernel_init=init, name="classifier")(x)
        return logits[:, 0] if self.num_labels == 1 else logits


def _frozen_mix(c: bert.BertConfig, input_ids, segment_ids, input_mask):
    _, _, inter = bert.BertModel(c, name="bert")(
        input_ids, segment_ids, input_mask, deterministic=True, return_intermediates=True)
    hs = jax.lax.stop_gradient(inter["hidden_states"]).astype(jnp.float32)
    return ScalarMix(name="scalar_mix")(hs)


class FeatureSpanExtractor(nn.Module):
    """Frozen BERT features -> scalar mix -> per token dense(tanh) -> dropout -> start/end."""
    config: bert.BertConfig
    hidden: int = 256
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        mixed = _frozen_mix(self.config, input_ids, segment_ids, input_mask)
        init = nn.initializers.truncated_normal(self.config.initializer_range)
        x = jnp.tanh(nn.Dense(self.hidden, kernel_init=init, name="dense")(mixed))
        x = Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return nn.Dense(2, kernel_init=init, name="span_classifier")(x)


def build_span_model(mode: str, config: bert.BertConfig, *, feature_hidden: int = 256,
                     feature_dropout: float = 0.1, head: str = "linear",
                     lstm_hidden: int = 0) -> nn.Module:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {MODES}")
    if mode == "feature":
        return FeatureSpanExtractor(config, feature_hidden, feature_dropout)
    return heads.BertForSpanExtraction(config, head, lstm_hidden)


def build_model(mode: str, config: bert.BertConfig, num_labels: int, *,
                feature_hidden: int = 256, feature_dropout: float = 0.1, head: str = "linear",
                lstm_hidden: int = 0) -> nn.Module:
    """Sequence classification / regression (GLUE, own data) for the transfer mode and head."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {MODES}")
    check_sequence_head(mode, head)
    if mode == "feature":
        return FeatureClassifier(config, num_labels, feature_hidden, feature_dropout)
    if head == "bilstm":
        return heads.BertForSequenceBiLSTM(config, num_labels, lstm_hidden)
    return bert.BertForSequenceClassification(config, num_labels)


_LAYER = re.compile(r"^bert/encoder/layer_(\d+)/")


def trainable_predicate(mode: str, config: bert.BertConfig,
                        trainable_layers: int = 0) -> Callable[[str], bool]:
    """path ('bert/encoder/layer_3/...') -> whether it trains in `mode`."""
    if mode == "full":
        return lambda path: True
    if mode == "feature":
        return lambda path: not path.startswith("bert/")
    if mode != "partial":
        raise ValueError(f"mode={mode!r}: expected one of {MODES}")
    if config.scan_layers:
        raise ValueError(
            "mode='partial' needs the unrolled layer layout (bert/encoder/layer_N); this model "
            "has scan_layers=True (all layers stacked in one bert/encoder/layer array). Set "
            "--config.model.scan_layers=False: the parameters convert one to one.")
    if not 0 <= trainable_layers <= config.num_layers:
        raise ValueError(f"trainable_layers={trainable_layers}: expected 0..{config.num_layers} "
                         f"(the model has {config.num_layers} layers)")
    lowest = config.num_layers - trainable_layers

    def predicate(path: str) -> bool:
        m = _LAYER.match(path)
        if m:
            return int(m.group(1)) >= lowest
        if path.startswith("bert/embeddings/"):
            return False
        # The pooler, the final LayerNorm of a pre-LN encoder and the classifier sit above
        # every layer, so they train whenever the top does.
        return True
    return predicate


def split_params(params: Mapping, predicate: Callable[[str], bool]
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """-> (trainable, frozen), each a flat {path: array} dict."""
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    trainable = {k: v for k, v in flat.items() if predicate(k)}
    frozen = {k: v for k, v in flat.items() if not predicate(k)}
    return trainable, frozen


def merge_params(trainable: Mapping[str, jax.Array], frozen: Mapping[str, jax.Array]) -> dict:
    return traverse_util.unflatten_dict({**frozen, **trainable}, sep="/")

