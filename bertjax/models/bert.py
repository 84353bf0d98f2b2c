"""BERT in Flax Linen: embeddings, encoder, pooler, pretraining and GLUE heads.

Parameter names follow the original BERT checkpoint layout (bert/embeddings/word_embeddings,
bert/encoder/layer_N/attention/self/query, cls/predictions/transform/dense, ...) so that
converting to and from Google/Hugging Face checkpoints is a table of renames and transposes.
Kernels are stored [in, out] as in the TensorFlow checkpoints. The config (BertConfig, the size
table) lives in models/config.py and is re-exported here.
"""
from __future__ import annotations

import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import attention
from bertjax.models.dropout import Dropout
from bertjax.models.config import (  # noqa: F401  (re-exported: bert.BertConfig, ...)
    ACTIVATIONS, DTYPES, POSITION_EMBEDDINGS, SIZES, BertConfig, model_config)


def check_token_ids(ids: np.ndarray, vocab_size: int, where: str = "input_ids") -> None:
    """Host-side check at the data boundary (inside jit an out-of-range id is silently clamped)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        raise ValueError(
            f"{where} holds token ids outside the vocabulary [0, {vocab_size}): e.g. "
            f"{bad[:5].tolist()} ({bad.size} in all). The tokenizer and model.vocab_size disagree.")


def sinusoidal_positions(num_positions: int, dim: int) -> np.ndarray:
    """Vaswani et al. 2017: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same)."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    table = np.zeros((num_positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(pos * inv_freq)
    table[:, 1::2] = np.cos(pos * inv_freq[: dim // 2])
    return table.astype(np.float32)


def position_table(c: BertConfig) -> np.ndarray:
    """The fixed position table a sinusoidal model adds to its embeddings (exported as-is).

    Scaled so its RMS equals the word embeddings' initial std (initializer_range): unscaled
    (RMS 0.71) it is ~35x the word signal at init, and after LayerNorm a token's identity
    is nearly lost (Vaswani et al. instead multiply the embeddings by sqrt(d); this keeps
    the tied MLM output matrix and Hugging Face export unchanged)."""
    scale = c.initializer_range * math.sqrt(2.0)
    return (scale * sinusoidal_positions(c.max_position_embeddings, c.hidden_size)).astype(
        np.float32)


def _dtype(name: str):
    return jnp.dtype(name)


def _dense(c: BertConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=_dtype(c.dtype), param_dtype=_dtype(c.param_dtype),
                    kernel_init=nn.initializers.truncated_normal(c.initializer_range), name=name)


def _layer_norm(c: BertConfig, name: str = "LayerNorm") -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=_dtype(c.dtype),
                        param_dtype=_dtype(c.param_dtype), name=name)


def gelu_erf(x: jax.Array) -> jax.Array:
    """The exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)).

    Same function as jax.nn.gelu(approximate=False), which is written with erfc; on CPU the
    erf form is ~4x faster forward + backward (a [32, 128, 1024] activation: 33 -> 8.5 ms
    measured) and agrees with a float64 reference within 1e-6 over [-12, 12].
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476))


def _activation(c: BertConfig):
    if c.hidden_act == "gelu_tanh":
        return lambda x: nn.gelu(x, approximate=True)
    return gelu_erf


class Embeddings(nn.Module):
    config: BertConfig

    def setup(self):
        c = self.config
        init = nn.initializers.truncated_normal(c.initializer_range)
        embed = lambda n, name: nn.Embed(n, c.hidden_size, dtype=_dtype(c.dtype),  # noqa: E731
                                         param_dtype=_dtype(c.param_dtype),
                                         embedding_init=init, name=name)
        self.word_embeddings = embed(c.vocab_size, "word_embeddings")
        if c.position_embedding == "learned":
            self.position_embeddings = embed(c.max_position_embeddings, "position_embeddings")
        self.token_type_embeddings = embed(c.type_vocab_size, "token_type_embeddings")
        self.LayerNorm = _layer_norm(c)
        self.dropout = Dropout(c.hidden_dropout_rate)

    def __call__(self, input_ids, segment_ids, deterministic: bool, position_ids=None):
        """position_ids [batch, length] (packed rows: 0, 1, ... restarting at every packed
        sequence); None means 0 .. length-1 in every row."""
        c = self.config
        length = input_ids.shape[1]
        if length > c.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds model.max_position_embeddings="
                f"{c.max_position_embeddings}")
        x = self.word_embeddings(input_ids)
        if c.position_embedding == "learned":
            if position_ids is None:
                x = x + self.position_embeddings(jnp.arange(length))[None]
            else:
                x = x + self.position_embeddings(position_ids)
        else:
            table = jnp.asarray(position_table(c)[:length], x.dtype)
            x = x + (table[None] if position_ids is None else jnp.take(table, position_ids, 0))
        x = x + self.token_type_embeddings(segment_ids)
        return self.dropout(self.LayerNorm(x), deterministic=deterministic)

    def word_embedding_table(self) -> jax.Array:
        return self.word_embeddings.embedding


class SelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, sequence_ids=None):
        c = self.config
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, c.num_heads, c.head_dim)  # noqa: E731
        q = split(_dense(c, c.hidden_size, "query")(x))
        k = split(_dense(c, c.hidden_size, "key")(x))
        v = split(_dense(c, c.hidden_size, "value")(x))
        use_dropout = c.attention_dropout_rate > 0 and not deterministic
        ctx = attention.dot_product_attention(
            q, k, v, key_mask, sequence_ids=sequence_ids, causal=c.causal,
            implementation=c.attention_impl,
            dropout_rate=c.attention_dropout_rate, deterministic=deterministic,
            dropout_rng=self.make_rng("dropout") if use_dropout else None)
        return ctx.reshape(b, t, c.hidden_size)


class Attention(nn.Module):
    """attention/self (the heads) and attention/output (projection + residual + LayerNorm)."""
    config: BertConfig

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, sequence_ids=None):
        c = self.config
        out = _Output(c, name="output")
        h = out.norm(x) if c.pre_layer_norm else x
        h = SelfAttention(c, name="self")(h, key_mask, deterministic, sequence_ids)
        return out(h, x, Dropout(c.hidden_dropout_rate), deterministic)


class _Output(nn.Module):
    """dense -> dropout -> residual -> LayerNorm (post-LN); with pre-LN, the norm moves first."""
    config: BertConfig

    def setup(self):
        self.dense = _dense(self.config, self.config.hidden_size, "dense")
        self.LayerNorm = _layer_norm(self.config)

    def norm(self, x):
        return self.LayerNorm(x)

    def __call__(self, h, residual, dropout: Dropout, deterministic: bool):
        h = dropout(self.dense(h), deterministic=deterministic)
        if self.config.pre_layer_norm:
            return residual + h
        return self.LayerNorm(residual + h)


class Layer(nn.Module):
    """One Transformer encoder layer: attention, then the feed-forward block."""
    config: BertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, key_mask, sequence_ids=None):
        c = self.config
        x = Attention(c, name="attention")(x, key_mask, self.deterministic, sequence_ids)
        out = _Output(c, name="output")
        h = out.norm(x) if c.pre_layer_norm else x
        h = _Intermediate(c, name="intermediate")(h)
        return out(h, x, Dropout(c.hidden_dropout_rate), self.deterministic)


class _Intermediate(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h):
        c = self.config
        return _activation(c)(_dense(c, c.intermediate_size, "dense")(h))


def _scan_body(layer, x, key_mask, sequence_ids):
    x = layer(x, key_mask, sequence_ids)
    return x, x


def _layer_class(c: BertConfig):
    return nn.remat(Layer) if c.remat else Layer


class Encoder(nn.Module):
    """N layers. Returns the last hidden state and, stacked, the output of every layer."""
    config: BertConfig

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, sequence_ids=None):
        c = self.config
        if c.scan_layers:
            # Parameters stacked on a leading [num_layers] axis under encoder/layer.
            scan = nn.scan(_scan_body, variable_axes={"params": 0},
                           split_rngs={"params": True, "dropout": True},
                           in_axes=(nn.broadcast, nn.broadcast), length=c.num_layers)
            x, per_layer = scan(_layer_class(c)(c, deterministic, name="layer"), x, key_mask,
                                sequence_ids)
        else:
            outs = []
            for i in range(c.num_layers):
                x = _layer_class(c)(c, deterministic, name=f"layer_{i}")(x, key_mask,
                                                                        sequence_ids)
                outs.append(x)
            per_layer = jnp.stack(outs)
        if c.pre_layer_norm:
            x = _layer_norm(c)(x)
        return x, per_layer


def summary_positions(c: BertConfig, input_mask, cls_positions=None):
    """The position whose output stands for each sequence: [CLS] (position 0, or each packed
    sequence's cls_positions), or, with causal attention, the last real token.

    Under a causal mask [CLS] at the start sees only itself, while the last real token (the
    final [SEP] of BERT's rows) has seen the whole input, so it is the one token that can
    summarise it (GPT's choice, Radford et al. 2018). Returns int32 [batch] or, with
    cls_positions, [batch, max_sequences]."""
    if not c.causal:
        return (jnp.zeros(input_mask.shape[:1], jnp.int32) if cls_positions is None
                else cls_positions.astype(jnp.int32))
    if cls_positions is not None:
        # Packed causal rows would need each sequence's last token; nothing makes them (the
        # left-to-right objective has no NSP, and fine-tuning rows are not packed).
        raise ValueError("causal attention with cls_positions (packed NSP pairs) is not "
                         "supported: set data.nsp=False with model.causal=True")
    # The last position with input_mask set, wherever the padding is (a row of padding: the last).
    real = input_mask[:, ::-1] > 0
    return (input_mask.shape[-1] - 1 - jnp.argmax(real, axis=-1)).astype(jnp.int32)


class Pooler(nn.Module):
    """tanh(dense) of the summary token's output (summary_positions: [CLS], or the last real
    token with causal attention): [batch, hidden], or, for rows packed with several sequences,
    at cls_positions [batch, max_sequences] (each packed sequence's own [CLS])
    -> [batch, max_sequences, hidden]."""
    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output, cls_positions=None, input_mask=None):
        c = self.config
        if c.causal:
            if input_mask is None:
                input_mask = jnp.ones(sequence_output.shape[:2], jnp.int32)
            pos = summary_positions(c, input_mask, cls_positions)
            h = jnp.take_along_axis(sequence_output, pos[:, None, None], axis=1)[:, 0]
        elif cls_positions is None:
            h = sequence_output[:, 0]
        else:
            h = jnp.take_along_axis(sequence_output,
                                    cls_positions[..., None].astype(jnp.int32), axis=1)
        return jnp.tanh(_dense(c, c.hidden_size, "dense")(h))


class BertModel(nn.Module):
    """Embeddings + encoder + pooler. Returns (sequence_output, pooled_output), and with
    return_intermediates=True also {'hidden_states': [num_layers + 1, batch, length, hidden]}
    (the embedding output first), for feature-based transfer and probing.

    Packed rows (several sequences per row) pass `packing`, a dict with position_ids and
    sequence_ids [batch, length] and optionally cls_positions [batch, max_sequences]: positions
    restart per sequence, attention stays inside each sequence, and the pooled output is
    taken at every sequence's [CLS] ([batch, max_sequences, hidden]). Without it the model is
    the unpacked one, unchanged. With config.causal every position attends to itself and what
    is left of it, and the pooled output is the last real token's (summary_positions)."""
    config: BertConfig

    def setup(self):
        self.embeddings = Embeddings(self.config)
        self.encoder = Encoder(self.config)
        self.pooler = Pooler(self.config)

    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True,
                 return_intermediates: bool = False, packing: Mapping | None = None):
        packing = packing or {}
        x = self.embeddings(input_ids, segment_ids, deterministic, packing.get("position_ids"))
        emb = x
        x, per_layer = self.encoder(x, input_mask, deterministic, packing.get("sequence_ids"))
        pooled = self.pooler(x, packing.get("cls_positions"), input_mask)
        if return_intermediates:
            return x, pooled, {"hidden_states": jnp.concatenate([emb[None], per_layer])}
        return x, pooled

    def word_embedding_table(self) -> jax.Array:
        return self.embeddings.word_embedding_table()


class MlmHead(nn.Module):
    """cls/predictions: transform (dense, GELU, LayerNorm), then the tied output embedding.

    Evaluated only at `masked_positions` [batch, max_predictions], never at every token.
    Logits are float32: [batch, max_predictions, vocab]."""
    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output, masked_positions, embedding_table):
        c = self.config
        h = jnp.take_along_axis(sequence_output, masked_positions[..., None].astype(jnp.int32),
                                axis=1)
        h = _Transform(c, name="transform")(h)
        bias = self.param("output_bias", nn.initializers.zeros, (c.vocab_size,),
                          _dtype(c.param_dtype))
        b, p, _ = h.shape
        logits = _tied_logits(h.reshape(b * p, -1), embedding_table.astype(h.dtype), bias)
        return logits.reshape(b, p, -1)


@jax.custom_vjp
def _tied_logits(h, table, bias):
    """float32 logits h @ table^T + bias, [N, H] x [V, H] -> [N, V].

    The custom VJP (below) was added for CPU speed: "~8% faster train step on CPU" (commit
    9622feb). Re-measured on this project's 2-core CPU (shared and ~6x oversubscribed at the
    time), it is not confirmed: the layer alone at the mini shapes ([640, 256] x [30522, 256],
    forward + backward, alternating, min of 15) took 321 ms with it vs 315 ms with autodiff;
    scripts/benchmark.py (mini, batch 32, seq 128, 20 predictions; with/without alternating,
    3 rounds) gave best-of-3 step times of 7.34/7.15/8.36 s with it vs 10.97/7.63/5.12 s
    without, i.e. noise. Kept because removing it changes the pretraining losses in the 7th
    digit (the bias gradient is summed in another order); it should go if a quiet-machine A/B
    shows no gain. Not measured on GPU or TPU."""
    return jnp.dot(h, table.T, preferred_element_type=jnp.float32) + bias.astype(jnp.float32)


def _tied_logits_fwd(h, table, bias):
    return _tied_logits(h, table, bias), (h, table, bias)


def _tied_logits_bwd(res, g):
    # Written out so the [N, V] cotangent is read in its own layout: the table gradient is
    # computed transposed ([H, V], then a transpose of the smaller result) and the bias
    # gradient as a matrix-vector product, not a strided reduction.
    h, table, bias = res
    gc = g.astype(h.dtype)
    dh = jnp.dot(gc, table, preferred_element_type=jnp.float32).astype(h.dtype)
    dtable = jnp.dot(h.T, gc, preferred_element_type=jnp.float32).T.astype(table.dtype)
    dbias = jnp.dot(jnp.ones((g.shape[0],), g.dtype), g).astype(bias.dtype)
    return dh, dtable, dbias


_tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)


class _Transform(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h):
        c = self.config
        return _layer_norm(c)(_activation(c)(_dense(c, c.hidden_size, "dense")(h)))


class PreTrainingHeads(nn.Module):
    """cls/predictions (MLM) and cls/seq_relationship (NSP, 2-way on the pooled output)."""
    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output, pooled_output, masked_positions, embedding_table):
        mlm = MlmHead(self.config, name="predictions")(
            sequence_output, masked_positions, embedding_table)
        nsp = _dense(self.config, 2, "seq_relationship")(pooled_output).astype(jnp.float32)
        return mlm, nsp


