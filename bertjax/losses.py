"""Losses and accuracies, all in float32.

Each function returns sums and counts as well as means, so that callers can add them up over
micro-batches, devices and evaluation steps before dividing (a mean of means is wrong when
the number of masked positions differs between batches).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


@jax.custom_vjp
def _weighted_xent(logits: jax.Array, labels: jax.Array, weights: jax.Array):
    """(sum of weights * cross-entropy, sum of weights * [argmax == label]), float32.

    Same values as log_softmax + take_along_axis + argmax, with a hand-written gradient,
    (softmax - onehot) * weight, built in one pass over the logits. For the MLM head's
    [B*P, vocab] logits the autodiff version makes several more full passes (a zero tensor
    for the gather's transpose, the scatter into it, the add), and argmax is a slow
    variadic reduction on CPU. What it buys, on CPU: the mini train step (batch 32, seq 128,
    20 predictions; scripts/benchmark.py) went from ~1.25 to ~1.16 s on this project's 2-core
    CPU when it was added (commit d58468b). Not measured on GPU or TPU; it computes the same
    values there, so it is kept as the one code path.
    """
    return _weighted_xent_fwd(logits, labels, weights)[0]


def _weighted_xent_fwd(logits, labels, weights):
    x = logits.astype(jnp.float32)
    w = weights.astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    top = jnp.max(x, axis=-1)
    lse = top + jnp.log(jnp.sum(jnp.exp(x - top[..., None]), axis=-1))
    label_logit = jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0]
    # argmax == label, ties included (argmax takes the first maximum): the label's logit is
    # the maximum and no earlier class reaches it.
    column = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    top_before = jnp.max(jnp.where(column < labels[..., None], x, -jnp.inf), axis=-1)
    hit = (label_logit >= top) & (top_before < top)
    sums = (jnp.sum((lse - label_logit) * w), jnp.sum(hit * w))
    return sums, (logits, lse, labels, w)   # the logits in their own dtype: no f32 copy kept


def _weighted_xent_bwd(res, g):
    logits, lse, labels, w = res
    x = logits.astype(jnp.float32)
    scale = w * g[0]                      # the accuracy sum has no gradient
    column = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    onehot = (column == labels[..., None]).astype(jnp.float32)
    d = (jnp.exp(x - lse[..., None]) - onehot) * scale[..., None]
    return d.astype(logits.dtype), None, None


_weighted_xent.defvjp(_weighted_xent_fwd, _weighted_xent_bwd)


def _weighted_metrics(prefix: str, logits, labels, weights) -> dict:
    loss_sum, correct = _weighted_xent(logits, labels, weights)
    count = jnp.sum(weights.astype(jnp.float32))
    denom = jnp.maximum(count, 1e-8)
    return {f"{prefix}_loss": loss_sum / denom, f"{prefix}_accuracy": correct / denom,
            f"{prefix}_loss_sum": loss_sum, f"{prefix}_correct": correct,
            f"{prefix}_count": count}


def mlm_metrics(logits: jax.Array, masked_ids: jax.Array, masked_weights: jax.Array) -> dict:
    """Masked-LM cross-entropy and accuracy over predicted positions.

    logits [B, P, V], masked_ids [B, P], masked_weights [B, P] (0 for padding predictions).
    """
    return _weighted_metrics("mlm", logits, masked_ids, masked_weights)


def ltr_metrics(logits: jax.Array, next_ids: jax.Array, weights: jax.Array) -> dict:
    """Left-to-right LM: next-token cross-entropy and accuracy, the mean over positions with
    weight 1 (bertjax/data/ltr.py). logits [B, T, V], next_ids [B, T], weights [B, T]."""
    return _weighted_metrics("ltr", logits, next_ids, weights)


def nsp_metrics(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> dict:
    """Next-sentence prediction cross-entropy and accuracy. logits [B, 2], labels [B]."""
    w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights
    return _weighted_metrics("nsp", logits, labels, w)


def _weighted_mean(per_example, weights, total_weight):
    if weights is None:
        return jnp.mean(per_example)
    w = weights.astype(jnp.float32)
    total = jnp.sum(w) if total_weight is None else total_weight
    return jnp.sum(per_example * w) / jnp.maximum(total, 1.0)


def classification_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None,
                        total_weight: jax.Array | None = None) -> jax.Array:
    """Cross-entropy for GLUE classification tasks: the mean, or with `weights` (0 marks a
    padding row) the weighted mean. `total_weight` replaces the sum of `weights` as the divisor
    when the mean runs over more than this batch (the global batch, when each device sees its
    slice)."""
    return _weighted_mean(_xent(logits, labels), weights, total_weight)


def regression_loss(predictions: jax.Array, targets: jax.Array, weights: jax.Array | None = None,
                    total_weight: jax.Array | None = None) -> jax.Array:
    """Squared error for GLUE regression (STS-B), averaged as classification_loss."""
    diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return _weighted_mean(diff * diff, weights, total_weight)
