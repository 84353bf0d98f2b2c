"""Bidirectional LSTM heads: BiLSTM layers over per-token features, then a linear layer to one
logit per tag (BiLSTMTagger), or each direction's final state as one vector per sequence
(BiLSTMSummary, for sequence classification). The tagger is the BERT paper's feature-based NER
head (sec. 5.3 / Table 7: "a randomly initialized two-layer 768-dimensional BiLSTM before the
classification layer"; 768 units per direction at base size, i.e. the encoder's hidden size,
`lstm_hidden_for`).

Padding. A row is its real tokens then padding (input_mask 1 on a prefix, as every batch of
the fine-tuning pipeline is). Each direction runs over the real tokens only: flax's nn.RNN with
`seq_lengths` reverses each row's first `length` steps for the backward direction, so the
backward LSTM starts at the row's last real token, never at its padding; the outputs at padding
positions are set to zero before the next layer and before the classifier. A row's outputs are
therefore the same whatever its padding holds and however far it was padded.

Summary. BiLSTMSummary's vector is the last layer's forward state at the row's last real token
concatenated with its backward state at the first token: each direction's state after reading
every real token, which is where an LSTM has summarised the whole sequence (the classic BiLSTM
sentence encoding). It does not depend on which encoder position saw what: under a causal
(left-to-right) encoder only the last real token has seen the whole input (hence the linear
head's summary_positions), while here the backward LSTM reads the encoder's outputs from right
to left, so the first token's backward state also covers all of them. Mean-pooling the BiLSTM
outputs over real tokens was the alternative; the final states were kept because they are the
BiLSTM's own sequence summary, not an average that lets every position contribute equally.

Cells are flax's OptimizedLSTMCell (gates i, f, g, o; input kernels without bias, recurrent
kernels with bias; LeCun-normal input and orthogonal recurrent initialisation). Parameters:
layer_N/{forward,backward}/cell/{ii,if,ig,io,hi,hf,hg,ho}, classifier/{kernel,bias} (the summary:
bilstm/layer_N/... and no classifier; its caller adds one).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bertjax.models.dropout import Dropout


def lstm_hidden_for(hidden_size: int, lstm_hidden: int = 0) -> int:
    """Units per direction: `lstm_hidden`, or the encoder's hidden size when 0 (768 at base)."""
    if lstm_hidden < 0:
        raise ValueError(f"lstm_hidden={lstm_hidden}: expected 0 (the encoder's hidden size) "
                         "or a positive number of units per direction")
    return int(lstm_hidden or hidden_size)


class _BiLayer(nn.Module):
    hidden: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x, lengths):
        def rnn(name):
            # parent=None: the cell belongs to its RNN (layer_N/forward/cell/...).
            cell = nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype,
                                        param_dtype=self.param_dtype, parent=None)
            return nn.RNN(cell, name=name)
        return nn.Bidirectional(rnn("forward"), rnn("backward"))(x, seq_lengths=lengths)


class BiLSTM(nn.Module):
    """[batch, length, features] -> [batch, length, 2 * hidden]; zero at padding."""
    hidden: int                     # units per direction
    num_layers: int = 2
    dropout_rate: float = 0.0       # on each layer's input
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, input_mask, deterministic: bool = True):
        keep = (input_mask > 0)[..., None]
        lengths = jnp.sum(input_mask > 0, axis=-1).astype(jnp.int32)
        x = jnp.where(keep, x, 0).astype(self.dtype)
        for i in range(self.num_layers):
            x = Dropout(self.dropout_rate)(x, deterministic=deterministic)
            x = _BiLayer(self.hidden, self.dtype, self.param_dtype, name=f"layer_{i}")(x, lengths)
            x = jnp.where(keep, x, 0)
        return x


class BiLSTMTagger(nn.Module):
    """BiLSTM, dropout, then a dense layer to `num_tags` logits per token: [batch, length,
    num_tags] float32 (zero at padding positions: the loss and decoding read real tokens
    only)."""
    num_tags: int
    hidden: int
    num_layers: int = 2
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    initializer_range: float = 0.02

    @nn.compact
    def __call__(self, x, input_mask, deterministic: bool = True):
        h = BiLSTM(self.hidden, self.num_layers, self.dropout_rate, self.dtype,
                   self.param_dtype, name="bilstm")(x, input_mask, deterministic)
        h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
        logits = nn.Dense(self.num_tags, dtype=self.dtype, param_dtype=self.param_dtype,
                          kernel_init=nn.initializers.truncated_normal(self.initializer_range),
                          name="classifier")(h).astype(jnp.float32)
        return jnp.where((input_mask > 0)[..., None], logits, 0.0)


class BiLSTMSummary(nn.Module):
    """BiLSTM, then [forward state at the last real token, backward state at the first]:
    [batch, 2 * hidden] (the module docstring says why). A row with no real token gives 0."""
    hidden: int
    num_layers: int = 2
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, input_mask, deterministic: bool = True):
        h = BiLSTM(self.hidden, self.num_layers, self.dropout_rate, self.dtype,
                   self.param_dtype, name="bilstm")(x, input_mask, deterministic)
        # Real tokens are a prefix of each row (the module docstring), so the last one is at
        # length - 1; a row of padding reads position 0, which BiLSTM has zeroed.
        last = jnp.maximum(jnp.sum(input_mask > 0, axis=-1) - 1, 0).astype(jnp.int32)
        forward = jnp.take_along_axis(h[..., :self.hidden], last[:, None, None], axis=1)[:, 0]
        backward = h[:, 0, self.hidden:]
        return jnp.concatenate([forward, backward], axis=-1)