class BertForPreTraining(nn.Module):
    """BERT with MLM and NSP heads. Returns (mlm_logits [B, P, V], nsp_logits [B, 2]), float32;
    with `packing` (see BertModel) nsp_logits are [B, max_sequences, 2], one per packed pair."""
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, masked_positions,
                 deterministic: bool = True, packing: Mapping | None = None):
        bert = BertModel(self.config, name="bert")
        seq, pooled = bert(input_ids, segment_ids, input_mask, deterministic, packing=packing)
        return PreTrainingHeads(self.config, name="cls")(
            seq, pooled, masked_positions, bert.word_embedding_table())


class BertForSequenceClassification(nn.Module):
    """GLUE head: dropout + dense on the pooled output ([CLS], or under a causal mask the last
    real token: summary_positions). num_labels=1 is regression (STS-B).

    Returns float32 logits [batch, num_labels] (or [batch] for regression)."""
    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(self, input_ids, segment_ids, input_mask, deterministic: bool = True):
        _, pooled = BertModel(self.config, name="bert")(
            input_ids, segment_ids, input_mask, deterministic)
        pooled = Dropout(self.config.hidden_dropout_rate)(pooled, deterministic=deterministic)
        logits = _dense(self.config, self.num_labels, "classifier")(pooled).astype(jnp.float32)
        return logits[:, 0] if self.num_labels == 1 else logits


def param_count(params) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
