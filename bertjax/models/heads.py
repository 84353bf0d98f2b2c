"""Fine-tuning heads beyond sequence classification (which lives beside the encoder in bert.py).

BertForSpanExtraction: SQuAD's head (BERT paper, sec. 4.2): one dense layer maps every token's
final hidden state to a start and an end logit. Returns float32 [batch, length, 2] (start, end);
the loss and the decoding mask out what is not context.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from bertjax.models import bert


class BertForSpanExtraction(nn.Module):
    config: bert.BertConfig

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        seq, _ = bert.BertModel(self.config, name="bert")(
            input_ids, segment_ids, input_mask, deterministic)
        init = nn.initializers.truncated_normal(self.config.initializer_range)
        return nn.Dense(2, kernel_init=init, dtype=seq.dtype, name="span_classifier")(
            seq).astype(jnp.float32)
