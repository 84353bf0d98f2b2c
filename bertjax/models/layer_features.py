"""Features for a feature-based head from a frozen encoder's layers (BERT paper, Table 7).

`hidden_states` is BertModel's intermediate of that name: [num_layers + 1, batch, length,
hidden], the embedding output first, then the output of every encoder layer. The choices:

  embeddings         the embedding output (Table 7's "Embeddings")
  last               the top layer ("Last Hidden")
  second_to_last     the layer below it ("Second-to-Last Hidden")
  sum_last_four      the sum of the top four layers ("Sum Last Four Hidden")
  concat_last_four   the top four concatenated, lowest first: [.., 4 * hidden]
                     ("Concat Last Four Hidden")
  weighted_sum_all   the ELMo scalar mix gamma * sum_k softmax(s)_k h_k over every encoder
                     layer ("Weighted Sum All 12 Layers": the 12 layers of BERT-base, so the
                     embedding output is not part of it), the only choice with parameters.

"The top layer" is the encoder's output as the fine-tuning model sees it: pass
`sequence_output` (BertModel's first output) and it replaces the last entry of hidden_states.
For a post-LN encoder (BERT) the two are equal; a pre-LN encoder applies one more LayerNorm
after its last layer, which hidden_states does not have.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

FEATURE_CHOICES = ("embeddings", "last", "second_to_last", "sum_last_four",
                   "concat_last_four", "weighted_sum_all")
# The fewest encoder layers each choice needs.
_MIN_LAYERS = {"embeddings": 0, "last": 1, "second_to_last": 2, "sum_last_four": 4,
               "concat_last_four": 4, "weighted_sum_all": 1}


class ScalarMix(nn.Module):
    """gamma * sum_k softmax(s)_k * h_k over hidden_states [K, batch, length, hidden]
    (Peters et al. 2018, eq. 1). s starts at zero (an equal mix), gamma at one."""

    @nn.compact
    def __call__(self, hidden_states):
        k = hidden_states.shape[0]
        s = self.param("scalar_weights", nn.initializers.zeros, (k,), jnp.float32)
        gamma = self.param("gamma", nn.initializers.ones, (), jnp.float32)
        w = jax.nn.softmax(s).astype(hidden_states.dtype)
        return gamma.astype(hidden_states.dtype) * jnp.einsum("k,kbth->bth", w, hidden_states)


def check_feature_choice(choice: str, num_layers: int) -> None:
    """ValueError (naming the field) unless `choice` exists and the encoder has its layers."""
    if choice not in FEATURE_CHOICES:
        raise ValueError(f"features={choice!r}: expected one of {FEATURE_CHOICES}")
    if num_layers < _MIN_LAYERS[choice]:
        raise ValueError(f"features={choice!r} needs at least {_MIN_LAYERS[choice]} encoder "
                         f"layers; the model has {num_layers}")


def feature_size(choice: str, hidden_size: int) -> int:
    return 4 * hidden_size if choice == "concat_last_four" else hidden_size


def _layers(hidden_states, sequence_output):
    if sequence_output is None:
        return hidden_states
    return jnp.concatenate([hidden_states[:-1], sequence_output[None]], axis=0)


def select_features(hidden_states: jax.Array, choice: str,
                    sequence_output: jax.Array | None = None) -> jax.Array:
    """The parameter-free choices (all but weighted_sum_all) -> [batch, length, features]."""
    check_feature_choice(choice, hidden_states.shape[0] - 1)
    hs = _layers(hidden_states, sequence_output)
    if choice == "embeddings":
        return hs[0]
    if choice == "last":
        return hs[-1]
    if choice == "second_to_last":
        return hs[-2]
    if choice == "sum_last_four":
        return jnp.sum(hs[-4:], axis=0)
    if choice == "concat_last_four":
        return jnp.concatenate(list(hs[-4:]), axis=-1)
    raise ValueError(f"features={choice!r} has parameters: use LayerFeatures")


class LayerFeatures(nn.Module):
    """Any of FEATURE_CHOICES as a module (weighted_sum_all owns the mix's parameters,
    `scalar_mix/scalar_weights` and `scalar_mix/gamma`)."""
    choice: str

    @nn.compact
    def __call__(self, hidden_states, sequence_output=None):
        if self.choice == "weighted_sum_all":
            check_feature_choice(self.choice, hidden_states.shape[0] - 1)
            return ScalarMix(name="scalar_mix")(_layers(hidden_states, sequence_output)[1:])
        return select_features(hidden_states, self.choice, sequence_output)
