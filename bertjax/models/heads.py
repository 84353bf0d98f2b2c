"""Fine-tuning heads beyond the linear sequence classifier (which lives beside the encoder in
bert.py).

BertForSequenceBiLSTM: GLUE's and own data's `head='bilstm'` (Table 5's "+ BiLSTM" for
classification and regression): every token's final hidden state -> a randomly initialised
two-layer BiLSTM -> its summary (the forward state at the last real token and the backward
state at the first; models/bilstm.py says why) -> dropout -> a dense layer to the labels.

BertForSpanExtraction: SQuAD's head (BERT paper, sec. 4.2): one dense layer maps every token's
final hidden state to a start and an end logit. Returns float32 [batch, length, 2] (start, end);
the loss and the decoding mask out what is not context.

BertForTokenClassification: CoNLL-2003's head (sec. 5.3): every token's final hidden state ->
dropout -> a dense layer to one logit per tag (`head='linear'`), or a two-layer BiLSTM and then
the dense layer (`head='bilstm'`, Table 5's "+ BiLSTM" row; models/bilstm.py).

FeatureTokenTagger: Table 7's feature-based NER: the encoder is frozen (run without dropout,
no gradient into it), its chosen layers (models/layer_features.py: embeddings, last, ...,
weighted_sum_all) feed a randomly initialised two-layer BiLSTM and a linear tag classifier.

Token heads return float32 [batch, length, num_tags], zero at padding positions.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models import bert
from bertjax.models.bilstm import BiLSTMSummary, BiLSTMTagger, lstm_hidden_for
from bertjax.models.dropout import Dropout
from bertjax.models.layer_features import LayerFeatures

HEADS = ("linear", "bilstm")   # every task kind's `head` (finetune/transfer.py:HEAD_FIELDS)


class BertForSpanExtraction(nn.Module):
    """SQuAD's head: a start and an end logit per token, [batch, length, 2] float32, from one
    dense layer (`head='linear'`, the paper's), or from a randomly initialised two-layer BiLSTM
    and then the dense layer (`head='bilstm'`, Table 5's "+ BiLSTM" row)."""
    config: bert.BertConfig
    head: str = "linear"
    lstm_hidden: int = 0            # bilstm: units per direction; 0 = the hidden size

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        seq = _encode(self.config, self.head, input_ids, segment_ids, input_mask,
                      deterministic)
        if self.head == "bilstm":
            return _tagger(self.config, 2, self.lstm_hidden, self.config.hidden_dropout_rate,
                           "span_tagger")(seq, input_mask, deterministic)
        init = nn.initializers.truncated_normal(self.config.initializer_range)
        return nn.Dense(2, kernel_init=init, dtype=seq.dtype, name="span_classifier")(
            seq).astype(jnp.float32)


def _encode(c: bert.BertConfig, head: str, input_ids, segment_ids, input_mask, deterministic):
    """The checked head name, then the encoder's final hidden states (params under 'bert')."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}: expected one of {HEADS}")
    seq, _ = bert.BertModel(c, name="bert")(input_ids, segment_ids, input_mask, deterministic)
    return seq


def _tagger(c: bert.BertConfig, num_tags: int, lstm_hidden: int, dropout_rate: float,
            name: str) -> BiLSTMTagger:
    return BiLSTMTagger(num_tags, lstm_hidden_for(c.hidden_size, lstm_hidden),
                        dropout_rate=dropout_rate, dtype=jnp.dtype(c.dtype),
                        initializer_range=c.initializer_range, name=name)


class BertForTokenClassification(nn.Module):
    """Fine-tuned encoder -> a tag logit per token (head 'linear' or 'bilstm')."""
    config: bert.BertConfig
    num_tags: int
    head: str = "linear"
    lstm_hidden: int = 0            # bilstm: units per direction; 0 = the hidden size

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        c = self.config
        seq = _encode(c, self.head, input_ids, segment_ids, input_mask, deterministic)
        if self.head == "bilstm":
            return _tagger(c, self.num_tags, self.lstm_hidden, c.hidden_dropout_rate,
                           "tagger")(seq, input_mask, deterministic)
        seq = Dropout(c.hidden_dropout_rate)(seq, deterministic=deterministic)
        init = nn.initializers.truncated_normal(c.initializer_range)
        logits = nn.Dense(self.num_tags, kernel_init=init, dtype=seq.dtype,
                          name="classifier")(seq).astype(jnp.float32)
        return jnp.where((input_mask > 0)[..., None], logits, 0.0)


class FeatureTokenTagger(nn.Module):
    """Frozen encoder -> `features` (a layer_features choice) -> two-layer BiLSTM -> linear."""
    config: bert.BertConfig
    num_tags: int
    features: str = "concat_last_four"
    lstm_hidden: int = 0
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        seq, _, inter = bert.BertModel(self.config, name="bert")(
            input_ids, segment_ids, input_mask, deterministic=True, return_intermediates=True)
        # The encoder's parameters are frozen by the transfer mode (not a gradient argument);
        # stop_gradient also keeps the backward pass out of its activations.
        hs = jax.lax.stop_gradient(inter["hidden_states"]).astype(jnp.float32)
        x = LayerFeatures(self.features, name="features")(
            hs, jax.lax.stop_gradient(seq).astype(jnp.float32))
        return _tagger(self.config, self.num_tags, self.lstm_hidden, self.dropout_rate,
                       "tagger")(x, input_mask, deterministic)


class BertForSequenceBiLSTM(nn.Module):
    """Fine-tuned encoder -> two-layer BiLSTM -> its summary -> dropout -> dense: float32 logits
    [batch, num_labels], or [batch] for regression (num_labels=1), as
    BertForSequenceClassification. Padding does not change a row's output."""
    config: bert.BertConfig
    num_labels: int
    lstm_hidden: int = 0            # units per direction; 0 = the hidden size

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        c = self.config
        seq = _encode(c, "bilstm", input_ids, segment_ids, input_mask, deterministic)
        h = BiLSTMSummary(lstm_hidden_for(c.hidden_size, self.lstm_hidden),
                          dropout_rate=c.hidden_dropout_rate, dtype=jnp.dtype(c.dtype),
                          name="summary")(seq, input_mask, deterministic)
        h = Dropout(c.hidden_dropout_rate)(h, deterministic=deterministic)
        init = nn.initializers.truncated_normal(c.initializer_range)
        logits = nn.Dense(self.num_labels, kernel_init=init, dtype=h.dtype,
                          name="classifier")(h).astype(jnp.float32)
        return logits[:, 0] if self.num_labels == 1 else logits
