"""Scaled dot-product attention: an einsum reference path and jax.nn.dot_product_attention.

Shapes follow jax.nn.dot_product_attention: q, k, v are [batch, length, heads, head_dim];
`key_mask` is [batch, length] (True/1 = a real token, False/0 = padding). Packed rows (several
sequences in one row, see bertjax/data/pretraining.py) also pass `sequence_ids` [batch, length]
(1, 2, ... per packed sequence, 0 = padding): a token then attends only to keys of its own
sequence, so the attention is block-diagonal and sequences never see each other. `causal=True`
(the left-to-right objective) also hides every key to the right of the query: each position
sees itself and what is left of it (with packing: block-diagonal and causal).

Implementations:
  'einsum' - plain einsums, float32 softmax, attention-probability dropout (BERT's recipe).
  'xla'    - jax.nn.dot_product_attention(implementation='xla').
  'cudnn'  - jax.nn.dot_product_attention(implementation='cudnn'): the fused GPU kernel.
The fused paths have no attention-probability dropout, so they require it to be off.

Packed rows and cuDNN: in jax 0.10.2 the public jax.nn.dot_product_attention(implementation=
'cudnn') describes padding only by per-row lengths (query_seq_lengths/key_value_seq_lengths,
one segment per row) or by a dense mask/bias that it adds to the logits; cuDNN's packed
("segment offsets") layout is reachable only through the private jax._src.cudnn API. A dense
[batch, 1, length, length] mask through the fused kernel is untested here (no GPU), so packed
rows with 'cudnn' are refused with a clear error; use 'xla' (or 'einsum') for packed batches.

The causal mask: 'einsum' builds it into its boolean mask; 'xla' and 'cudnn' pass
jax.nn.dot_product_attention's own is_causal flag (for cuDNN that selects its causal kernel
mask, combined with the per-row lengths: untested here, no GPU; for 'xla' it is added to
the padding mask there).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bertjax.models import dropout

IMPLEMENTATIONS = ("einsum", "xla", "cudnn")


def check_implementation(impl: str, attention_dropout_rate: float) -> None:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"attention_impl={impl!r} is not known; expected one of {IMPLEMENTATIONS}")
    if impl != "einsum" and attention_dropout_rate > 0:
        raise ValueError(
            f"attention_impl={impl!r} has no attention-probability dropout, but "
            f"attention_dropout_rate={attention_dropout_rate}; set "
            "model.attention_dropout_rate=0.0 or use attention_impl='einsum'")


def attention_bias_mask(key_mask: jax.Array, sequence_ids: jax.Array | None = None,
                        causal: bool = False) -> jax.Array:
    """Boolean mask broadcastable to the [batch, heads, queries, keys] logits.

    Without sequence_ids: the [batch, keys] padding mask as [batch, 1, 1, keys]. With them:
    [batch, 1, queries, keys], true where query and key belong to the same packed sequence
    and the key is real (padding has sequence id 0 and attends to nothing real). With causal,
    also only where key <= query ([batch, 1, queries, keys]).
    """
    if sequence_ids is None:
        mask = key_mask.astype(bool)[:, None, None, :]
    else:
        same = sequence_ids[:, :, None] == sequence_ids[:, None, :]
        mask = (same & key_mask.astype(bool)[:, None, :])[:, None]
    if causal:
        length = key_mask.shape[-1]
        mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
    return mask


def check_packing(impl: str) -> None:
    if impl == "cudnn":
        raise ValueError(
            "attention_impl='cudnn' does not take packed rows (sequence_ids): jax 0.10.2's "
            "jax.nn.dot_product_attention(implementation='cudnn') describes padding by one "
            "length per row, not per packed sequence. Set model.attention_impl='xla' with "
            "data.packing, or data.packing='none' (or 'full_sentences', one sequence per row)")


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    key_mask: jax.Array,
    *,
    sequence_ids: jax.Array | None = None,
    causal: bool = False,
    implementation: str = "einsum",
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """Multi-head attention over keys where key_mask is true (and, for packed rows, of the
    query's own sequence; with causal, at or left of the query); returns [batch, length,
    heads, dim]."""
    use_dropout = dropout_rate > 0.0 and not deterministic
    if implementation == "einsum":
        mask = attention_bias_mask(key_mask, sequence_ids, causal)
        return _einsum_attention(q, k, v, mask, dropout_rate if use_dropout else 0.0,
                                 dropout_rng)
    check_implementation(implementation, dropout_rate if use_dropout else 0.0)
    if sequence_ids is not None:
        check_packing(implementation)
    if implementation == "cudnn":
        # BERT batches are right-padded, so lengths describe the mask exactly and let cuDNN
        # skip padded blocks. A fully padded row gets length 1 (its output is never used).
        lengths = jnp.maximum(key_mask.astype(jnp.int32).sum(-1), 1)
        return jax.nn.dot_product_attention(
            q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
            is_causal=causal, implementation="cudnn")
    return jax.nn.dot_product_attention(
        q, k, v, mask=attention_bias_mask(key_mask, sequence_ids), is_causal=causal,
        implementation="xla")


def _einsum_attention(q, k, v, mask, dropout_rate, dropout_rng):
    depth = q.shape[-1]
    q = q / jnp.sqrt(depth).astype(q.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    # where() rather than adding -inf: a fully padded row becomes uniform, never NaN.
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError("attention dropout needs a dropout_rng")
        keep = dropout.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
